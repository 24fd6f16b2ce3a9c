"""A stand-in OpenLineage HTTP backend with Marquez's lineage API, for the end-to-end tests.

Why a stand-in: Marquez (the reference backend) cannot be had here. Its server jar is not
served by the package registries this project may use (``io.github.marquezproject:marquez-api``
is refused by Maven Central's mirror at every version), and a Docker image is out of bounds.
So the test of the HTTP transport runs against this server instead, in a process of its own,
over real HTTP, and it holds the worker to what Marquez holds a client to:

- ``POST /api/v1/lineage`` takes one RunEvent as JSON (gzip when ``Content-Encoding: gzip``,
  as the client's ``compression: gzip`` sends it), checks it against the OpenLineage 2-0-2
  JSON schema (vendored in ``tests/data/openlineage/``; facets are checked only for their
  base shape, as Marquez accepts facets it does not know) and answers ``201 Created``; a body
  that is not JSON or not a RunEvent gets ``400``/``422`` with the errors.
- ``GET /api/v1/events/lineage`` lists the events taken, newest first, as Marquez's does
  (``{"events": [...]}``).

Two switches for the tests: ``--api-key K`` refuses (``401``) a request without
``Authorization: Bearer K`` (Marquez leaves authentication to a proxy in front of it; a
backend that wants a key is common and exercises the client's ``auth`` setting), and
``--fail-first N`` answers the first ``N`` posts ``503`` (the client's retries).

Run: ``python -m tests.lineage_backend --port P --store FILE.jsonl``.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.lineage_schema import EVENT, RUN_EVENT

__all__ = ["main"]


def _schema_errors(event: Any) -> list[str]:
    if not isinstance(event, dict):
        return ["the body is not a JSON object"]
    return [e.message for e in EVENT.iter_errors(event)] + [e.message for e in RUN_EVENT.iter_errors(event)]


def app(store: Path, api_key: str | None, fail_first: int) -> web.Application:
    state = {"failures_left": fail_first, "posts": 0}
    taken: list[dict[str, Any]] = []

    def append(event: dict[str, Any]) -> None:
        with store.open("a", encoding="utf-8") as f:
            f.write(json.dumps(event, sort_keys=True) + "\n")

    async def post_lineage(request: web.Request) -> web.Response:
        state["posts"] += 1
        if api_key is not None:
            got = request.headers.get("Authorization", "")
            if not hmac.compare_digest(got.encode(), f"Bearer {api_key}".encode()):
                return web.json_response({"code": 401, "message": "unauthorized"}, status=401)
        if state["failures_left"] > 0:
            state["failures_left"] -= 1
            return web.json_response({"code": 503, "message": "unavailable (test)"}, status=503)
        body = await request.read()  # aiohttp undoes a Content-Encoding: gzip
        try:
            event = json.loads(body)
        except ValueError as e:
            return web.json_response({"code": 400, "message": f"not JSON: {e}"}, status=400)
        errors = _schema_errors(event)
        if errors:
            return web.json_response({"code": 422, "errors": errors}, status=422)
        taken.append(event)
        await asyncio.to_thread(append, event)
        return web.Response(status=201)

    async def list_events(request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "100"))
        return web.json_response({"events": taken[::-1][:limit], "totalCount": len(taken)})

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(state)

    application = web.Application(client_max_size=16 << 20)
    application.router.add_post("/api/v1/lineage", post_lineage)
    application.router.add_get("/api/v1/events/lineage", list_events)
    application.router.add_get("/test/stats", stats)
    return application


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument(
        "--store",
        type=Path,
        required=True,
        help="JSONL file the events taken are also appended to (for a person to look at)",
    )
    p.add_argument("--api-key", help="refuse requests without 'Authorization: Bearer KEY'")
    p.add_argument("--fail-first", type=int, default=0, help="answer the first N posts 503")
    args = p.parse_args()
    web.run_app(
        app(args.store, args.api_key, args.fail_first), host="127.0.0.1", port=args.port, print=None, access_log=None
    )


if __name__ == "__main__":
    main()
