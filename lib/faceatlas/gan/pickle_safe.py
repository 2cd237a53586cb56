"""Reading NVIDIA's official StyleGAN2-ADA PyTorch network pickles without running their code.

The projection stage wants NVIDIA's FFHQ networks, which exist only as the pickles that
stylegan2-ada-pytorch's training loop writes: `pickle.dump` of a dict {G, D, G_ema,
augment_pipe, training_set_kwargs, ...}. Loading such a file with `pickle.load` imports
`torch_utils.persistence`, which `exec`s the Python source stored inside the pickle: any
pickle from the web could run anything. This module reads the same files with a restricted
unpickler and hands back plain data: the constructor arguments and a state dict under the
official names, for the independent networks in stylegan2.py.

How a network is stored: every network class is wrapped by `persistence.persistent_class`,
whose `__reduce__` gives `torch_utils.persistence._reconstruct_persistent_obj(meta)` with
meta = {type: 'class', version: 6, module_src: <the module's source text>, class_name,
state: <the object's __dict__>}. The state holds `_init_args`, `_init_kwargs` (which may
contain `dnnlib.util.EasyDict`) and the nn.Module internals `_parameters`, `_buffers`,
`_non_persistent_buffers_set` and `_modules`, whose submodules are persistent objects too.
Tensors arrive through torch's own reducers; each storage is a nested legacy `torch.save`
blob that `torch.storage._load_from_bytes` would read with an unrestricted `torch.load`.

Decisions:

- `find_class` answers only the names in `ALLOWED_GLOBALS`, each with a stand-in of ours;
  anything else raises UnsafePickleError naming module.name. No module named in the pickle
  is imported and `module_src` is never executed: a persistent object becomes a
  `PersistentObject` record holding its class name and state.
- Persistent objects must name one of `KNOWN_CLASSES` (stylegan2-ada-pytorch's
  training/networks.py and training/augment.py); others (StyleGAN3 layers, anything else)
  are refused with UnsafePickleError, since we could not rebuild them anyway.
- Nested tensor blobs go through `torch.load(..., weights_only=True)`, torch's own
  restricted unpickler; a refusal there is an UnsafePickleError too.
- Stand-ins refuse pickle's BUILD (`__setstate__`) and attribute writes, so a pickle cannot
  rewire them (e.g. change a function's defaults) before calling them.
- Tensors must lie inside their storage: `Tensor.set_` would otherwise grow the storage to
  whatever size the file claims.
- Parameters come back as plain tensors (detached, no hooks); buffers listed in
  `_non_persistent_buffers_set` are left out, as `state_dict()` leaves them out.
- NumPy scalars (the official layers keep `weight_gain = 1 / np.sqrt(...)` as np.float64)
  become Python numbers; NumPy arrays are not supported (no official StyleGAN2 network
  holds one) and are refused by name.

Errors: UnsafePickleError (a pickle.UnpicklingError and a ValueError) for anything refused;
ValueError for files that are not network pickles, are truncated or lack the network asked
for; OSError from opening the file.
"""

from __future__ import annotations

import collections
import io
import json
import math
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
import torch

__all__ = [
    "ALLOWED_GLOBALS",
    "DISCRIMINATOR_KIND",
    "GENERATOR_KIND",
    "KNOWN_CLASSES",
    "NETWORK_KEYS",
    "OfficialNetwork",
    "PersistentObject",
    "UnsafePickleError",
    "load_official",
    "read_official",
]

GENERATOR_KIND: Final = "stylegan2"
DISCRIMINATOR_KIND: Final = "stylegan2-discriminator"

# Snapshot keys that hold networks, and the class each must be.
NETWORK_KEYS: Final = ("G", "G_ema", "D")
_NETWORK_CLASS: Final = {"G": "Generator", "G_ema": "Generator", "D": "Discriminator"}
_KIND_OF_CLASS: Final = {"Generator": GENERATOR_KIND, "Discriminator": DISCRIMINATOR_KIND}

# The persistent classes of stylegan2-ada-pytorch: training/networks.py and training/augment.py.
KNOWN_CLASSES: Final = frozenset(
    {
        "FullyConnectedLayer",
        "Conv2dLayer",
        "MappingNetwork",
        "SynthesisLayer",
        "ToRGBLayer",
        "SynthesisBlock",
        "SynthesisNetwork",
        "Generator",
        "DiscriminatorBlock",
        "MinibatchStdLayer",
        "DiscriminatorEpilogue",
        "Discriminator",
        "AugmentPipe",
    }
)
_PERSISTENCE_VERSION: Final = 6  # torch_utils/persistence.py `_version` in both NVIDIA repos
_MAX_DEPTH: Final = 32  # official networks nest 4 deep; deeper means a cycle or an attack

_PICKLE_PROTOCOLS: Final = range(2, 6)
_ZIP_MAGIC: Final = b"PK\x03\x04"

# Protocol-2 pickles written by Python 2 name builtins `__builtin__`.
_MODULE_ALIASES: Final = {"__builtin__": "builtins"}

_NUMPY_CODES: Final = frozenset(
    {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"}
)
_TORCH_DTYPES: Final = (
    "float16",
    "float32",
    "float64",
    "bfloat16",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "bool",
)


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """The pickle asks for something outside the allow-list; nothing of it was run."""


class OfficialNetwork(NamedTuple):
    """One network of an official pickle, ready for `StyleGAN2Generator(**init_kwargs)`."""

    kind: str
    init_kwargs: dict
    state_dict: dict[str, torch.Tensor]


class _Frozen:
    """Base of our stand-ins: pickle's BUILD and attribute writes are refused."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise UnsafePickleError(f"pickle tries to set {name!r} on {self!r}; refused")

    def __setstate__(self, state: object) -> None:
        raise UnsafePickleError(f"pickle tries to set the state of {self!r}; refused")


class PersistentObject(_Frozen):
    """What `_reconstruct_persistent_obj(meta)` stands for: the class name and the object's
    `__dict__` (`state`), with the class's source text kept as data, never executed."""

    __slots__ = ("class_name", "module_src", "state")
    class_name: str
    module_src: str
    state: dict

    def __init__(self, class_name: str, module_src: str, state: dict) -> None:
        object.__setattr__(self, "class_name", class_name)
        object.__setattr__(self, "module_src", module_src)
        object.__setattr__(self, "state", state)

    def __repr__(self) -> str:
        return f"PersistentObject({self.class_name})"


class _SafeGlobal(_Frozen):
    """A callable the unpickler hands out for an allow-listed global name."""

    __slots__ = ("_fn", "_name")

    def __init__(self, name: str, fn: Callable[..., Any]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)

    def __repr__(self) -> str:
        return f"<safe stand-in for {self._name}>"


class _FrozenType(type):
    def __setattr__(cls, name: str, value: object) -> None:
        raise UnsafePickleError(f"pickle tries to set {name!r} on {cls.__name__}; refused")


class _EasyDict(dict, metaclass=_FrozenType):
    """Stand-in for dnnlib.util.EasyDict (a dict with attribute access): a plain dict here.
    It must be a class, because protocol-2+ pickles rebuild dict subclasses with NEWOBJ."""

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        if state:
            raise UnsafePickleError("pickle tries to set attributes on a dnnlib EasyDict")


class _NumpyDtype(_Frozen):
    """Stand-in for numpy.dtype(code, align, copy) plus the BUILD that sets its byte order;
    only the fixed-size numeric codes that NumPy scalars use are accepted."""

    __slots__ = ("byteorder", "code")
    code: str
    byteorder: str

    def __init__(self, code: object, align: object = False, copy: object = True) -> None:
        if code not in _NUMPY_CODES:
            raise UnsafePickleError(f"numpy.dtype({code!r}) refused: only numeric dtypes")
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "byteorder", "=")

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise UnsafePickleError(f"numpy.dtype state {state!r} refused")
        object.__setattr__(self, "byteorder", state[1])

    def __repr__(self) -> str:
        return f"<numpy dtype {self.byteorder}{self.code}>"


# -- stand-ins for allow-listed functions ------------------------------------------------------
def _reconstruct_persistent_obj(meta: object) -> PersistentObject:
    if not isinstance(meta, Mapping):
        raise UnsafePickleError(
            f"torch_utils.persistence object with a {type(meta).__name__} as meta refused"
        )
    class_name = meta.get("class_name")
    if not isinstance(class_name, str) or class_name not in KNOWN_CLASSES:
        raise UnsafePickleError(
            f"torch_utils.persistence object of class {class_name!r} refused: not one of the "
            f"official StyleGAN2-ADA classes ({', '.join(sorted(KNOWN_CLASSES))})"
        )
    if meta.get("type") != "class":
        raise UnsafePickleError(f"persistent object type {meta.get('type')!r} refused")
    if meta.get("version") != _PERSISTENCE_VERSION:
        raise ValueError(
            f"torch_utils.persistence version {meta.get('version')!r} is not supported "
            f"(expected {_PERSISTENCE_VERSION})"
        )
    state = meta.get("state")
    module_src = meta.get("module_src")
    if not isinstance(state, Mapping) or not isinstance(module_src, str):
        raise ValueError(f"persistent {class_name} has no state dict or no module source")
    return PersistentObject(class_name, module_src, dict(state))


def _storage_from_bytes(data: object) -> torch.storage.TypedStorage:
    if not isinstance(data, bytes | bytearray):
        raise ValueError(f"tensor storage is {type(data).__name__}, not bytes")
    try:
        storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch wraps the reason ("Unsupported global: GLOBAL posix.system ...") in advice
        reason = str(e).partition("WeightsUnpickler error:")[2].strip().split("\n\n")[0]
        raise UnsafePickleError(
            "torch.storage._load_from_bytes: the embedded tensor data was refused by "
            f"torch.load(weights_only=True): {reason or type(e).__name__}"
        ) from e
    except Exception as e:
        raise ValueError(f"corrupt tensor storage in pickle: {e}") from e
    if not isinstance(storage, torch.storage.TypedStorage):
        raise ValueError(f"tensor storage decodes to {type(storage).__name__}, not a storage")
    return storage


def _int_tuple(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list | torch.Size) or not all(
        type(v) is int and v >= 0 for v in value
    ):
        raise ValueError(f"tensor {what} {value!r} is not a tuple of non-negative ints")
    return tuple(value)


def _rebuild_tensor_v2(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object = False,
    backward_hooks: object = None,
    metadata: object = None,
) -> torch.Tensor:
    # requires_grad, backward hooks and metadata (conj/neg bits) are dropped: we want values.
    if not isinstance(storage, torch.storage.TypedStorage):
        raise ValueError(f"tensor storage is {type(storage).__name__}, not a torch storage")
    shape = _int_tuple(size, "size")
    strides = _int_tuple(stride, "stride")
    if len(shape) != len(strides) or type(storage_offset) is not int or storage_offset < 0:
        raise ValueError(f"tensor layout {shape}/{strides}/{storage_offset!r} is inconsistent")
    untyped = storage._untyped_storage
    capacity = untyped.nbytes() // storage.dtype.itemsize
    numel = math.prod(shape)
    last = storage_offset + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
    if numel and (last >= capacity or numel > capacity):
        raise ValueError(
            f"tensor of size {shape} (stride {strides}, offset {storage_offset}) does not fit "
            f"its storage of {capacity} elements"
        )
    return torch.empty((0,), dtype=storage.dtype).set_(untyped, storage_offset, shape, strides)


def _rebuild_parameter(
    data: object, requires_grad: object, backward_hooks: object, state: object = None
) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise ValueError(f"parameter data is {type(data).__name__}, not a tensor")
    return data.detach()


def _make_size(dims: object) -> torch.Size:
    return torch.Size(_int_tuple(dims, "torch.Size"))


def _make_set(*args: object) -> set:
    if len(args) > 1:
        raise ValueError("set() takes at most one argument")
    return set(*args)  # type: ignore[arg-type]


def _make_frozenset(*args: object) -> frozenset:
    if len(args) > 1:
        raise ValueError("frozenset() takes at most one argument")
    return frozenset(*args)  # type: ignore[arg-type]


def _make_ordered_dict(*args: object) -> collections.OrderedDict:
    if len(args) > 1:
        raise ValueError("OrderedDict() takes at most one argument")
    return collections.OrderedDict(*args)  # type: ignore[arg-type]


def _codecs_encode(text: object, encoding: object = "utf-8") -> bytes:
    # Protocol 2 has no bytes opcode: Python 3 writes bytes as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode({type(text).__name__}, {encoding!r}) refused")
    return text.encode("latin-1")


def _numpy_scalar(dtype: object, data: object = None) -> int | float | complex | bool:
    if not isinstance(dtype, _NumpyDtype) or not isinstance(data, bytes):
        raise UnsafePickleError("numpy scalar refused: only numeric dtypes with raw bytes")
    order = "" if dtype.byteorder == "|" else dtype.byteorder
    np_dtype = np.dtype(order + dtype.code)
    if len(data) != np_dtype.itemsize:
        raise ValueError(f"numpy scalar of {np_dtype} has {len(data)} bytes")
    return np.frombuffer(data, dtype=np_dtype, count=1)[0].item()


def _build_allow_list() -> dict[str, object]:
    def safe(name: str, fn: Callable[..., Any]) -> tuple[str, object]:
        return name, _SafeGlobal(name, fn)

    allowed: dict[str, object] = dict(
        [
            safe(
                "torch_utils.persistence._reconstruct_persistent_obj", _reconstruct_persistent_obj
            ),
            safe("torch._utils._rebuild_tensor_v2", _rebuild_tensor_v2),
            safe("torch._utils._rebuild_parameter", _rebuild_parameter),
            safe("torch._utils._rebuild_parameter_with_state", _rebuild_parameter),
            safe("torch.storage._load_from_bytes", _storage_from_bytes),
            safe("torch.Size", _make_size),
            safe("collections.OrderedDict", _make_ordered_dict),
            safe("builtins.set", _make_set),
            safe("builtins.frozenset", _make_frozenset),
            safe("_codecs.encode", _codecs_encode),
            safe("numpy.dtype", _NumpyDtype),
            safe("numpy.core.multiarray.scalar", _numpy_scalar),
            safe("numpy._core.multiarray.scalar", _numpy_scalar),
        ]
    )
    allowed["dnnlib.util.EasyDict"] = _EasyDict
    for name in _TORCH_DTYPES:
        allowed[f"torch.{name}"] = getattr(torch, name)
    return allowed


_ALLOWED: Final = _build_allow_list()
ALLOWED_GLOBALS: Final = frozenset(_ALLOWED)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        key = f"{_MODULE_ALIASES.get(module, module)}.{name}"
        found = _ALLOWED.get(key)
        if found is None:
            hint = ""
            if module.startswith("dnnlib.tflib"):
                hint = " (a TensorFlow-era StyleGAN pickle: only PyTorch pickles are read)"
            raise UnsafePickleError(
                f"refused global {module}.{name}: not on faceatlas' pickle allow-list{hint}"
            )
        return found

    def persistent_load(self, pid: object) -> object:
        raise UnsafePickleError(f"refused persistent id {pid!r}: a network pickle has none")


# -- reading -------------------------------------------------------------------------------
def _load_pickle(path: str | Path) -> object:
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
        if not head:
            raise ValueError(f"{path} is empty, not a network pickle")
        if head == _ZIP_MAGIC:
            raise ValueError(f"{path} is a zip archive (a torch.save file?), not a network pickle")
        if head[0] != 0x80 or len(head) < 2 or head[1] not in _PICKLE_PROTOCOLS:
            raise ValueError(f"{path} is not a network pickle (starts with {head!r})")
        f.seek(0)
        try:
            return _RestrictedUnpickler(f).load()
        except (UnsafePickleError, MemoryError):
            raise
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
        except Exception as e:  # the file is untrusted: any failure means it is not usable
            raise ValueError(f"{path} is not a readable network pickle: {e!r}") from e


def _plain(value: object, where: str) -> object:
    """init_kwargs as JSON-ready plain data: EasyDicts become dicts, tuples lists."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} has a non-string key {k!r}")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ValueError(f"{where} holds a {type(value).__name__}, which init_kwargs cannot keep")


def _module_table(state: Mapping, key: str, owner: str) -> Mapping:
    table = state.get(key, {})
    if not isinstance(table, Mapping):
        raise ValueError(f"{owner}.{key} is {type(table).__name__}, not a dict")
    return table


def _flatten(obj: PersistentObject, prefix: str, out: dict[str, torch.Tensor], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ValueError(f"modules nest deeper than {_MAX_DEPTH} levels at {prefix!r}")
    owner = prefix.rstrip(".") or obj.class_name
    state = obj.state
    skip = state.get("_non_persistent_buffers_set") or set()
    if not isinstance(skip, set | frozenset):
        raise ValueError(f"{owner}._non_persistent_buffers_set is not a set")
    tensors = list(_module_table(state, "_parameters", owner).items())
    tensors += [(n, t) for n, t in _module_table(state, "_buffers", owner).items() if n not in skip]
    for name, t in tensors:
        if t is None:  # e.g. a layer built with bias=False keeps `bias: None`
            continue
        full = _check_name(prefix, name)
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{full} is a {type(t).__name__}, not a tensor")
        if full in out:
            raise ValueError(f"{full} appears twice")
        out[full] = t.detach()
    for name, sub in _module_table(state, "_modules", owner).items():
        if sub is None:
            continue
        full = _check_name(prefix, name)
        if not isinstance(sub, PersistentObject):
            raise ValueError(f"submodule {full} is a {type(sub).__name__}, not a network layer")
        _flatten(sub, full + ".", out, depth + 1)


def _check_name(prefix: str, name: object) -> str:
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"bad parameter or module name {name!r} under {prefix!r}")
    return prefix + name


def _network(key: str, obj: object) -> OfficialNetwork:
    want = _NETWORK_CLASS[key]
    if not isinstance(obj, PersistentObject) or obj.class_name != want:
        got = obj.class_name if isinstance(obj, PersistentObject) else type(obj).__name__
        raise ValueError(f"pickle's {key!r} is a {got}, expected a {want}")
    if obj.state.get("_init_args"):
        raise ValueError(f"{key} was built with positional arguments; only keywords are read")
    if "_init_kwargs" not in obj.state:
        raise ValueError(f"{key} has no _init_kwargs: not written by persistent_class")
    init_kwargs = _plain(obj.state["_init_kwargs"], f"{key}.init_kwargs")
    if not isinstance(init_kwargs, dict):
        raise ValueError(f"{key}.init_kwargs is not a dict")
    state_dict: dict[str, torch.Tensor] = {}
    _flatten(obj, "", state_dict, 0)
    if not state_dict:
        raise ValueError(f"{key} holds no tensors")
    try:
        json.dumps(init_kwargs, allow_nan=False)
    except ValueError:
        raise ValueError(f"{key}.init_kwargs holds NaN or infinity") from None
    return OfficialNetwork(_KIND_OF_CLASS[want], init_kwargs, state_dict)


def _snapshot(path: str | Path) -> dict:
    data = _load_pickle(path)
    if not isinstance(data, dict):
        raise ValueError(
            f"{path} holds a {type(data).__name__}, not the dict of networks that "
            "stylegan2-ada-pytorch writes"
        )
    return data


def read_official(path: str | Path) -> dict[str, OfficialNetwork]:
    """Every network in an official pickle, by snapshot key (a subset of G, G_ema, D).

    Raises UnsafePickleError for anything outside the allow-list, ValueError for a file that
    is not an official network pickle or holds none of the three."""
    data = _snapshot(path)
    found = {k: _network(k, data[k]) for k in NETWORK_KEYS if data.get(k) is not None}
    if not found:
        raise ValueError(f"{path} holds none of {', '.join(NETWORK_KEYS)}")
    return found


def load_official(path: str | Path, which: str = "G_ema") -> OfficialNetwork:
    """`(kind, init_kwargs, state_dict)` of one network ("G_ema", "G" or "D") of an official
    StyleGAN2-ADA pickle. kind is "stylegan2" for G/G_ema, "stylegan2-discriminator" for D;
    state_dict names are the official ones (what `G_ema.state_dict()` gives)."""
    if which not in NETWORK_KEYS:
        raise ValueError(f"which must be one of {', '.join(NETWORK_KEYS)}, got {which!r}")
    data = _snapshot(path)
    if data.get(which) is None:
        present = [k for k in NETWORK_KEYS if data.get(k) is not None]
        raise ValueError(f"{path} has no {which!r} (networks present: {present or 'none'})")
    return _network(which, data[which])
