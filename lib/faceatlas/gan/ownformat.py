"""The project's own network format: NAME.safetensors (tensors) + NAME.json (how to build it).

Official StyleGAN2 pickles can only be read by our restricted unpickler, and every read
re-parses the whole snapshot (G, D, G_ema, augment_pipe). After `convert` a network is two
plain files that any tool can inspect and that hold no code:

- NAME.safetensors: the state dict under its official names (safetensors never runs code).
- NAME.json: {"format": "faceatlas-network", "format_version": 1, "kind", "init_kwargs",
  "content_hash", "num_tensors", "tensors_file", "extra"}; `extra` is free JSON, e.g. where
  a converted network came from.

`content_hash` is base.content_hash over the tensors with extra = "KIND|" +
json.dumps(init_kwargs, sort_keys=True): the same value that faceatlas.gan gives a built
network as its identity, as long as the network's state_dict equals the stored one. load_own
recomputes it, so a JSON file beside the wrong tensors, edited arguments or damaged tensors
are caught.

Decisions:

- A path may be the stem (`nets/ffhq`), `nets/ffhq.safetensors` or `nets/ffhq.json`; any
  other suffix is part of the stem (`ffhq.D` -> ffhq.D.safetensors + ffhq.D.json).
- Tensors are written contiguous, on the CPU, each in its own memory, dtypes kept.
  Non-finite values are stored as they are: they are data, and the hash covers their bytes.
- Both files are written to temporary names and renamed into place, tensors first, so a
  crash leaves either the old pair or a pair whose hash check fails, never a half file.

Errors: ValueError for bad arguments and for files that are corrupt, of another format or
version, or fail the hash check; FileNotFoundError when either file is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, NamedTuple

import safetensors.torch
import torch

from faceatlas.gan.base import content_hash
from faceatlas.gan.pickle_safe import NETWORK_KEYS, load_official

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SavedNetwork",
    "convert",
    "hash_extra",
    "load_own",
    "own_paths",
    "save",
    "state_hash",
]

FORMAT: Final = "faceatlas-network"
FORMAT_VERSION: Final = 1


class SavedNetwork(NamedTuple):
    tensors_path: Path
    json_path: Path
    content_hash: str


class _Tensors:
    """A state dict seen as a module: base.content_hash only reads `state_dict()`."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        self._state = state_dict

    def state_dict(self) -> Mapping[str, torch.Tensor]:
        return self._state


def hash_extra(kind: str, init_kwargs: dict) -> str:
    """The `extra` string of a network's content hash: its kind and constructor arguments."""
    return f"{kind}|{json.dumps(init_kwargs, sort_keys=True)}"


def state_hash(kind: str, init_kwargs: dict, state_dict: Mapping[str, torch.Tensor]) -> str:
    """base.content_hash of a network with these tensors, kind and arguments."""
    return content_hash(_Tensors(state_dict), hash_extra(kind, init_kwargs))  # type: ignore[arg-type]


def own_paths(path: str | Path) -> tuple[Path, Path]:
    """(NAME.safetensors, NAME.json) for a stem or either file's path."""
    path = Path(path)
    if not path.name or path.name in (".", ".."):
        raise ValueError(f"{str(path)!r} does not name a network file")
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def _check_json(value: object, what: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be plain JSON data: {e}") from None


def _replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save(
    path: str | Path,
    kind: str,
    init_kwargs: dict,
    state_dict: Mapping[str, torch.Tensor],
    extra_meta: dict | None = None,
) -> SavedNetwork:
    """Write NAME.safetensors + NAME.json (see the module docstring); returns both paths
    and the content hash."""
    if not isinstance(kind, str) or not kind.strip():
        raise ValueError(f"kind must be a non-empty string, got {kind!r}")
    if not isinstance(init_kwargs, dict):
        raise ValueError(f"init_kwargs must be a dict, got {type(init_kwargs).__name__}")
    _check_json(init_kwargs, "init_kwargs")
    if extra_meta is not None and not isinstance(extra_meta, dict):
        raise ValueError(f"extra_meta must be a dict, got {type(extra_meta).__name__}")
    _check_json(extra_meta, "extra_meta")
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise ValueError("state_dict must be a non-empty mapping of names to tensors")
    tensors: dict[str, torch.Tensor] = {}
    for name, t in state_dict.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"tensor name {name!r} is not a non-empty string")
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided:
            raise ValueError(f"{name} is not a dense tensor")
        # clone: safetensors refuses tensors that share memory, which views of one storage do
        tensors[name] = t.detach().to("cpu").contiguous().clone()
    # Round-trip through JSON first so the hash sees exactly what load_own will read back.
    init_kwargs = json.loads(json.dumps(init_kwargs))
    digest = state_hash(kind, init_kwargs, tensors)
    tensors_path, json_path = own_paths(path)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "init_kwargs": init_kwargs,
        "content_hash": digest,
        "num_tensors": len(tensors),
        "tensors_file": tensors_path.name,
        "extra": extra_meta or {},
    }
    tensors_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _replace_atomically(
            tensors_path,
            lambda p: safetensors.torch.save_file(
                tensors, str(p), metadata={"format": FORMAT, "content_hash": digest}
            ),
        )
    except (TypeError, ValueError, RuntimeError) as e:  # e.g. a dtype safetensors lacks
        raise ValueError(f"cannot write {tensors_path}: {e}") from e
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    _replace_atomically(json_path, lambda p: p.write_text(text, encoding="utf-8"))
    return SavedNetwork(tensors_path, json_path, digest)


def _read_meta(json_path: Path) -> dict:
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path} is missing: a network needs its .json beside it")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{json_path} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{json_path} is not a {FORMAT} description")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{json_path} has format_version {version!r}; this faceatlas reads {FORMAT_VERSION}"
        )
    for key, typ in (("kind", str), ("init_kwargs", dict), ("content_hash", str)):
        if not isinstance(meta.get(key), typ):
            raise ValueError(f"{json_path}: {key!r} is missing or not a {typ.__name__}")
    return meta


def load_own(path: str | Path) -> tuple[str, dict, dict[str, torch.Tensor]]:
    """(kind, init_kwargs, state_dict) of a network in the own format, after checking its
    content hash against the JSON."""
    tensors_path, json_path = own_paths(path)
    meta = _read_meta(json_path)
    if not tensors_path.is_file():
        raise FileNotFoundError(f"{tensors_path} is missing (described by {json_path})")
    try:
        state = safetensors.torch.load_file(str(tensors_path), device="cpu")
    except Exception as e:  # safetensors raises its own error type for damaged headers
        raise ValueError(f"{tensors_path} is not a readable safetensors file: {e}") from e
    kind, init_kwargs = meta["kind"], meta["init_kwargs"]
    digest = state_hash(kind, init_kwargs, state)
    if digest != meta["content_hash"]:
        raise ValueError(
            f"{tensors_path}: content hash {digest} does not match {meta['content_hash']} in "
            f"{json_path.name}: the tensors or the arguments were changed or mixed up"
        )
    return kind, init_kwargs, state


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert(src_pkl: str | Path, dst: str | Path, which: str = "G_ema") -> SavedNetwork:
    """Read one network of an official StyleGAN2-ADA pickle safely (pickle_safe) and write
    it in the own format at `dst`; `extra.source` records the pickle's name and SHA-256."""
    if which not in NETWORK_KEYS:
        raise ValueError(f"which must be one of {', '.join(NETWORK_KEYS)}, got {which!r}")
    src = Path(src_pkl)
    kind, init_kwargs, state = load_official(src, which=which)
    source = {"file": src.name, "sha256": _sha256_file(src), "network": which}
    return save(dst, kind, init_kwargs, state, extra_meta={"source": source})
