"""What a commit contributes to its bundle: STAC, configs, models (pure logic).

The modules are imported by name (``worker.snapshot.select``, ``.models``,
``.stac``), not through this package: the settings need only the selection
rules, and importing the manifest models here would put pydantic on the
start-up path of every command.
"""
