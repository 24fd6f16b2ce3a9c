"""Fixtures shared by end-to-end modules that define their own ``env`` fixture."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from worker._internal.lakefs import LakeFS
from worker.config import Settings, load_settings


@pytest.fixture(scope="module")
def settings(env: dict[str, str]) -> Settings:
    return load_settings({**os.environ, **env})


@pytest.fixture
async def lakefs(settings: Settings) -> AsyncIterator[LakeFS]:
    client = LakeFS(settings)
    yield client
    client.close()
