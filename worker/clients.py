"""The external-service clients other packages may use: Kafka's producer and lakeFS.

Why a public module: the implementations live in :mod:`worker._internal`,
private to this package and free to change. The webhook receiver (``hooks``)
publishes events and installs lakeFS actions with the same clients; it
imports them from here, so it depends on a promise (these names, raising only
:mod:`worker.errors` types) rather than on another package's internals.
"""

from __future__ import annotations

from worker._internal.kafka import Producer
from worker._internal.lakefs import LakeFS

__all__ = ["LakeFS", "Producer"]
