"""A small ROOT/photos table written directly, for the stages after ingest."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from faceatlas import schemas
from faceatlas.partwrite import write_partitioned


def write_photos(root: str | Path, records: Sequence[dict]) -> pa.Table:
    """Write `records` (dicts with any PHOTOS columns; others null) as ROOT/photos."""
    cols = {f.name: [r.get(f.name) for r in records] for f in schemas.PHOTOS}
    table = pa.table(cols, schema=schemas.PHOTOS)
    write_partitioned(table, f"{root}/photos", schemas.PHOTOS_PARTITIONS, "part-test")
    return table
