"""Rollback: the request and result messages, and the pure decisions of a rollback.

``kfm rollback`` publishes a :class:`RollbackRequest`; the rollback handler
(``worker/io/rolling_back.py``) reads lakeFS, the bucket and the ledger and
carries out what :mod:`worker.rollback.plan` decides; :mod:`worker.rollback.story`
says what a finished rollback reports. (``kfm restore``, the offline
extraction of a bundle into a directory, is :mod:`worker.bundle.extract`.)
"""

from worker.rollback.request import (
    RollbackRequest,
    RollbackResult,
    Status,
    Strategy,
    decode_request,
    request_key,
)

__all__ = ["RollbackRequest", "RollbackResult", "Status", "Strategy", "decode_request", "request_key"]
