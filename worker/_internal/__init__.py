"""Clients for external services (Kafka, lakeFS, S3). Internal and unstable.

Each wraps its third-party library so only :mod:`worker.errors` types get out.
"""

__all__: list[str] = []
