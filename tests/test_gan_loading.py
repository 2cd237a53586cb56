"""pickle_safe and ownformat: official-format pickles built here without NVIDIA's code.

The fake official pickle mirrors what stylegan2-ada-pytorch's training loop writes: every
network layer reduces to `torch_utils.persistence._reconstruct_persistent_obj(meta)` with
meta = {type, version, module_src, class_name, state=__dict__}, `_init_kwargs` holds
`dnnlib.util.EasyDict`s, layers keep NumPy scalars, and the weights are the official-name
tensors of tests/data/stylegan2_tiny_reference.npz. The fake `torch_utils` and `dnnlib`
modules exist only while pickling; `module_src` writes a marker file if anything ever
executes it.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.abc
import json
import os
import pickle
import re
import subprocess
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from faceatlas.gan import ownformat
from faceatlas.gan.base import content_hash
from faceatlas.gan.pickle_safe import (
    ALLOWED_GLOBALS,
    KNOWN_CLASSES,
    UnsafePickleError,
    load_official,
    read_official,
)

FIXTURE = Path(__file__).parent / "data" / "stylegan2_tiny_reference.npz"
FAKE_MODULES = ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")
BUFFER_NAMES = {"resample_filter", "noise_const", "w_avg"}

G_CLASSES = [
    (r"", "Generator"),
    (r"synthesis", "SynthesisNetwork"),
    (r"synthesis\.b\d+", "SynthesisBlock"),
    (r"synthesis\.b\d+\.conv[01]", "SynthesisLayer"),
    (r"synthesis\.b\d+\.torgb", "ToRGBLayer"),
    (r".*\.affine", "FullyConnectedLayer"),
    (r"mapping", "MappingNetwork"),
    (r"mapping\.fc\d+", "FullyConnectedLayer"),
]
D_CLASSES = [
    (r"", "Discriminator"),
    (r"b4", "DiscriminatorEpilogue"),
    (r"b\d+", "DiscriminatorBlock"),
    (r"b\d+\.(fromrgb|conv0|conv1|skip|conv)", "Conv2dLayer"),
    (r"b4\.(fc|out)", "FullyConnectedLayer"),
    (r"b4\.mbstd", "MinibatchStdLayer"),
]


# -- stand-ins for the official helpers, used only while pickling ----------------------------
def _reconstruct_persistent_obj(meta: dict) -> None:
    raise AssertionError("the loader must never call the real reconstruct function")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


class EasyDict(dict):
    """What dnnlib.util.EasyDict is: a dict with attribute access."""

    def __getattr__(self, name: str) -> object:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


EasyDict.__module__ = "dnnlib.util"


@contextlib.contextmanager
def _official_modules() -> Iterator[None]:
    torch_utils = types.ModuleType("torch_utils")
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    torch_utils.persistence = persistence
    dnnlib = types.ModuleType("dnnlib")
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = EasyDict
    dnnlib.util = util
    assert not any(name in sys.modules for name in FAKE_MODULES)
    fakes = (torch_utils, persistence, dnnlib, util)
    sys.modules.update(dict(zip(FAKE_MODULES, fakes, strict=True)))
    try:
        yield
    finally:
        for name in FAKE_MODULES:
            sys.modules.pop(name, None)


class _ImportWatcher(importlib.abc.MetaPathFinder):
    """Records every attempt to import a module that a pickle names."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] in ("torch_utils", "dnnlib") or name.startswith("_imported_"):
            self.seen.append(name)
        return None


@contextlib.contextmanager
def _no_pickle_imports() -> Iterator[None]:
    watcher = _ImportWatcher()
    before = set(sys.modules)
    sys.meta_path.insert(0, watcher)
    try:
        yield
    finally:
        sys.meta_path.remove(watcher)
    new = {m for m in set(sys.modules) - before if m.split(".")[0] in ("torch_utils", "dnnlib")}
    assert watcher.seen == [] and not new, (watcher.seen, new)
    assert not any(m.startswith("_imported_module_") for m in sys.modules)


class Persistent(torch.nn.Module):
    """A layer that pickles the way persistence.persistent_class makes official layers do."""

    def __init__(self, class_name: str, module_src: str, **init_kwargs: object) -> None:
        super().__init__()
        self._meta_class_name = class_name
        self._meta_module_src = module_src
        self._init_args = ()
        self._init_kwargs = copy.deepcopy(init_kwargs)

    def __reduce__(self) -> tuple:
        state = dict(super().__reduce__()[2])
        class_name = state.pop("_meta_class_name")
        module_src = state.pop("_meta_module_src")
        meta = dict(type="class", version=6, module_src=module_src, class_name=class_name,
                    state=state)  # fmt: skip
        return (_reconstruct_persistent_obj, (meta,))


class Reduce:
    """Pickles as a call of `fn(*args)`: how a malicious pickle runs code."""

    def __init__(self, fn: object, *args: object) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple:
        return (self.fn, self.args)


def _module_src(marker: Path) -> str:
    return (
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('module_src was executed')\n"
        "class Generator:\n    pass\n"
    )


def _class_for(path: str, table: list[tuple[str, str]]) -> str:
    matches = [cls for pattern, cls in table if re.fullmatch(pattern, path)]
    assert matches, path
    return matches[-1]


def _build(flat: dict[str, np.ndarray], table: list, src: str, init_kwargs: dict) -> Persistent:
    root = Persistent(_class_for("", table), src, **init_kwargs)
    for full, arr in flat.items():
        *parts, leaf = full.split(".")
        mod = root
        for i in range(len(parts)):
            sub = mod._modules.get(parts[i])
            if sub is None:
                cls = _class_for(".".join(parts[: i + 1]), table)
                sub = Persistent(cls, src)
                if cls in ("FullyConnectedLayer", "Conv2dLayer"):
                    sub.weight_gain = np.float64(1 / np.sqrt(64))  # as the official layers keep
                    sub.activation = "lrelu"
                if cls == "SynthesisLayer":
                    sub.act_gain = np.sqrt(2)
                    sub.padding = np.int64(1)
                    sub.conv_clamp = 256
                mod.add_module(parts[i], sub)
            mod = sub
        t = torch.from_numpy(np.array(arr))
        if leaf in BUFFER_NAMES:
            mod.register_buffer(leaf, t)
        else:
            mod.register_parameter(leaf, torch.nn.Parameter(t))
    return root.requires_grad_(False)


def _fixture() -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    with np.load(FIXTURE) as data:
        meta = json.loads(bytes(data["meta_json"]))
        g = {k[2:]: data[k] for k in data.files if k.startswith("G.")}
        d = {k[2:]: data[k] for k in data.files if k.startswith("D.")}
    return meta, g, d


def _easy(kwargs: dict) -> EasyDict:
    return EasyDict({k: _easy(v) if isinstance(v, dict) else v for k, v in kwargs.items()})


def _official_snapshot(marker: Path) -> dict:
    meta, g, d = _fixture()
    src = _module_src(marker)
    g_ema = _build(g, G_CLASSES, src, _easy(meta["G_init_kwargs"]))
    g_ema.synthesis.block_resolutions = [4, 8, 16, 32]
    g_ema.synthesis.channels_dict = {4: 64, 8: 64, 16: 64, 32: 64}
    g_train = _build({k: v + 1 for k, v in g.items()}, G_CLASSES, src,
                     _easy(meta["G_init_kwargs"]))  # fmt: skip
    disc = _build(d, D_CLASSES, src, _easy(meta["D_init_kwargs"]))
    for res in (8, 16, 32):  # a 1x1 skip is built with bias=False: `bias` stays None
        getattr(disc, f"b{res}").skip.register_parameter("bias", None)
    disc.b4.add_module("mbstd", Persistent("MinibatchStdLayer", src, group_size=4))
    disc.b4.mbstd.group_size = 4
    # Not saved by state_dict(), so the loader must leave it out too.
    disc.b4.register_buffer("scratch", torch.ones(3), persistent=False)
    augment = Persistent("AugmentPipe", src, xflip=1, rotate90=1)
    augment.register_buffer("p", torch.zeros([]))
    augment.imgfilter_bands = [1, 1, 1, 1]
    return {
        "G": g_train,
        "D": disc,
        "G_ema": g_ema,
        "augment_pipe": augment,
        "training_set_kwargs": {"class_name": "training.dataset.ImageFolderDataset",
                                "path": "ffhq.zip", "use_labels": False, "max_size": 70000,
                                "xflip": True, "resolution": 32},
    }  # fmt: skip


def _dump(obj: object, path: Path, protocol: int = 3) -> Path:
    with _official_modules(), open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


@pytest.fixture(scope="module")
def official_pkl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Protocol 3: the default of the Python 3.7 that wrote NVIDIA's pickles."""
    root = tmp_path_factory.mktemp("official")
    return _dump(_official_snapshot(root / "MARKER"), root / "network-snapshot.pkl")


def _assert_state_equal(got: dict[str, torch.Tensor], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)  # state_dict() order: parameters, buffers, submodules
    for name, arr in want.items():
        assert got[name].dtype == torch.float32, name
        assert tuple(got[name].shape) == arr.shape, name
        assert np.array_equal(got[name].numpy(), arr), name


# -- pickle_safe: the good path ---------------------------------------------------------------
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_load_official_returns_fixture_kwargs_and_tensors(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "MARKER"
    pkl = _dump(_official_snapshot(marker), tmp_path / "net.pkl", protocol)
    meta, g, d = _fixture()
    with _no_pickle_imports():
        kind, init_kwargs, state = load_official(pkl)
        nets = read_official(pkl)
    assert kind == "stylegan2"
    assert init_kwargs == meta["G_init_kwargs"]
    assert type(init_kwargs["mapping_kwargs"]) is dict  # EasyDict stand-in became a dict
    _assert_state_equal(state, g)
    assert set(nets) == {"G", "G_ema", "D"}
    assert nets["D"].kind == "stylegan2-discriminator"
    assert nets["D"].init_kwargs == meta["D_init_kwargs"]
    _assert_state_equal(nets["D"].state_dict, d)  # no `scratch`, no None biases
    _assert_state_equal(nets["G"].state_dict, {k: v + 1 for k, v in g.items()})
    assert not marker.exists()


def test_numpy_scalars_from_numpy1_and_numpy2(tmp_path: Path) -> None:
    # NumPy 1 wrote numpy.core.multiarray.scalar, NumPy 2 writes numpy._core...; protocol 2
    # spells globals as text, so the old name can be put in place byte for byte.
    snap = _official_snapshot(tmp_path / "MARKER")
    values = {"f8": np.float64(0.1), "f4": np.float32(2.5), "i8": np.int64(-3),
              "b": np.bool_(True), "be": np.array([1.5], dtype=">f4")[0]}  # fmt: skip
    snap["G_ema"]._init_kwargs["extra"] = EasyDict(values)
    snap["G_ema"].synthesis.shape_hint = torch.Size([1, 2])
    _dump(snap, tmp_path / "new.pkl", protocol=2)
    old = (
        (tmp_path / "new.pkl")
        .read_bytes()
        .replace(b"numpy._core.multiarray\nscalar\n", b"numpy.core.multiarray\nscalar\n")
    )
    assert b"numpy.core.multiarray" in old
    (tmp_path / "old.pkl").write_bytes(old)
    for name in ("new.pkl", "old.pkl"):
        extra = load_official(tmp_path / name).init_kwargs["extra"]
        assert extra == {"f8": 0.1, "f4": 2.5, "i8": -3, "b": True, "be": 1.5}
        assert [type(v) for v in extra.values()] == [float, float, int, bool, float]


def test_which_selects_the_network(official_pkl: Path) -> None:
    _, g, d = _fixture()
    kind, _, state = load_official(official_pkl, which="D")
    assert kind == "stylegan2-discriminator"
    _assert_state_equal(state, d)
    _, _, g_train = load_official(official_pkl, which="G")
    assert torch.equal(g_train["mapping.w_avg"], torch.from_numpy(g["mapping.w_avg"]) + 1)
    with pytest.raises(ValueError, match="which must be one of"):
        load_official(official_pkl, which="augment_pipe")


def test_strict_load_into_stylegan2(official_pkl: Path) -> None:
    stylegan2 = pytest.importorskip("faceatlas.gan.stylegan2")
    nets = read_official(official_pkl)
    kind, init_kwargs, state = nets["G_ema"]
    assert kind == stylegan2.StyleGAN2Generator.kind
    gen = stylegan2.StyleGAN2Generator(**init_kwargs)
    gen.load_state_dict(state, strict=True)
    assert all(torch.equal(gen.state_dict()[k], v) for k, v in state.items())
    disc = stylegan2.StyleGAN2Discriminator(**nets["D"].init_kwargs)
    disc.load_state_dict(nets["D"].state_dict, strict=True)


def test_missing_network_and_wrong_top_level(tmp_path: Path) -> None:
    snap = _official_snapshot(tmp_path / "MARKER")
    only_g = _dump({"G_ema": snap["G_ema"]}, tmp_path / "g.pkl")
    with pytest.raises(ValueError, match=r"no 'D' \(networks present: \['G_ema'\]\)"):
        load_official(only_g, which="D")
    assert set(read_official(only_g)) == {"G_ema"}
    as_list = _dump([snap["G_ema"]], tmp_path / "list.pkl")
    with pytest.raises(ValueError, match="not the dict of networks"):
        load_official(as_list)
    swapped = _dump({"G_ema": snap["D"]}, tmp_path / "swapped.pkl")
    with pytest.raises(ValueError, match="is a Discriminator, expected a Generator"):
        load_official(swapped)
    with pytest.raises(ValueError, match="holds none of"):
        read_official(_dump({"training_set_kwargs": {}}, tmp_path / "empty.pkl"))


def test_not_a_pickle(tmp_path: Path, official_pkl: Path) -> None:
    cases = {
        "empty.pkl": b"",
        "text.pkl": b"hello, I am not a network\n",
        "proto0.pkl": pickle.dumps({"a": 1}, protocol=0),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=r"empty|not a network pickle"):
            load_official(tmp_path / name)
    torch.save({"w": torch.ones(2)}, tmp_path / "zip.pkl")
    with pytest.raises(ValueError, match="zip archive"):
        load_official(tmp_path / "zip.pkl")
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(official_pkl.read_bytes()[:50_000])
    with pytest.raises(ValueError, match="not a readable network pickle"):
        load_official(truncated)
    with pytest.raises(FileNotFoundError):
        load_official(tmp_path / "absent.pkl")


# -- pickle_safe: refusals --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "refused"),
    [
        (lambda m: Reduce(os.system, f"touch {m}"), f"{os.system.__module__}.system"),
        (lambda m: Reduce(eval, f"open({str(m)!r}, 'w')"), "builtins.eval"),
        (lambda m: Reduce(subprocess.Popen, ["touch", str(m)]), "subprocess.Popen"),
        (lambda m: Reduce(torch.load, str(m)), "torch.serialization.load"),
        (lambda m: Reduce(getattr, "text", "upper"), "builtins.getattr"),
    ],
)
def test_malicious_reduce_is_refused(tmp_path: Path, make, refused: str) -> None:
    marker = tmp_path / "MARKER"
    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(pickle.dumps({"G_ema": make(marker)}))
    with pytest.raises(UnsafePickleError, match=re.escape(f"refused global {refused}")):
        load_official(pkl)
    assert not marker.exists()


def test_payload_nested_in_a_network_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    snap = _official_snapshot(marker)
    snap["G_ema"].synthesis.b8.conv0.evil = Reduce(os.system, f"touch {marker}")
    pkl = _dump(snap, tmp_path / "evil.pkl")
    with _no_pickle_imports(), pytest.raises(UnsafePickleError, match=r"\.system"):
        load_official(pkl)
    assert not marker.exists()


def test_unknown_persistent_class_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    snap = _official_snapshot(marker)
    snap["D"].b4.add_module("extra", Persistent("EvilNet", _module_src(marker)))
    pkl = _dump(snap, tmp_path / "evil.pkl")
    with _no_pickle_imports(), pytest.raises(UnsafePickleError, match="'EvilNet' refused"):
        read_official(pkl)
    assert not marker.exists()
    assert "Generator" in KNOWN_CLASSES and "EvilNet" not in KNOWN_CLASSES


def test_payload_inside_tensor_bytes_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    blob = pickle.dumps(Reduce(os.system, f"touch {marker}"), protocol=2)
    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(pickle.dumps({"G_ema": Reduce(torch.storage._load_from_bytes, blob)}))
    with pytest.raises(UnsafePickleError, match="weights_only=True"):
        load_official(pkl)
    assert not marker.exists()


def test_stand_ins_refuse_build(tmp_path: Path) -> None:
    # PROTO 2, GLOBAL torch.storage._load_from_bytes, EMPTY_DICT, BUILD, STOP: a BUILD could
    # otherwise rewrite a stand-in (say its defaults) before the pickle calls it.
    pkl = tmp_path / "build.pkl"
    pkl.write_bytes(b"\x80\x02ctorch.storage\n_load_from_bytes\n}b.")
    with pytest.raises(UnsafePickleError, match="set the state"):
        load_official(pkl)


def test_tensor_outside_its_storage_is_refused(tmp_path: Path) -> None:
    # Tensor.set_ would grow the storage to whatever size the file claims.
    storage = torch.zeros(4)._typed_storage()
    bad = Reduce(torch._utils._rebuild_tensor_v2, storage, 0, (10**9,), (1,), False, OrderedDict())
    pkl = tmp_path / "big.pkl"
    pkl.write_bytes(pickle.dumps({"G_ema": bad}))
    with pytest.raises(ValueError, match="does not fit its storage"):
        load_official(pkl)


def test_tensorflow_pickle_gets_a_hint(tmp_path: Path) -> None:
    pkl = tmp_path / "tf.pkl"
    pkl.write_bytes(b"\x80\x02cdnnlib.tflib.network\nNetwork\n)\x81.")
    with pytest.raises(UnsafePickleError, match=r"dnnlib\.tflib\.network\.Network.*TensorFlow"):
        load_official(pkl)


def test_allow_list_is_small_and_explicit() -> None:
    assert "torch._utils._rebuild_tensor_v2" in ALLOWED_GLOBALS
    assert "dnnlib.util.EasyDict" in ALLOWED_GLOBALS
    for name in ("builtins.eval", "builtins.getattr", "torch.load", "copyreg._reconstructor",
                 "numpy.core.multiarray._reconstruct", "posix.system"):  # fmt: skip
        assert name not in ALLOWED_GLOBALS


# -- ownformat --------------------------------------------------------------------------------
def _fixture_g() -> tuple[dict, dict[str, torch.Tensor]]:
    meta, g, _ = _fixture()
    return meta["G_init_kwargs"], {k: torch.from_numpy(np.array(v)) for k, v in g.items()}


def test_own_format_round_trip(tmp_path: Path) -> None:
    init_kwargs, state = _fixture_g()
    saved = ownformat.save(tmp_path / "tiny", "stylegan2", init_kwargs, state, {"note": "x"})
    assert saved.tensors_path == tmp_path / "tiny.safetensors"
    assert saved.json_path == tmp_path / "tiny.json"
    kind, kw, loaded = ownformat.load_own(tmp_path / "tiny.safetensors")
    assert (kind, kw) == ("stylegan2", init_kwargs)
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], v) and loaded[k].dtype == v.dtype for k, v in state.items())
    meta = json.loads(saved.json_path.read_text())
    assert meta["content_hash"] == saved.content_hash
    assert meta["extra"] == {"note": "x"} and meta["num_tensors"] == len(state)
    # Stable: the same network saved again (another spelling of the path) hashes the same.
    again = ownformat.save(tmp_path / "b" / "tiny.json", "stylegan2", kw, loaded)
    assert again.content_hash == saved.content_hash
    assert again.tensors_path == tmp_path / "b" / "tiny.safetensors"
    assert ownformat.load_own(tmp_path / "b" / "tiny")[0] == "stylegan2"
    # ... and any change to a value changes it.
    changed = dict(state, **{"mapping.w_avg": state["mapping.w_avg"] + 1e-6})
    assert ownformat.state_hash("stylegan2", init_kwargs, changed) != saved.content_hash


def test_own_hash_is_the_module_content_hash() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1, bias=False))
    net.register_buffer("w_avg", torch.arange(4.0))
    kw = {"b": [1, 2], "a": {"z": 0.5}}
    extra = f"toy|{json.dumps(kw, sort_keys=True)}"
    assert ownformat.hash_extra("toy", kw) == extra
    assert ownformat.state_hash("toy", kw, net.state_dict()) == content_hash(net, extra)


def test_own_format_detects_damage(tmp_path: Path) -> None:
    init_kwargs, state = _fixture_g()
    saved = ownformat.save(tmp_path / "net", "stylegan2", init_kwargs, state)
    meta_text = saved.json_path.read_text()
    tensors_bytes = saved.tensors_path.read_bytes()

    changed = {k: v.clone() for k, v in state.items()}
    changed["synthesis.b32.torgb.bias"][0] += 1
    safetensors.torch.save_file(changed, str(saved.tensors_path))
    with pytest.raises(ValueError, match=r"content hash \w+ does not match"):
        ownformat.load_own(saved.tensors_path)
    saved.tensors_path.write_bytes(tensors_bytes)

    meta = json.loads(meta_text)
    meta["init_kwargs"]["w_dim"] = 128
    saved.json_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match"):
        ownformat.load_own(saved.tensors_path)

    meta = json.loads(meta_text)
    meta["format_version"] = 2
    saved.json_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format_version 2"):
        ownformat.load_own(saved.tensors_path)

    saved.json_path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ownformat.load_own(saved.tensors_path)
    saved.json_path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a faceatlas-network"):
        ownformat.load_own(saved.tensors_path)

    saved.json_path.write_text(meta_text)
    saved.tensors_path.write_bytes(tensors_bytes[:1000])
    with pytest.raises(ValueError, match="not a readable safetensors"):
        ownformat.load_own(saved.tensors_path)
    saved.tensors_path.unlink()
    with pytest.raises(FileNotFoundError, match=r"net\.safetensors is missing"):
        ownformat.load_own(saved.json_path)
    saved.json_path.unlink()
    with pytest.raises(FileNotFoundError, match=r"net\.json is missing"):
        ownformat.load_own(saved.tensors_path)


def test_save_rejects_bad_arguments(tmp_path: Path) -> None:
    init_kwargs, state = _fixture_g()
    bad = [
        ("", init_kwargs, state, None, "kind"),
        ("stylegan2", {"x": object()}, state, None, "init_kwargs"),
        ("stylegan2", {"x": float("nan")}, state, None, "init_kwargs"),
        ("stylegan2", init_kwargs, {}, None, "state_dict"),
        ("stylegan2", init_kwargs, {"w": np.ones(2)}, None, "not a dense tensor"),
        ("stylegan2", init_kwargs, state, ["no"], "extra_meta"),
    ]
    for kind, kw, sd, extra, message in bad:
        with pytest.raises(ValueError, match=message):
            ownformat.save(tmp_path / "net", kind, kw, sd, extra)
    assert not list(tmp_path.iterdir())


def test_save_handles_views_and_keeps_dtypes(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float16).reshape(3, 4)
    state = {
        "a": base,
        "a_t": base.t(),
        "row": base[1],
        "n": torch.tensor([1, 2], dtype=torch.int64),
    }
    ownformat.save(tmp_path / "v.safetensors", "toy", {}, state)
    _, _, loaded = ownformat.load_own(tmp_path / "v")
    for k, v in state.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v)


def test_convert_equals_direct_load(tmp_path: Path, official_pkl: Path) -> None:
    with _no_pickle_imports():
        saved = ownformat.convert(official_pkl, tmp_path / "ffhq")
    direct = load_official(official_pkl)
    kind, init_kwargs, state = ownformat.load_own(saved.tensors_path)
    assert (kind, init_kwargs) == (direct.kind, direct.init_kwargs)
    assert set(state) == set(direct.state_dict)
    assert all(torch.equal(state[k], v) for k, v in direct.state_dict.items())
    source = json.loads(saved.json_path.read_text())["extra"]["source"]
    assert source == {
        "file": official_pkl.name,
        "sha256": hashlib.sha256(official_pkl.read_bytes()).hexdigest(),
        "network": "G_ema",
    }
    d = ownformat.convert(official_pkl, tmp_path / "ffhq.D", which="D")
    assert d.tensors_path.name == "ffhq.D.safetensors"
    assert ownformat.load_own(d.tensors_path)[0] == "stylegan2-discriminator"
    with pytest.raises(ValueError, match="which must be one of"):
        ownformat.convert(official_pkl, tmp_path / "x", which="g_ema")


# -- through faceatlas.gan.load and the CLI ------------------------------------------------
def test_load_and_convert_network_command(tmp_path: Path, official_pkl: Path) -> None:
    from faceatlas.cli import main
    from faceatlas.gan import GeneratorError, load, load_discriminator

    G = load(str(official_pkl))
    assert G.kind == "stylegan2" and G.resolution == 32 and G.num_ws == 8
    assert load_discriminator(str(official_pkl)) is not None
    assert main(["convert-network", str(official_pkl), str(tmp_path / "tiny")]) == 0
    for name in ("tiny.safetensors", "tiny.json", "tiny.D.safetensors", "tiny.D.json"):
        assert (tmp_path / name).is_file(), name
    own = load(str(tmp_path / "tiny.safetensors"))
    assert own.identity == G.identity  # the same weights, whatever the file
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(G.synthesis(G.mapping(z)), own.synthesis(own.mapping(z)))
    assert load_discriminator(str(tmp_path / "tiny.safetensors")) is not None
    assert load("dcgan64").identity != G.identity

    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"G_ema": Reduce(os.system, f"touch {marker}")}))
    with pytest.raises(GeneratorError, match="refused global"):
        load(str(evil))
    assert main(["convert-network", str(evil), str(tmp_path / "evil")]) == 2
    assert not marker.exists()
    with pytest.raises(GeneratorError, match="no generator"):
        load(str(tmp_path / "absent.pkl"))
