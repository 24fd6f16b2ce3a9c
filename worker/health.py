"""The worker's HTTP probes: ``/healthz`` (live), ``/readyz`` (ready), beside ``/metrics``.

Why not ``kfm health`` as the probe: it starts a Python process per probe, opens new
clients each time, and checks the signing key, so a pod whose key is not mounted yet
(or a worker run only for rollbacks) would be restarted for something a restart does not
mend. These answer from the running worker: live while its event loop answers; ready
while every agent runs and Kafka and the bucket answer, through the worker's own clients.
The signing key is not looked at (a missing key is reported by the agent that needs it).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from mode.utils.objects import canonshortname

from worker import metrics
from worker.config import Settings
from worker.errors import Error
from worker.io.runtime import Runtime

__all__ = ["AgentStates", "serve"]

# Each readiness check gets this long; a dependency slower than that counts as not answering.
_CHECK_TIMEOUT_S = 5.0


class _Service(Protocol):
    @property
    def started(self) -> bool: ...
    @property
    def crashed(self) -> bool: ...


class _App(_Service, Protocol):
    agents: Any  # Faust's agent manager: a mapping of name to agent


_AgentBody = Callable[[Any], AsyncIterator[None]]


class AgentStates:
    """Which agents' coroutines have raised since they last started, for ``/readyz``.

    Why kept here: Faust keeps an agent service up and restarts its actors (the
    coroutines) when one raises, so the agent's own state does not tell, and it lists
    the actors only privately (its agents' ``on_error`` hook is taken by the app). So
    each agent body is wrapped (:meth:`watch`) to note the error before Faust sees it,
    and says :meth:`running` once its set-up is done: an agent that failed and started
    again is ready again; one that fails on every start (the ledger writer without its
    signing key) stays not ready.
    """

    def __init__(self) -> None:
        self._failed: dict[str, str] = {}

    def watch(self, fun: _AgentBody) -> _AgentBody:
        """``fun`` as an agent body whose errors are noted under its agent's name (Faust's own naming)."""
        name = canonshortname(fun)

        @functools.wraps(fun)
        async def body(stream: Any) -> AsyncIterator[None]:
            try:
                async for _ in fun(stream):
                    yield None
            except Exception as e:
                self._failed[name] = type(e).__name__
                raise

        return body

    def running(self, name: str) -> None:
        self._failed.pop(name, None)

    def failed(self, name: str) -> bool:
        return name in self._failed


async def _live(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _agent_problems(app: _App, states: AgentStates) -> list[str]:
    """An agent whose coroutine raised (e.g. the ledger writer without its signing key) is not running."""
    problems = ["worker crashed"] if app.crashed else []
    for name, agent in app.agents.items():
        service: _Service = agent
        if service.crashed or states.failed(name):
            problems.append(f"agent {name} crashed")
        elif not service.started:
            problems.append(f"agent {name} not started")
    return problems


async def _check(name: str, probe: Callable[[], Awaitable[None]]) -> str | None:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT_S):
            await probe()
    except TimeoutError:
        return f"{name}: no answer within {_CHECK_TIMEOUT_S:g} s"
    except Error as e:
        return f"{name}: {e.diagnostics()}"
    return None


def _ready(
    app: _App, states: AgentStates, runtime: Callable[[], Awaitable[Runtime]]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def ready(_: web.Request) -> web.Response:
        problems = _agent_problems(app, states)
        try:
            rt = await runtime()
        except Error as e:
            problems.append(f"clients: {e.diagnostics()}")
        else:
            results = await asyncio.gather(_check("kafka", rt.producer.ping), _check("bucket", rt.bucket.ping))
            problems.extend(p for p in results if p is not None)
        if problems:
            return web.json_response({"status": "unavailable", "reasons": problems}, status=503)
        return web.json_response({"status": "ready"})

    return ready


async def serve(
    settings: Settings, app: _App, states: AgentStates, runtime: Callable[[], Awaitable[Runtime]]
) -> web.AppRunner:
    """Start the probes and ``/metrics`` on ``KFM_METRICS_HOST:KFM_WORKER_HTTP_PORT``.

    Raises:
        ConfigError: the port cannot be bound.
    """
    return await metrics.serve(
        settings.metrics_host,
        settings.worker_http_port,
        "KFM_WORKER_HTTP_PORT",
        {"/healthz": _live, "/readyz": _ready(app, states, runtime)},
    )
