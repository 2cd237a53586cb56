"""The bundled generator's landmark template, and the demo's photos drawn from it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from faceatlas import demo, template_measure
from faceatlas.align import TEMPLATE_DIR, load_template
from faceatlas.detect import DetectorOptions, make_detector, select_faces


@pytest.mark.slow
def test_stored_dcgan64_template_is_reproduced_by_a_fresh_measurement():
    stored = load_template("dcgan64")
    assert stored.size == 64
    fresh = template_measure.measure("dcgan64", samples=100, seed=1)
    assert fresh["detected"] >= 85  # the measurement found 382 of 400
    # Another seed, a quarter of the samples: the mean moves by well under a pixel.
    assert np.abs(np.array(fresh["points"]) - stored.points).max() < 1.0
    meta = json.loads((TEMPLATE_DIR / "dcgan64.json").read_text())
    assert "measure-template dcgan64" in meta["source"]


def test_demo_photos_show_one_face_drawn_around_their_countrys_centre():
    z_nl = [demo.photo_latent(i, "NL") for i in (1, 2, 3)]
    assert np.array_equal(z_nl[0], demo.photo_latent(1, "NL"))  # reproducible
    centre = demo.country_centre("NL")
    other = demo.country_centre("JP")
    for z in z_nl:
        assert np.linalg.norm(z - centre) < np.linalg.norm(z - other)
    faces = demo._faces_for(z_nl)
    assert faces.shape == (3, 64, 64, 3) and faces.dtype == np.uint8
    detector = make_detector(DetectorOptions())
    found = 0
    for pid, face in zip((1, 2, 3), faces, strict=True):
        photo = np.asarray(demo.draw_photo(pid, "NL", face))
        kept, _ = select_faces(detector.detect(photo), min_confidence=0.9)
        found += len(kept)
        assert len(kept) <= 1
    assert found >= 2
    blank = np.asarray(demo.draw_photo(4, "NL", None))
    assert select_faces(detector.detect(blank), min_confidence=0.9)[0] == []
