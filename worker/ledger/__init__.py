"""The pure ledger layer: rows, hash chain, Merkle tree, checkpoints, mirrors.

Nothing here talks to Kafka, lakeFS or S3 (pure logic is kept away
from IO): every function takes and returns bytes or objects, so the writer
agent, the CLI verifier and the tests share one implementation.

Modules:
    row: the authoritative row schema (docs/spec.md) and its one encoding.
    chain: the ``prev``/``hash`` chain and its verification.
    merkle: RFC 6962 / RFC 9162 tree hashes, inclusion and consistency proofs.
    checkpoint: C2SP signed-note checkpoints over the Merkle root.
    state: the single-writer append state machine.
    mirror: the derived Parquet mirror and YAML sidecars, and their check.

Nothing is re-exported, so that importing the package does not pull in
pyarrow or cryptography for callers that only need rows.
"""

__all__: list[str] = []
