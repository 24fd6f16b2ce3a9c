"""Rollback requests and results: the message schemas other systems publish and read."""

from worker.restore.request import (
    RollbackRequest,
    RollbackResult,
    Strategy,
    decode_request,
    request_key,
)

__all__ = ["RollbackRequest", "RollbackResult", "Strategy", "decode_request", "request_key"]
