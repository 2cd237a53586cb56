"""The faces stage through Spark (local[2]) over a small images table of package photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import matplotlib.cbook
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import skimage.data
from photos_table import write_photos

from faceatlas import schemas
from faceatlas.partwrite import write_partitioned
from faceatlas.runfiles import data_files
from faceatlas.spark_faces import FacesError, FacesJob, run_faces

pytestmark = [pytest.mark.spark]


def _jpeg(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def _hopper() -> bytes:
    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()


# photo_id -> (country, continent, status, bytes)
IMAGES = {
    1: ("NL", "EU", "ok", _jpeg(skimage.data.astronaut())),
    2: ("US", "NA", "ok", _hopper()),
    3: ("NL", "EU", "ok", _jpeg(np.repeat(skimage.data.camera()[..., None], 3, axis=2))),
    4: ("DE", "EU", "ok", _jpeg(skimage.data.coffee())),
    5: ("DE", "EU", "ok", b"\xff\xd8\xff\xe0 this is not a JPEG"),
    6: ("US", "NA", "http_404", None),
}


def _write_images(root: Path, ids=IMAGES) -> None:
    rows = [{"photo_id": pid, "country": c, "continent": k, "status": s, "image": b,
             "run_id": "20261101T000000-aaaaaa"} for pid, (c, k, s, b) in ids.items()]  # fmt: skip
    table = pa.Table.from_pylist(
        [{f.name: r.get(f.name) for f in schemas.IMAGES} for r in rows], schema=schemas.IMAGES
    )
    write_partitioned(table, f"{root}/images", schemas.IMAGES_PARTITIONS, "part-test")
    write_photos(root, [{"photo_id": pid, "user_id": f"user{pid}@N00", "country": c,
                         "continent": k} for pid, (c, k, _, _) in ids.items()])  # fmt: skip


def _table(root: Path, name: str) -> pa.Table:
    return ds.dataset(str(root / name), format="parquet", partitioning="hive").to_table()


def test_faces_stage_end_to_end_and_rerun(spark, tmp_path):
    _write_images(tmp_path)
    stats = run_faces(spark, str(tmp_path), FacesJob(photos_per_task=2, flush_rows=1))
    assert stats["ok_images"] == 5 and stats["processed"] == 5
    assert stats["photos"] == {"faces": 3, "no_face": 1, "quarantined": 1}
    assert stats["faces"] == 3 and stats["quarantine"] == {"decode_error": 1}
    assert abs(sum(stats["step_share"].values()) - 1) < 0.01

    faces = _table(tmp_path, "faces").to_pandas().set_index("photo_id").sort_index()
    assert list(faces.index) == [1, 2, 3]
    assert list(faces.face_id) == ["1-0", "2-0", "3-0"]
    assert list(faces.user_id) == ["user1@N00", "user2@N00", "user3@N00"]
    assert list(faces.country) == ["NL", "US", "NL"]
    assert faces.loc[1, "gender"] == "female" and faces.loc[2, "age_group"] == "old"
    assert faces.loc[3, "quality_pass"] == False  # noqa: E712 (numpy bool)
    assert all(len(lm) == 10 for lm in faces.landmarks)
    for png in faces.aligned:
        assert cv2.imdecode(np.frombuffer(png, np.uint8), 1).shape == (64, 64, 3)

    outcomes = _table(tmp_path, "face_photos").to_pandas().set_index("photo_id").sort_index()
    assert list(outcomes.index) == [1, 2, 3, 4, 5], "one outcome per ok image, none for 404"
    assert list(outcomes.status) == ["faces", "faces", "faces", "no_face", "quarantined"]
    quarantine = _table(tmp_path, "quarantine/faces").to_pandas()
    assert list(quarantine.photo_id) == [5] and list(quarantine.reason) == ["decode_error"]
    on_disk = json.loads((tmp_path / "_stats" / "faces.json").read_text())
    assert on_disk["run_id"] == stats["run_id"]

    again = run_faces(spark, str(tmp_path), FacesJob())
    assert again["processed"] == 0 and again["already_processed"] == 5
    assert _table(tmp_path, "faces").num_rows == 3
    assert _table(tmp_path, "face_photos").num_rows == 5

    # New images arrive: only they are processed.
    _write_images(tmp_path / "more", {7: ("FR", "EU", "ok", _hopper())})
    for f in (tmp_path / "more" / "images").rglob("*.parquet"):
        dest = tmp_path / "images" / f.relative_to(tmp_path / "more" / "images")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest.with_name("part-new.parquet"))
    third = run_faces(spark, str(tmp_path), FacesJob())
    assert third["processed"] == 1 and third["faces"] == 1
    assert sorted(_table(tmp_path, "faces").column("face_id").to_pylist()) == [
        "1-0", "2-0", "3-0", "7-0"]  # fmt: skip


def test_an_interrupted_runs_leftovers_are_repaired(spark, tmp_path):
    """A run killed after writing faces but before its ledger: the photos are processed
    again, and the faces written twice are kept once."""
    _write_images(tmp_path, {k: IMAGES[k] for k in (1, 2)})
    run_faces(spark, str(tmp_path), FacesJob())
    faces_files, _ = data_files(str(tmp_path / "faces"))
    ledger_files, _ = data_files(str(tmp_path / "face_photos"))
    # Fake the killed run: an older run's copy of the faces files, and no ledger at all.
    for f in faces_files:
        p = Path(f)
        old = p.name.split("-", 3)
        p.rename(p.with_name(f"part-20261101T000000-bbbbbb-{old[3]}"))
    for f in ledger_files:
        Path(f).unlink()
    (tmp_path / "face_photos" / "_clean_runs.json").unlink()
    stats = run_faces(spark, str(tmp_path), FacesJob())
    assert stats["processed"] == 2
    assert stats["duplicates_removed"] == 2
    ids = _table(tmp_path, "faces").column("face_id").to_pylist()
    assert sorted(ids) == ["1-0", "2-0"]
    assert _table(tmp_path, "face_photos").num_rows == 2


def test_limit_and_clear_errors(spark, tmp_path):
    with pytest.raises(FacesError, match="run `faceatlas fetch` first"):
        run_faces(spark, str(tmp_path), FacesJob())
    _write_images(tmp_path, {k: IMAGES[k] for k in (1, 2, 4)})
    first = run_faces(spark, str(tmp_path), FacesJob(limit=2))
    assert first["processed"] == 2
    second = run_faces(spark, str(tmp_path), FacesJob(limit=2))
    assert second["processed"] == 1
