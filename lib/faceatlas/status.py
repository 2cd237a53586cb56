"""`faceatlas status`: the state of every table of a data root, and what is stale.

Reads Parquet footers and key columns with pyarrow (no Spark session, so it answers in a
second) and the stages' `_stats/*.json`. For each stage: rows, last run, settings hash,
and what a re-run would do: photos not yet fetched, ok images without a face outcome,
passing faces without a latent for the last generator and settings, and outputs older
than their inputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

STAGES = ("ingest", "fetch", "faces", "project", "aggregate", "render", "site")
TABLES = {"ingest": "photos", "fetch": "images", "faces": "faces", "project": "latents",
          "aggregate": "groups"}  # fmt: skip


@dataclass
class StageState:
    stage: str
    rows: int | None  # of its table; None when it has none yet
    last_run: str | None  # finished_at of the last run
    settings_hash: str | None
    pending: int | None  # rows a re-run would process (None: not applicable)
    stale: str | None  # why a re-run would recompute, or None when up to date


def _dataset(root: Path, name: str) -> ds.Dataset | None:
    path = root / name
    if not path.exists() or not any(path.rglob("*.parquet")):
        return None
    return ds.dataset(str(path), format="parquet", partitioning="hive",
                      exclude_invalid_files=True)  # fmt: skip


def _column(d: ds.Dataset | None, col: str, where=None) -> pa.Array:
    if d is None:
        return pa.array([], pa.int64())
    t = d.to_table(columns=[col], filter=where)
    return pc.unique(t.column(col).combine_chunks())


def _missing(wanted: pa.Array, have: pa.Array) -> int:
    if len(wanted) == 0:
        return 0
    return int(pc.sum(pc.invert(pc.is_in(wanted, have))).as_py() or 0)


def _stats(root: Path, stage: str) -> dict | None:
    path = root / "_stats" / f"{stage}.json"
    return json.loads(path.read_text()) if path.exists() else None


def status(root: str | Path) -> list[StageState]:
    root = Path(root)
    stats = {s: _stats(root, s) for s in STAGES}
    sets = {s: _dataset(root, t) for s, t in TABLES.items()}
    out = []

    def add(stage: str, pending: int | None, stale: str | None) -> None:
        d, st = sets.get(stage), stats.get(stage) or {}
        rows = d.count_rows() if d is not None else None
        if stage == "site":
            rows = 1 if (root / "site" / "index.html").exists() else None
        elif stage == "render":
            pngs = list((root / "render" / "faces").glob("*.png"))
            rows = len(pngs) if (root / "render" / "manifest.json").exists() else None
        out.append(StageState(stage, rows, st.get("finished_at"), st.get("settings_hash"),
                              pending, stale))  # fmt: skip

    add("ingest", None, None if sets["ingest"] is not None else "not run yet")
    photo_ids = _column(sets["ingest"], "photo_id")
    settled = _column(sets["fetch"], "photo_id")
    n = _missing(photo_ids, settled)
    # A fetch may have asked for a sample (--per-country): unfetched photos are only stale
    # when the last run asked for everything.
    sample = (stats["fetch"] or {}).get("settings", {})
    partial = bool(sample.get("per_country") or sample.get("limit") or sample.get("countries"))
    add("fetch", n, None if not n or partial else f"{n} photos not fetched yet")
    ok_ids = _column(sets["fetch"], "photo_id", pc.field("status") == "ok")
    done = _column(_dataset(root, "face_photos"), "photo_id")
    n = _missing(ok_ids, done)
    add("faces", n, f"{n} ok images not processed" if n else None)
    proj = stats["project"] or {}
    if sets["faces"] is not None and proj:
        passing = _column(sets["faces"], "face_id", (pc.field("quality_pass"))
                          & (pc.field("alignment") == proj.get("generator_alignment")))  # fmt: skip
        have = _column(sets["project"], "face_id",
                       (pc.field("generator_hash") == proj.get("generator_hash"))
                       & (pc.field("settings_hash") == proj.get("settings_hash")))  # fmt: skip
        n = _missing(passing, have)
        add("project", n, f"{n} passing faces without a latent" if n else None)
    else:
        add("project", None, "not run yet" if sets["faces"] is not None else None)
    for stage, before in (("aggregate", "project"), ("render", "aggregate"),
                          ("site", "render")):  # fmt: skip
        mine = (stats.get(stage) or {}).get("finished_at")
        if stage == "site":
            index = root / "site" / "index.html"
            mine = index.stat().st_mtime if index.exists() else None
            theirs = root / "render" / "manifest.json"
            theirs = theirs.stat().st_mtime if theirs.exists() else None
        else:
            theirs = (stats.get(before) or {}).get("finished_at")
        if theirs is None:
            add(stage, None, None)
        elif mine is None:
            add(stage, None, "not run yet")
        else:
            add(stage, None, f"older than {before}" if mine < theirs else None)
    return out


def format_status(states: list[StageState]) -> str:
    lines = [f"{'stage':<10} {'rows':>10} {'last run':<26} {'settings':<17} state"]
    for s in states:
        rows = f"{s.rows:,}" if s.rows is not None else "-"
        state = s.stale or ("up to date" if s.rows is not None else "not run")
        lines.append(f"{s.stage:<10} {rows:>10} {s.last_run or '-':<26} "
                     f"{s.settings_hash or '-':<17} {state}")  # fmt: skip
    stale = [s.stage for s in states if s.stale]
    lines.append("would recompute: " + (", ".join(stale) if stale else "nothing"))
    return "\n".join(lines)
