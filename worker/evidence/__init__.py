"""Evidence of one bundling run: OpenLineage events, OTel span tree, energy/carbon.

Run evidence differs between two runs over the same commit (ids, timings), so
it is not inside the deterministic ``.tar.zst``; it is stored beside it and
bound to it by digest in the signed attestation's ``byproducts``.
"""

from worker.evidence.energy import EnergyModel, EnergyReport, measure
from worker.evidence.lineage import bundle_events, run_event
from worker.evidence.otlp import spans_to_otlp_json

__all__ = ["EnergyModel", "EnergyReport", "bundle_events", "measure", "run_event", "spans_to_otlp_json"]
