"""Generators behind one interface (see base.py), and `load(SPEC)`.

SPEC is one of:
- `dcgan64` (the default): the bundled 64x64 DCGAN from gan-face-generate;
- `PATH.pkl`: an official StyleGAN2-ADA PyTorch network pickle, read by pickle_safe's
  restricted unpickler (no code from the file is imported or run); `G_ema` by default;
- `PATH.safetensors` (with `PATH.json` beside it): the project's own format (ownformat).

Every loaded generator carries `identity`, a content hash of its kind, constructor
arguments and tensors, which goes into every latent row.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from faceatlas.gan.base import GeneratorBase, content_hash

__all__ = ["BUNDLED", "GeneratorBase", "GeneratorError", "build", "load", "load_discriminator"]

BUNDLED = ("dcgan64",)


class GeneratorError(ValueError):
    """A generator spec that cannot be loaded: unknown name, missing or unsafe file."""


def build(kind: str, init_kwargs: dict, state_dict: dict | None = None) -> torch.nn.Module:
    """A network of `kind` from its constructor arguments, with `state_dict` loaded."""
    if kind == "stylegan2":
        from faceatlas.gan import stylegan2

        net_class = stylegan2.StyleGAN2Generator
    elif kind == "stylegan2-discriminator":
        from faceatlas.gan import stylegan2

        net_class = stylegan2.StyleGAN2Discriminator
    elif kind == "dcgan":
        from faceatlas.gan import dcgan

        net_class = dcgan.DCGANGenerator
    else:
        raise GeneratorError(f"unknown network kind {kind!r}")
    net = net_class(**init_kwargs)
    if state_dict is not None:
        try:
            net.load_state_dict(state_dict, strict=True)
        except RuntimeError as e:
            raise GeneratorError(f"the {kind} weights do not fit its arguments: {e}") from None
    return net.eval()


def _identify(net: torch.nn.Module, kind: str, init_kwargs: dict) -> torch.nn.Module:
    net.identity = content_hash(net, f"{kind}|{json.dumps(init_kwargs, sort_keys=True)}")
    return net


def load(spec: str, device: str | torch.device = "cpu") -> GeneratorBase:
    """The generator SPEC names, in eval mode on `device`, with `.identity` set."""
    if spec in BUNDLED:
        from faceatlas.gan.dcgan import load_bundled

        try:
            net = load_bundled()
        except FileNotFoundError as e:
            raise GeneratorError(str(e)) from None
        net = _identify(net, "dcgan", net.init_kwargs())
    else:
        kind, init_kwargs, state = _read(spec, "G_ema")
        net = _identify(build(kind, init_kwargs, state), kind, init_kwargs)
    net.spec = spec
    return net.to(device)


def load_discriminator(spec: str, device: str | torch.device = "cpu") -> torch.nn.Module | None:
    """The discriminator stored with SPEC's generator, or None when there is none."""
    if spec in BUNDLED:
        return None
    path = Path(spec)
    if path.suffix == ".pkl":
        kind, init_kwargs, state = _read(spec, "D")
    else:
        sibling = path.with_name(path.stem + ".D.safetensors")
        if not sibling.exists():
            return None
        kind, init_kwargs, state = _read(str(sibling), "D")
    return build(kind, init_kwargs, state).to(device)


def _read(spec: str, which: str) -> tuple[str, dict, dict]:
    path = Path(spec)
    if not path.is_file():
        known = ", ".join(BUNDLED)
        raise GeneratorError(f"no generator {spec!r}: give a bundled name ({known}), an "
                             "official .pkl or a .safetensors file")  # fmt: skip
    if path.suffix == ".pkl":
        from faceatlas.gan.pickle_safe import load_official

        try:
            return load_official(path, which=which)
        except (ValueError, KeyError, OSError) as e:  # UnsafePickleError is a ValueError
            raise GeneratorError(f"{path}: {e}") from None
    if path.suffix in (".safetensors", ".json"):
        from faceatlas.gan.ownformat import load_own

        try:
            return load_own(path.with_suffix(".safetensors"))
        except (ValueError, KeyError, OSError) as e:
            raise GeneratorError(f"{path}: {e}") from None
    raise GeneratorError(f"{path}: expected a .pkl or .safetensors file")
