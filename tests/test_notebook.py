"""notebooks/explore.ipynb: checked in clean, and run end to end on data roots.

The notebook runs under nbclient on the "python3" kernel (ipykernel's own spec, started with
this interpreter), with FACEATLAS_ROOT pointing at the root under test. It prints a few facts
(`latents: N`, `totals: ...`, `render: ...`) that are compared here with counts taken
straight from the tables with pyarrow.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

import nbformat
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore.ipynb"
SECTIONS = range(1, 8)
FIGURE_SECTIONS = (4, 5, 6, 7)  # sample faces, attributes, latent map, rendered faces
SAMPLE_PER_COUNTRY = 6  # the notebook's PER_COUNTRY


def _execute(root: Path, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    monkeypatch.setenv("FACEATLAS_ROOT", str(root))  # the kernel inherits the environment
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=300,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})  # fmt: skip
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]  # fmt: skip
    assert not errors, "\n".join(f"{e.ename}: {e.evalue}" for e in errors)
    return nb


def _sections(nb: nbformat.NotebookNode) -> dict[int, list]:
    """Code cells' outputs by the number of the `## N.` header above them (0: none)."""
    section, out = 0, defaultdict(list)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.match(r"##\s+(\d+)\.", cell.source)
            section = int(m.group(1)) if m else section
        elif cell.cell_type == "code":
            out[section].extend(cell.outputs)
    return out


def _text(outputs: list) -> str:
    parts = []
    for o in outputs:
        if o.output_type == "stream":
            parts.append(o.text)
        elif "text/plain" in o.get("data", {}):
            parts.append(o.data["text/plain"])
    return "\n".join(parts)


def _pngs(outputs: list) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs)


def _number(pattern: str, text: str) -> int:
    m = re.search(pattern, text, re.MULTILINE)
    assert m, f"{pattern!r} not in:\n{text}"
    return int(m.group(1).replace(",", ""))


def _table(root: Path, name: str) -> ds.Dataset:
    return ds.dataset(root / name, format="parquet", partitioning="hive")


def _rows(root: Path, name: str, where: pc.Expression | None = None) -> int:
    return _table(root, name).count_rows(filter=where)


def test_checked_in_notebook_is_clean():
    raw = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert raw["nbformat"] == 4
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [], cell.source[:80]
        assert cell.execution_count is None, cell.source[:80]
        assert "execution" not in cell.metadata, cell.source[:80]  # nbclient's timings
    headers = [m.group(1) for c in nb.cells if c.cell_type == "markdown"
               for m in [re.match(r"##\s+(\d+)\.", c.source)] if m]  # fmt: skip
    assert [int(h) for h in headers] == list(SECTIONS)


@pytest.mark.slow
@pytest.mark.spark
def test_notebook_on_the_small_world(small_world, monkeypatch):
    root, _ = small_world
    sections = _sections(_execute(root, monkeypatch))
    text = {s: _text(sections[s]) for s in SECTIONS}

    for name in ("photos", "images", "faces", "face_photos", "latents", "groups"):
        assert _number(rf"^\s*{name}\s+([\d,]+)$", text[1]) == _rows(root, name)

    photos = _table(root, "photos").to_table(columns=["country"])
    countries = sorted(set(photos.column("country").to_pylist()))
    assert len(countries) == 3
    for country in countries:
        assert re.search(rf"^{country}\s", text[2], re.MULTILINE), country
    totals = re.search(r"totals: photos ([\d,]+), images ok ([\d,]+), faces ([\d,]+), "
                       r"faces passing ([\d,]+)", text[2])  # fmt: skip
    assert totals, text[2]
    assert [int(g.replace(",", "")) for g in totals.groups()] == [
        _rows(root, "photos"),
        _rows(root, "images", pc.field("status") == "ok"),
        _rows(root, "faces"),
        _rows(root, "faces", pc.field("quality_pass")),
    ]

    status = _table(root, "images").to_table(columns=["status"]).column("status")
    for s in pc.value_counts(status).to_pylist():
        if s["values"] != "ok":
            assert re.search(rf"fetch \(not ok\)\s+{s['values']}\s+{s['counts']}$", text[3],
                             re.MULTILINE), text[3]  # fmt: skip

    per_country = _table(root, "faces").to_table(columns=["country"]).column("country")
    counts = {c["values"]: c["counts"] for c in pc.value_counts(per_country).to_pylist()}
    shown = sum(min(n, SAMPLE_PER_COUNTRY) for n in counts.values())
    assert f"sample faces: {len(counts)} countries, {shown} faces" in text[4]
    assert _number(r"attributes of ([\d,]+) faces", text[5]) == _rows(
        root, "faces", pc.field("quality_pass")
    )

    assert _number(r"^latents: (\d+)$", text[6]) == _rows(root, "latents")
    ratios = re.search(r"^explained variance ratio: (.+)$", text[6], re.MULTILINE)
    assert ratios, text[6]
    values = [float(v) for v in re.findall(r"PC\d+ ([\d.]+)", ratios.group(1))]
    assert len(values) >= 2
    assert values == sorted(values, reverse=True)
    assert 0 < sum(values) <= 1 + 1e-6

    groups = json.loads((root / "render" / "manifest.json").read_text())["groups"]
    assert _number(r"render: (\d+) groups", text[7]) == len(groups)
    assert _number(r"groups, (\d+) rendered", text[7]) == sum(g["rendered"] for g in groups)

    for s in FIGURE_SECTIONS:
        assert _pngs(sections[s]) >= 1, f"section {s} drew no figure"


@pytest.mark.slow
@pytest.mark.spark
def test_notebook_on_a_partly_processed_root(small_world, tmp_path, monkeypatch):
    """Only ingest has run: the later sections say what is missing and draw nothing."""
    root = tmp_path / "root"
    shutil.copytree(small_world[0] / "photos", root / "photos")
    (root / "_stats").mkdir()
    shutil.copy(small_world[0] / "_stats" / "ingest.json", root / "_stats")
    sections = _sections(_execute(root, monkeypatch))
    text = {s: _text(sections[s]) for s in SECTIONS}

    assert re.search(r"^\s*images\s+-$", text[1], re.MULTILINE), text[1]
    n = _rows(root, "photos")
    assert f"totals: photos {n:,}, images ok 0, faces 0, faces passing 0" in text[2]
    assert "no images yet" in text[3]
    assert "no faces yet" in text[4]
    assert "no faces yet" in text[5]
    assert "no latents yet" in text[6]
    assert "no render yet" in text[7]
    assert sum(_pngs(sections[s]) for s in SECTIONS) == 0


@pytest.mark.slow
def test_notebook_on_an_empty_root(tmp_path, monkeypatch):
    sections = _sections(_execute(tmp_path, monkeypatch))
    text = {s: _text(sections[s]) for s in SECTIONS}
    assert "no _stats yet" in text[1]
    assert "no photos yet" in text[2]
    assert "nothing quarantined or lost" in text[3]
    assert "no latents yet" in text[6]
    assert "no render yet" in text[7]
    assert sum(_pngs(sections[s]) for s in SECTIONS) == 0
