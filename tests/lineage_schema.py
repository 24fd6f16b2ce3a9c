"""Validate OpenLineage events against the vendored OpenLineage 2-0-2 JSON schema, offline.

Every facet is also validated against the schema its ``_schemaURL`` points to,
which must be one of the schemas this module loads: a facet added without a
schema the tests know fails here instead of reaching a lineage backend.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable

ROOT = Path(__file__).resolve().parent.parent
OPENLINEAGE = json.loads((ROOT / "tests/data/openlineage/OpenLineage.json").read_text())
DIGEST_FACET = json.loads((ROOT / "docs/schemas/KfmDigestDatasetFacet.json").read_text())
REGISTRY: Registry = Registry().with_resources(
    (schema["$id"], Resource.from_contents(schema)) for schema in (OPENLINEAGE, DIGEST_FACET)
)
FORMATS = Draft202012Validator.FORMAT_CHECKER
EVENT = Draft202012Validator(OPENLINEAGE, registry=REGISTRY, format_checker=FORMATS)
RUN_EVENT = Draft202012Validator(
    {"$ref": f"{OPENLINEAGE['$id']}#/$defs/RunEvent"}, registry=REGISTRY, format_checker=FORMATS
)


def _facets(event: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield from event.get("run", {}).get("facets", {}).items()
    yield from event.get("job", {}).get("facets", {}).items()
    for ds in [*event.get("inputs", []), *event.get("outputs", [])]:
        for group in ("facets", "inputFacets", "outputFacets"):
            yield from ds.get(group, {}).items()


def errors(event: dict[str, Any]) -> list[str]:
    """Every way ``event`` breaks the schema, a RunEvent's, or its facets' own schemas."""
    found = [e.message for e in EVENT.iter_errors(event)]
    found += [e.message for e in RUN_EVENT.iter_errors(event)]
    for key, facet in _facets(event):
        url = facet.get("_schemaURL", "") if isinstance(facet, dict) else ""
        try:
            schema = REGISTRY.resolver().lookup(url).contents
        except Unresolvable:
            found.append(f"facet {key}: _schemaURL {url!r} is not a schema the tests know")
            continue
        validator = Draft202012Validator(schema, registry=REGISTRY, format_checker=FORMATS)
        found += [f"facet {key}: {e.message}" for e in validator.iter_errors(facet)]
    return found
