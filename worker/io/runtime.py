"""Long-lived clients an agent needs, opened once per worker process.

Why one object: agents are plain async functions; passing them one runtime
keeps them testable without Faust and closes every client in one place.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from worker._internal.kafka import Producer
from worker._internal.lakefs import LakeFS
from worker._internal.s3 import Bucket, open_bucket
from worker.config import Settings
from worker.io.lineage import LineageEmitter, open_lineage_emitter

__all__ = ["Runtime"]


@dataclass
class Runtime:
    settings: Settings
    lakefs: LakeFS
    producer: Producer
    bucket: Bucket
    work_dir: Path
    # The openlineage-python client's emitter when the client is configured, else None
    # (runs' events then go to the kfm.openlineage topic): worker/io/lineage.py.
    lineage: LineageEmitter | None = None
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack, repr=False)

    @classmethod
    async def open(cls, settings: Settings) -> Runtime:
        stack = AsyncExitStack()
        lineage = open_lineage_emitter()
        if lineage is not None:
            stack.push_async_callback(lineage.aclose)
        bucket = await stack.enter_async_context(open_bucket(settings))
        producer = Producer(
            settings.kafka,
            timeout_s=settings.kafka_timeout_s,
            max_message_bytes=settings.limits.max_message_bytes,
        )
        stack.push_async_callback(producer.aclose)
        lakefs = LakeFS(settings)
        stack.callback(lakefs.close)
        work = Path(settings.work_dir or Path.cwd() / ".stack" / "work")
        await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
        return cls(settings, lakefs, producer, bucket, work, lineage, stack)

    async def aclose(self) -> None:
        await self._stack.aclose()

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
