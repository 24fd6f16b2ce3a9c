"""The I/O around the pure packages: what the Faust agents (``worker/app.py``) and the CLI call.

Each module here reads and writes (Kafka, S3, lakeFS) and leaves every decision
to a pure package beside it: ``bundling``/``staging`` around ``worker.bundle``
and ``worker.snapshot``; ``ledger_writer``, ``ledger_reader`` and
``ledger_audit`` around ``worker.ledger``; ``rolling_back`` around
``worker.rollback``; ``reconciling``/``markers`` around ``worker.coverage``;
``verifying`` is the one "verify a bundle" path of the CLI and the rollback
agent. The Faust agents themselves live in ``worker/app.py``.
"""
