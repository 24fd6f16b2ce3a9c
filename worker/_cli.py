"""The ``kfm`` command: one entry point, nested verbs, ``KFM_*`` defaults.

Errors of this project are caught once here and printed as one clear line
(``-v`` shows the traceback); anything else is a bug and propagates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from worker.config import Settings, load_settings
from worker.errors import Error
from worker.logs import configure_logging

__all__ = ["main"]

Handler = Callable[[argparse.Namespace, Settings], int]


def _run(coro: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coro)


# --- hooks --------------------------------------------------------------------
def _hooks_serve(args: argparse.Namespace, settings: Settings) -> int:
    from hooks.server import run
    from worker.tracing import init_tracing

    init_tracing("kfm-hooks")
    run(settings)
    return 0


def _hooks_install(args: argparse.Namespace, settings: Settings) -> int:
    from hooks.install import install_action
    from worker._internal.lakefs import LakeFS

    url = args.url or f"http://{settings.hooks_host}:{settings.hooks_port}/lakefs/webhook"

    async def go() -> int:
        lakefs = LakeFS(settings)
        try:
            commit = await install_action(lakefs, args.repo, args.branch, url)
        finally:
            lakefs.close()
        print(json.dumps({"repository": args.repo, "branch": args.branch, "commit": commit, "url": url}))
        return 0

    return _run(go())


def _topics_ensure(args: argparse.Namespace, settings: Settings) -> int:
    from worker.topics import ensure_all_topics, topic_specs

    _run_none(ensure_all_topics(settings))
    for spec in topic_specs(settings):
        print(f"{spec.name}\tpartitions={spec.partitions}")
    return 0


def _run_none(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kfm",
        description="KFM rollback artifact registry: signed, verifiable rollbacks of lakeFS commits.",
        epilog="Every option defaults to a KFM_* environment variable; see docs/configuration.md.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks on errors")
    p.add_argument("--kafka-bootstrap", help="Kafka bootstrap servers (KFM_KAFKA_BOOTSTRAP)")
    p.add_argument("--lakefs-endpoint", help="lakeFS URL (KFM_LAKEFS_ENDPOINT)")
    p.add_argument("--s3-endpoint", help="registry S3 endpoint (KFM_S3_ENDPOINT)")
    p.add_argument("--s3-bucket", help="registry bucket (KFM_S3_BUCKET)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    hooks = sub.add_parser("hooks", help="the lakeFS webhook receiver").add_subparsers(
        dest="hooks_command", required=True, metavar="HOOKS_COMMAND"
    )
    serve = hooks.add_parser("serve", help="receive lakeFS webhooks and publish commit events to Kafka")
    serve.add_argument("--host", dest="hooks_host", help="listen address (KFM_HOOKS_HOST)")
    serve.add_argument("--port", dest="hooks_port", type=int, help="listen port (KFM_HOOKS_PORT)")
    serve.set_defaults(handler=_hooks_serve)
    install = hooks.add_parser("install", help="commit the registry's action to a lakeFS branch")
    install.add_argument("--repo", required=True, help="lakeFS repository")
    install.add_argument("--branch", required=True, help="branch to watch")
    install.add_argument("--url", help="webhook URL lakeFS should call (default: this host's hooks server)")
    install.set_defaults(handler=_hooks_install)

    topics = sub.add_parser("topics", help="Kafka topics").add_subparsers(
        dest="topics_command", required=True, metavar="TOPICS_COMMAND"
    )
    topics.add_parser("ensure", help="create the registry's topics; check the writer topic has one partition").set_defaults(
        handler=_topics_ensure
    )
    return p


_OVERRIDES = ("kafka_bootstrap", "lakefs_endpoint", "s3_endpoint", "s3_bucket", "hooks_host", "hooks_port")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(overrides={k: getattr(args, k, None) for k in _OVERRIDES})
        configure_logging(settings.log_level)
        handler: Handler = args.handler
        return handler(args, settings)
    except Error as e:
        if args.verbose:
            raise
        print(f"kfm: error: {e.diagnostics()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
