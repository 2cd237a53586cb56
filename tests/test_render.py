"""Group codes and rendering a stored latent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faceatlas.gan import load
from faceatlas.render import group_code, latent_to_ws, render_latent


def test_group_codes_follow_the_documented_scheme():
    assert group_code("country", "NL", "male", "young") == "NLMY"
    assert group_code("country", "NA", "all", "all") == "NAAA"  # Namibia
    assert group_code("continent", "NA", "all", "all") == "CNAAA"  # North America
    assert group_code("world", "WORLD", "female", "old") == "WORLDFO"
    assert group_code("country", "JP", "female", "20-29") == "JPF_20-29"
    codes = {group_code(lv, r, g, a) for lv, r in (("country", "NL"), ("continent", "EU"))
             for g in ("all", "female", "male") for a in ("all", "young", "old")}  # fmt: skip
    assert len(codes) == 18  # no two groups share a file name
    with pytest.raises(KeyError):
        group_code("planet", "EARTH", "all", "all")


def test_a_stored_latent_renders_as_the_generator_drew_it():
    G = load("dcgan64")
    z = torch.randn(1, 100, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        direct = ((G(z)[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    img = render_latent(G, z.numpy(), "z", truncation=1.0)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert np.array_equal(img, direct.permute(1, 2, 0).numpy())
    # Truncation pulls toward w_avg: at 0, any latent renders as w_avg's face.
    a = render_latent(G, z.numpy(), "z", truncation=0.0)
    b = render_latent(G, (z * 3).numpy(), "z", truncation=0.0)
    assert np.array_equal(a, b)
    assert latent_to_ws(G, z.numpy(), "z", 0.5).shape == (1, 1, 100)
