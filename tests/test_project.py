"""Projection on the CPU: images a generator made from known latents come back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from faceatlas.gan import build, load
from faceatlas.project import (
    Loss,
    ProjectOptions,
    VGG16Features,
    ms_ssim,
    project,
    psnr,
    resolve_space,
    ssim,
)

FIXTURE = Path(__file__).parent / "data" / "stylegan2_tiny_reference.npz"


def _tiny() -> tuple[torch.nn.Module, torch.nn.Module]:
    data = np.load(FIXTURE)
    meta = json.loads(bytes(data["meta_json"]).decode())

    def state(prefix: str) -> dict:
        return {k[len(prefix):]: torch.from_numpy(data[k]) for k in data.files
                if k.startswith(prefix)}  # fmt: skip

    G = build("stylegan2", meta["G_init_kwargs"], state("G."))
    D = build("stylegan2-discriminator", meta["D_init_kwargs"], state("D."))
    return G, D


def _images(G, latents: torch.Tensor, space: str) -> list[np.ndarray]:
    with torch.no_grad():
        ws = G.mapping(latents, truncation_psi=1.0) if space != "z" else latents[:, None, :]
        img = G.synthesis(ws.repeat(1, G.num_ws, 1) if ws.shape[1] == 1 else ws)
    return list(((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())


def _start_psnr(G, faces, space) -> np.ndarray:
    """PSNR of the image at the projection's starting point (one step of lr 0)."""
    r = project(G, faces, [f"k{i}" for i in range(len(faces))],
                ProjectOptions(steps=1, lr=1e-12, space=space))  # fmt: skip
    return np.array([p.psnr for p in r])


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return _tiny()


def test_tiny_stylegan_reconstructions_reach_a_high_psnr(tiny):
    G, _ = tiny
    # Targets from latents near w_avg, as faces are: truncation 0.5 of random draws.
    z = torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ws = G.mapping(z, truncation_psi=0.5)
        img = G.synthesis(ws)
    faces = list(((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    keys = ["a", "b", "c", "d"]
    start = _start_psnr(G, faces, "w")
    result = project(G, faces, keys, ProjectOptions(steps=150, space="w", loss="pixel"))
    got = np.array([p.psnr for p in result])
    assert all(p.space == "w" and p.latent.shape == (1, G.w_dim) for p in result)
    assert all(p.loss_kind == "pixel" for p in result)
    # This randomly initialised network has a rough latent landscape: every face gains
    # 7-9 dB and then sits in a local minimum near 20 dB (also in W+, at other rates).
    assert got.min() > 17, got
    assert (got - start).min() > 6, (start, got)
    assert all(0.4 < p.ssim <= 1 for p in result)


def test_wplus_and_the_discriminator_loss(tiny):
    G, D = tiny
    faces = _images(G, torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(2)) * 0.5,
                    "w")  # fmt: skip
    start = project(G, faces, ["x", "y"], ProjectOptions(steps=1, lr=1e-12, space="wplus"), D=D)
    result = project(G, faces, ["x", "y"], ProjectOptions(steps=80, space="wplus"), D=D)
    assert all(p.loss_kind == "disc" and p.latent.shape == (G.num_ws, G.w_dim) for p in result)
    for before, after in zip(start, result, strict=True):
        assert after.loss < 0.7 * before.loss  # the discriminator-feature distance
        assert after.psnr > before.psnr + 0.5  # and the pixels follow


@pytest.mark.slow
def test_bundled_dcgan_reconstructions_reach_a_high_psnr():
    G = load("dcgan64")
    z = torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(5))
    faces = _images(G, z, "z")
    start = _start_psnr(G, faces, "z")
    result = project(G, faces, ["a", "b", "c", "d"], ProjectOptions(steps=150))
    got = np.array([p.psnr for p in result])
    assert all(p.space == "z" and p.latent.shape == (1, 100) for p in result)
    assert got.min() > 22 and (got - start).min() > 8, (start, got)


def test_batched_equals_one_at_a_time_and_runs_are_deterministic():
    G = load("dcgan64")
    faces = _images(G, torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(3)), "z")
    opts = ProjectOptions(steps=25, seed=7)
    batch = project(G, faces, ["p", "q", "r"], opts)
    for i, key in enumerate(["p", "q", "r"]):
        (one,) = project(G, [faces[i]], [key], opts)
        # Each face has its own random numbers and gradient; only the batched
        # convolutions' rounding may differ.
        assert np.abs(one.latent - batch[i].latent).max() < 1e-3
        assert abs(one.psnr - batch[i].psnr) < 0.05
    again = project(G, faces, ["p", "q", "r"], opts)
    assert all(np.array_equal(a.latent, b.latent) for a, b in zip(batch, again, strict=True))
    other = project(G, faces, ["p", "q", "r"], ProjectOptions(steps=25, seed=8))
    assert not np.array_equal(other[0].latent, batch[0].latent)


def test_a_face_that_stops_improving_stops_early(tiny):
    G, _ = tiny
    faces = _images(G, torch.zeros(1, G.z_dim), "w")  # w_avg's own image: nothing to gain
    (p,) = project(G, faces, ["z"], ProjectOptions(steps=200, space="w", loss="pixel",
                                                   patience=10))  # fmt: skip
    assert p.steps < 200


def test_optimised_noise_maps_are_per_face(tiny):
    G, _ = tiny
    faces = _images(G, torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(4)), "w")
    r = project(G, faces, ["n1", "n2"],
                ProjectOptions(steps=20, space="w", loss="pixel", optimize_noise=True))  # fmt: skip
    assert all(np.isfinite(p.loss) for p in r)


def test_spaces_must_fit_the_generator(tiny):
    G, _ = tiny
    assert resolve_space(G, "auto") == "w"
    assert resolve_space(load("dcgan64"), "auto") == "z"
    with pytest.raises(ValueError, match="no mapping network"):
        resolve_space(load("dcgan64"), "wplus")
    with pytest.raises(ValueError, match="space"):
        ProjectOptions(space="s")
    with pytest.raises(ValueError, match="vgg-weights"):
        ProjectOptions(loss="vgg")


def test_image_measures():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 64, 64, generator=g)
    assert torch.allclose(ssim(a, a), torch.ones(2))
    assert torch.allclose(ms_ssim(a, a), torch.ones(2), atol=1e-5)
    noisy = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    noisier = (a + 0.3 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    assert (ssim(a, noisy) > ssim(a, noisier)).all()
    assert (ms_ssim(a, noisy) > ms_ssim(a, noisier)).all()
    p = psnr(a, noisy)
    assert (p > 15).all() and (p < 25).all()  # about 20 dB for sigma 0.1


@pytest.mark.slow
def test_vgg_loss_from_a_user_weights_file(tiny, tmp_path):
    G, _ = tiny
    torch.manual_seed(0)
    path = tmp_path / "vgg16.pth"
    torch.save({k: v for k, v in VGG16Features().state_dict().items() if k.startswith("features.")},
               path)  # fmt: skip
    faces = _images(G, torch.randn(1, G.z_dim), "w")
    (p,) = project(G, faces, ["v"], ProjectOptions(steps=2, space="w", loss="vgg",
                                                   vgg_weights=str(path)))  # fmt: skip
    assert p.loss_kind == "vgg" and np.isfinite(p.loss)
    bad = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a VGG16"):
        Loss("vgg", G, vgg_weights=str(bad))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_projection_agrees_with_the_cpu(tiny):
    G, _ = tiny
    faces = _images(G, torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(6)), "w")
    opts = ProjectOptions(steps=20, space="w", loss="pixel")
    cpu = project(G, faces, ["a", "b"], opts)
    gpu = project(G.to("cuda"), faces, ["a", "b"], opts, device="cuda")
    for c, g in zip(cpu, gpu, strict=True):
        assert abs(c.psnr - g.psnr) < 1.0
    mixed = project(G, faces, ["a", "b"], ProjectOptions(**{**opts.__dict__, "precision": "mixed"}),
                    device="cuda")  # fmt: skip
    assert all(np.isfinite(p.loss) for p in mixed)
