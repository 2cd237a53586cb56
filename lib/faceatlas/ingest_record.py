"""The record of metadata files already ingested, for incremental (scheduled) runs.

`ingest --incremental` lists its input folders, ingests only the files the record does not
hold and appends their rows to ROOT/photos/ and ROOT/quarantine/ingest/. The record
(ROOT/_state/ingest_files.json) is written twice per run: first with the batch marked
pending, before any file is moved into the tables, then with the batch's files added once
every file is in place. A run that dies in between leaves the pending mark; the next run
deletes the files of that batch (their names carry the batch id) and ingests its input
files again, so no photo is ever in the tables twice and none is lost.

A file is known by its path; its size and modification time tell whether it changed after
it was ingested. A changed file is not ingested again (its old rows would stay beside the
new ones): it is reported, and a full run (without --incremental) rebuilds the tables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

RECORD_VERSION = 1


class RecordError(ValueError):
    """The record cannot be used for this run (another version, other settings)."""


@dataclass(frozen=True)
class InputFile:
    path: str
    size: int
    mtime: float  # seconds since the epoch, as the filesystem reports it


@dataclass(frozen=True)
class Plan:
    new: list[InputFile]  # not in the record: ingest them
    done: list[InputFile]  # in the record, unchanged
    changed: list[InputFile]  # in the record with another size or time: reported, skipped


def empty_record() -> dict[str, Any]:
    return {"version": RECORD_VERSION, "settings_hash": None, "files": {}, "batches": [],
            "pending": None}  # fmt: skip


def parse(text: str | None) -> dict[str, Any]:
    """The record from its JSON text (None: no record yet)."""
    if text is None or not text.strip():
        return empty_record()
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise RecordError(f"the ingest record is not JSON ({e}): run a full ingest") from None
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
        raise RecordError("the ingest record has an unknown version: run a full ingest")
    return record


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=1, sort_keys=True) + "\n"


def plan(listing: list[InputFile], record: dict[str, Any], settings_hash: str) -> Plan:
    """Which of the listed files are new, already ingested, or changed since."""
    if record["files"] and record["settings_hash"] != settings_hash:
        raise RecordError(
            f"the files already ingested were filtered with other settings "
            f"({record['settings_hash']}, now {settings_hash}): mixing them would give a table "
            "of two filters; run a full ingest (without --incremental) to rebuild it"
        )
    new, done, changed = [], [], []
    for f in listing:
        seen = record["files"].get(f.path)
        if seen is None:
            new.append(f)
        elif seen["size"] == f.size and abs(seen["mtime"] - f.mtime) < 1e-3:
            done.append(f)
        else:
            changed.append(f)
    return Plan(new, done, changed)


def with_pending(record: dict[str, Any], batch: str, files: list[InputFile]) -> dict[str, Any]:
    """The record saying: batch `batch` is being moved into the tables."""
    return {**record, "pending": {"batch": batch, "files": [f.path for f in files]}}


def committed(
    record: dict[str, Any],
    batch: str,
    files: list[InputFile],
    settings_hash: str,
    counts: dict[str, int],
    replace: bool,
) -> dict[str, Any]:
    """The record once batch `batch` is in the tables; `replace`: a full run's, which
    rebuilt the tables from these files alone."""
    base = empty_record() if replace else record
    when = datetime.now(UTC).isoformat(timespec="seconds")
    known = dict(base["files"])
    for f in files:
        known[f.path] = {"size": f.size, "mtime": f.mtime, "batch": batch}
    entry = {"batch": batch, "finished_at": when, "files": len(files), "full": replace, **counts}
    return {**base, "settings_hash": settings_hash, "files": known,
            "batches": [*base["batches"], entry], "pending": None}  # fmt: skip


def pending_batch(record: dict[str, Any]) -> str | None:
    return (record.get("pending") or {}).get("batch")
