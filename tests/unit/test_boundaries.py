"""What may cross the worker._internal boundary, checked on the source."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import worker._internal.kafka
import worker._internal.lakefs
import worker._internal.s3

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", [worker._internal.kafka, worker._internal.lakefs, worker._internal.s3])
def test_internal_clients_define_no_error_classes(module: object) -> None:
    # Callers catch worker.errors types only; an error class here would leak the boundary.
    defined = [c for _, c in inspect.getmembers(module, inspect.isclass)
               if issubclass(c, BaseException) and c.__module__ == getattr(module, "__name__", "")]
    assert defined == []


@pytest.mark.parametrize("path", sorted((ROOT / "hooks").glob("*.py")), ids=lambda p: p.name)
def test_the_receiver_does_not_reach_into_worker_internals(path: Path) -> None:
    assert not any(m.startswith("worker._internal") for m in _imports(path))


@pytest.mark.parametrize("path", ["worker/_cli.py", "worker/_cli_coverage.py", "worker/io/ledger_audit.py"])
def test_cli_and_auditor_use_no_kafka_or_lakefs_sdk_directly(path: str) -> None:
    assert not {m.split(".")[0] for m in _imports(ROOT / path)} & {"aiokafka", "lakefs_sdk"}
