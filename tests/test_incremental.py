"""Scheduled reprocessing: `faceatlas run --incremental` over an input folder that grows.

The small demo world's metadata is cut in two files: every country but one, then that one.
The second run must ingest only the new file, fetch, search and project only the new
photos and faces, change only the groups the new faces belong to (the new country, its
continent, the world), and re-render only those; a third run finds nothing to do."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from faceatlas.cli import main
from faceatlas.demo import serve_folder

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _stats(root: Path, stage: str) -> dict:
    return json.loads((root / "_stats" / f"{stage}.json").read_text())


def _groups(root: Path) -> dict[str, dict]:
    rows = pq.read_table(root / "groups").to_pylist()
    return {f"{r['level']}/{r['region']}/{r['gender']}/{r['age_group']}": r for r in rows}


def _pngs(root: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (root / "render" / "faces").glob("*.png")}


def test_a_growing_input_folder_is_processed_incrementally(small_world, tmp_path, capsys):
    local, _ = small_world
    world = Path(f"{local}-world")
    photos = ds.dataset(local / "photos", format="parquet", partitioning="hive").to_table(
        columns=["photo_id", "country", "continent"]
    )
    country_of = dict(zip(photos["photo_id"].to_pylist(), photos["country"].to_pylist(),
                          strict=True))  # fmt: skip
    late = sorted(set(country_of.values()))[-1]  # the country whose metadata comes later
    late_continent = photos.filter(ds.field("country") == late)["continent"][0].as_py()
    lines = (world / "metadata.txt").read_bytes().splitlines(keepends=True)
    is_late = [country_of.get(int(line.split(b"\t", 1)[0] or 0)) == late for line in lines]
    inbox, root = tmp_path / "inbox", tmp_path / "root"
    inbox.mkdir()
    (inbox / "batch-1.txt").write_bytes(b"".join(x for x, k in zip(lines, is_late, strict=True)
                                                 if not k))  # fmt: skip

    with serve_folder(world / "photos") as port:
        args = ["run", str(inbox), "--incremental", "--data", str(root),
                "--allow-host", f"127.0.0.1:{port}",
                "--url-template", f"http://127.0.0.1:{port}/{{photo_id}}.jpg",
                "--steps", "20", "--min-count", "2", "--master", "local[2]"]  # fmt: skip
        assert main(args) == 0
        assert "new work: ingest 1 files" in capsys.readouterr().out
        first = {s: _stats(root, s) for s in ("ingest", "fetch", "faces", "project")}
        groups1, pngs1 = _groups(root), _pngs(root)
        assert not any(g.startswith(f"country/{late}/") for g in groups1)

        (inbox / "batch-2.txt").write_bytes(
            b"".join(x for x, k in zip(lines, is_late, strict=True) if k)
        )
        assert main(args) == 0
        assert "new work: ingest 1 files" in capsys.readouterr().out
        second = {s: _stats(root, s) for s in ("ingest", "fetch", "faces", "project")}
        groups2, pngs2 = _groups(root), _pngs(root)

        assert second["ingest"]["files_ingested"] == 1 and second["ingest"]["files_already"] == 1
        n_late = sum(is_late)
        assert second["ingest"]["lines_read"] == n_late
        assert second["fetch"]["fetched"] == second["ingest"]["photos_kept"] > 0
        assert second["faces"]["processed"] <= second["fetch"]["fetched"]
        assert second["faces"]["processed"] > 0
        images = ds.dataset(root / "images", format="parquet", partitioning="hive").to_table()
        assert images.num_rows == first["fetch"]["fetched"] + second["fetch"]["fetched"]
        faces = ds.dataset(root / "faces", format="parquet", partitioning="hive").to_table()
        late_faces = faces.filter(ds.field("country") == late).num_rows
        assert second["project"]["projected"] <= late_faces

        affected = (f"country/{late}/", f"continent/{late_continent}/", "world/")
        for key, g in groups2.items():
            before = groups1.get(key)
            if before is None:
                assert key.startswith(affected), key  # only the new faces make new groups
            elif key.startswith(affected[0]) or (
                key.startswith(affected[1:]) and g["n_faces"] != before["n_faces"]
            ):
                assert g["input_hash"] != before["input_hash"], key
            elif not key.startswith(affected):
                assert g["input_hash"] == before["input_hash"], key  # other countries kept
                assert g["run_id"] == before["run_id"]
        agg = _stats(root, "aggregate")
        assert 0 < agg["groups_changed"] < agg["groups"] and agg["groups_unchanged"] > 0
        render = _stats(root, "render")
        assert render["kept"] > 0 and render["rendered"] > 0
        unchanged = [n for n in pngs1 if not n.startswith((late, f"C{late_continent}", "WORLD"))]
        assert unchanged and all(pngs2[n] == pngs1[n] for n in unchanged)  # not re-rendered

        assert main(args) == 0
        out = capsys.readouterr().out
        assert "nothing new: every stage found its work already done" in out
        assert _stats(root, "ingest")["nothing_new"]
        assert _pngs(root) == pngs2 and _groups(root).keys() == groups2.keys()

        # `faceatlas ingest` and `aggregate` on their own say so too.
        assert main(["ingest", str(inbox), "--incremental", "--data", str(root),
                     "--master", "local[2]"]) == 0  # fmt: skip
        assert "ingest: nothing new: all 2 input files" in capsys.readouterr().out
        assert main(["aggregate", "--data", str(root), "--min-count", "2",
                     "--master", "local[2]"]) == 0  # fmt: skip
        assert "aggregate: nothing new" in capsys.readouterr().out
