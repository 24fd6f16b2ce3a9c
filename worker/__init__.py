"""KFM rollback registry worker: events → bundles → ledger rows → restores.

Kept import-light: the Faust app lives in :mod:`worker.app` so that the hooks
service and the CLI can use the domain types without starting Faust.
"""

__all__: list[str] = []
