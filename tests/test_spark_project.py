"""The projection stage through Spark over a small faces table made by the generator."""

from __future__ import annotations

import cv2
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import torch

from faceatlas import schemas
from faceatlas.gan import load
from faceatlas.partwrite import write_partitioned
from faceatlas.project import ProjectOptions
from faceatlas.spark_project import ProjectError, ProjectJob, run_project

pytestmark = [pytest.mark.spark]


def _write_faces(root, n: int = 6, alignment: str = "template:dcgan64") -> None:
    G = load("dcgan64")
    with torch.no_grad():
        img = G(torch.randn(n, 100, generator=torch.Generator().manual_seed(0)))
    faces = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    rows = []
    for i, face in enumerate(faces):
        png = cv2.imencode(".png", cv2.cvtColor(face, cv2.COLOR_RGB2BGR))[1].tobytes()
        rows.append({"face_id": f"{i + 1}-0", "photo_id": i + 1, "user_id": f"u{i}",
                     "country": "NL" if i % 2 else "JP", "continent": "EU" if i % 2 else "AS",
                     "gender": "female", "age_group": "young", "skin_tone": "light",
                     "quality_pass": i != n - 1,  # the last one failed a check
                     "aligned": png, "aligned_size": 64, "alignment": alignment})  # fmt: skip
    table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in schemas.FACES} for r in rows],
                                 schema=schemas.FACES)  # fmt: skip
    write_partitioned(table, f"{root}/faces", schemas.FACES_PARTITIONS, "part-test")


def _latents(root) -> pa.Table:
    return ds.dataset(str(root / "latents"), format="parquet", partitioning="hive").to_table()


def test_project_resumes_per_generator_and_settings(spark, tmp_path):
    _write_faces(tmp_path)
    job = ProjectJob(options=ProjectOptions(steps=30, batch=2), faces_per_task=3)
    stats = run_project(spark, str(tmp_path), job)
    assert stats["faces_passed"] == 5 and stats["projected"] == 5
    assert stats["space"] == "z" and stats["loss_kinds"] == {"pixel": 5}
    t = _latents(tmp_path).to_pandas().sort_values("face_id")
    assert list(t.face_id) == ["1-0", "2-0", "3-0", "4-0", "5-0"]
    assert all(len(v) == 100 for v in t.latent) and all(list(s) == [1, 100] for s in t.latent_shape)
    assert set(t.generator_hash) == {load("dcgan64").identity}
    assert set(t.country) == {"NL", "JP"} and (t.psnr > 12).all()

    again = run_project(spark, str(tmp_path), job)
    assert again["projected"] == 0
    assert _latents(tmp_path).num_rows == 5

    other = ProjectJob(options=ProjectOptions(steps=20, batch=4))  # other settings: new rows
    third = run_project(spark, str(tmp_path), other)
    assert third["projected"] == 5
    t = _latents(tmp_path).to_pandas()
    assert len(t) == 10 and t.groupby(["face_id", "settings_hash"]).size().max() == 1


def test_faces_aligned_for_another_generator_are_a_clear_error(spark, tmp_path):
    with pytest.raises(ProjectError, match="run `faceatlas faces` first"):
        run_project(spark, str(tmp_path), ProjectJob())
    _write_faces(tmp_path, n=3, alignment="ffhq")
    with pytest.raises(ProjectError, match="--align"):
        run_project(spark, str(tmp_path), ProjectJob(options=ProjectOptions(steps=2)))
    with pytest.raises(ProjectError, match="no generator"):
        run_project(spark, str(tmp_path), ProjectJob(generator=str(tmp_path / "nope.pkl")))
