"""The one interface every generator backend offers to the projection and render stages.

A generator is a torch Module with:

- `z_dim`, `w_dim`, `num_ws`, `resolution`, `img_channels`; `has_mapping` (False when
  w = z, as for the DCGAN); `alignment`, the `--align` spec its training faces used
  ("ffhq" or "template:<name>"); `kind` ("stylegan2", "dcgan").
- `w_avg`: a [w_dim] buffer, the centre of the latent space that projection starts from.
- `mapping(z, truncation_psi=1.0, truncation_cutoff=None) -> ws [N, num_ws, w_dim]`
- `synthesis(ws, noise_mode="const") -> images [N, img_channels, H, W]`, nominally [-1, 1]
- `noise_buffers() -> list[Tensor]`: the per-layer noise maps a projection may optimise
  (empty when there are none).
- `init_kwargs() -> dict`: the constructor arguments, JSON-serialisable, for saving.
"""

from __future__ import annotations

import hashlib

import torch


class GeneratorBase(torch.nn.Module):
    kind: str = ""
    z_dim: int
    w_dim: int
    num_ws: int
    resolution: int
    img_channels: int = 3
    has_mapping: bool = True
    alignment: str = "ffhq"

    def init_kwargs(self) -> dict:
        raise NotImplementedError

    def noise_buffers(self) -> list[torch.Tensor]:
        return []


def content_hash(module: torch.nn.Module, extra: str = "") -> str:
    """A generator's identity: SHA-256 over its tensors (names, shapes, dtypes, bytes) and
    `extra` (e.g. its kind and constructor arguments). The same weights loaded from a
    pickle or from the project's own format give the same hash."""
    h = hashlib.sha256(extra.encode())
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]
