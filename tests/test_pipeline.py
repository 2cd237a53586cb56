"""A small end-to-end run: the demo world through every stage, then again (no new work)."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import SMALL_WORLD

from faceatlas.cli import main
from faceatlas.status import status

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def test_demo_world_end_to_end_and_rerun(small_world, tmp_path, capsys):
    first, out = small_world
    root = tmp_path / "root"  # a copy: this test re-runs and takes files away
    shutil.copytree(first, root)
    shutil.copytree(f"{first}-world", f"{root}-world")
    args = ["demo", "--data", str(root), *SMALL_WORLD, "--master", "local[2]"]
    assert "retrieval accuracy" in out and "site/index.html" in out

    demo = json.loads((root / "_stats" / "demo.json").read_text())
    assert demo["countries"] == 3 and 0 <= demo["retrieval_accuracy"] <= 1
    manifest = json.loads((root / "render" / "manifest.json").read_text())
    by_code = {g["code"]: g for g in manifest["groups"]}
    assert by_code["WORLDAA"]["rendered"] and (root / "render" / "faces" / "WORLDAA.png").exists()
    assert {"NLAA", "DEAA", "FRAA"} <= set(by_code)
    world = by_code["WORLDAA"]
    assert world["n_faces"] >= world["n_users"] >= 2
    assert all("page_url" in s for s in world["sources"])  # attribution from the photos table
    assert (root / "site" / "index.html").exists() and (root / "site" / "data.js").exists()
    # The hostile title reaches the site's data only as an escaped string.
    data = (root / "site" / "data.js").read_text()
    assert "<img" not in data and "\\u003cimg src=x onerror=alert(1)\\u003e" in data

    stats = {s: json.loads((root / "_stats" / f"{s}.json").read_text())
             for s in ("ingest", "fetch", "faces", "project")}  # fmt: skip
    assert stats["fetch"]["counts"]["decode_error"] == 3  # one broken photo per country
    assert stats["faces"]["photos"]["no_face"] >= 3

    assert main(args) == 0  # again: every stage resumes and finds nothing new
    again = {s: json.loads((root / "_stats" / f"{s}.json").read_text())
             for s in ("fetch", "faces", "project")}  # fmt: skip
    assert again["fetch"]["fetched"] == 0
    assert again["faces"]["processed"] == 0
    assert again["project"]["projected"] == 0

    states = {s.stage: s for s in status(root)}
    assert all(s.stale is None for s in states.values()), states
    assert states["faces"].pending == 0 and states["render"].rows >= 1
    # Take away what the faces stage recorded for one country, and the site: both are stale.
    ledger = next((root / "face_photos").rglob("*.parquet"))
    ledger.unlink()
    (root / "site" / "index.html").unlink()
    states = {s.stage: s for s in status(root)}
    assert states["faces"].pending > 0 and "not processed" in states["faces"].stale
    assert states["site"].stale == "not run yet"
    assert main(["status", "--data", str(root)]) == 0
    assert "would recompute: faces, site" in capsys.readouterr().out
