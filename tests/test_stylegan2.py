"""StyleGAN2 generator and discriminator against the official implementation's numbers.

tests/data/stylegan2_tiny_reference.npz holds a small network's weights under the official
names and the outputs NVIDIA's code computed from them (see /work/shared/fixtures/README.md);
every output must match to 1e-5 relative L2 in float32.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from faceatlas.gan.stylegan2 import (
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    downsample2d,
    setup_filter,
    upsample2d,
)

FIXTURE = Path(__file__).parent / "data" / "stylegan2_tiny_reference.npz"
TOL = 1e-5

# The official FFHQ 1024 configuration (G.init_kwargs of the stylegan2-ada FFHQ pickle).
FFHQ_G = dict(
    z_dim=512,
    c_dim=0,
    w_dim=512,
    img_resolution=1024,
    img_channels=3,
    mapping_kwargs={"num_layers": 8},
    synthesis_kwargs={
        "channel_base": 32768,
        "channel_max": 512,
        "num_fp16_res": 4,
        "conv_clamp": 256,
    },
)
FFHQ_D = dict(
    c_dim=0,
    img_resolution=1024,
    img_channels=3,
    channel_base=32768,
    channel_max=512,
    num_fp16_res=4,
    conv_clamp=256,
    epilogue_kwargs={"mbstd_group_size": 4},
)


def rel_err(got: torch.Tensor, want: np.ndarray) -> float:
    want_t = torch.from_numpy(want)
    return float((got.detach() - want_t).norm() / want_t.norm())


def state(npz: np.lib.npyio.NpzFile, prefix: str) -> dict[str, torch.Tensor]:
    return {
        k[len(prefix) :]: torch.from_numpy(npz[k].copy()) for k in npz.files if k.startswith(prefix)
    }


@pytest.fixture(scope="module")
def ref() -> dict:
    npz = np.load(FIXTURE)
    meta = json.loads(bytes(npz["meta_json"]).decode())
    expected = {k[len("expected.") :]: npz[k] for k in npz.files if k.startswith("expected.")}
    return {"meta": meta, "G": state(npz, "G."), "D": state(npz, "D."), "expected": expected}


def load_g(ref: dict, **overrides: object) -> StyleGAN2Generator:
    kwargs = copy.deepcopy(ref["meta"]["G_init_kwargs"])
    kwargs["synthesis_kwargs"].update(overrides)
    g = StyleGAN2Generator(**kwargs).eval()
    g.load_state_dict(ref["G"], strict=True)
    return g


def load_d(ref: dict, **overrides: object) -> StyleGAN2Discriminator:
    d = StyleGAN2Discriminator(**{**ref["meta"]["D_init_kwargs"], **overrides}).eval()
    d.load_state_dict(ref["D"], strict=True)
    return d


def run_all(g: StyleGAN2Generator, d: StyleGAN2Discriminator, ref: dict) -> dict:
    z = torch.from_numpy(ref["expected"]["z"])
    with torch.no_grad():
        ws = g.mapping(z, None, truncation_psi=1)
        ws07 = g.mapping(z, None, truncation_psi=0.7)
        mixed = ws.clone()
        mixed[:, 4:8] = ws.flip(0)[:, 4:8]
        return {
            "ws": ws,
            "ws07": ws07,
            "img": g.synthesis(ws, noise_mode="const"),
            "img07": g.synthesis(ws07, noise_mode="const"),
            "img_noise_none": g.synthesis(ws, noise_mode="none"),
            "ws_mixed": mixed,
            "img_mixed": g.synthesis(mixed, noise_mode="const"),
            "dlogits": d(torch.from_numpy(ref["expected"]["img"])),
        }


@pytest.fixture(scope="module")
def nets(ref: dict) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator]:
    return load_g(ref), load_d(ref)


@pytest.fixture(scope="module")
def outputs(ref: dict, nets: tuple) -> dict:
    return run_all(*nets, ref)


# -- the fixture ----------------------------------------------------------------------------
def test_official_names_load_strictly(ref: dict, nets: tuple) -> None:
    g, d = nets
    assert set(g.state_dict()) == set(ref["G"])
    assert set(d.state_dict()) == set(ref["D"])
    broken = dict(ref["G"])
    broken.pop("synthesis.b8.conv0.affine.bias")
    with pytest.raises(RuntimeError, match="Missing key"):
        StyleGAN2Generator(**ref["meta"]["G_init_kwargs"]).load_state_dict(broken, strict=True)


@pytest.mark.parametrize(
    "name",
    ["ws", "ws07", "img", "img07", "img_noise_none", "ws_mixed", "img_mixed", "dlogits"],
)
def test_matches_official_outputs(name: str, ref: dict, outputs: dict) -> None:
    want = ref["expected"][name]
    assert tuple(outputs[name].shape) == want.shape
    assert rel_err(outputs[name], want) <= TOL


def test_one_perturbed_weight_breaks_the_match(ref: dict) -> None:
    # The tolerance is tight enough to notice one weight off by a tenth of its layer's spread.
    for net, key, outs in (
        ("G", "synthesis.b16.conv0.weight", ("img", "img07", "img_mixed")),
        ("G", "mapping.fc3.weight", ("ws", "ws07", "img")),
        ("D", "b16.conv1.weight", ("dlogits",)),
    ):
        g, d = load_g(ref), load_d(ref)
        target = g if net == "G" else d
        with torch.no_grad():
            p = target.get_parameter(key)
            p.view(-1)[0] += 0.1 * p.std().clamp_min(1e-3)
        got = run_all(g, d, ref)
        for name in outs:
            assert rel_err(got[name], ref["expected"][name]) > TOL, (key, name)


def test_fused_and_unfused_modulation_agree(ref: dict, nets: tuple, outputs: dict) -> None:
    g, _ = nets
    with torch.no_grad():
        img = g.synthesis(outputs["ws"], fused_modconv=False)
    assert rel_err(img, ref["expected"]["img"]) <= TOL


def test_whole_generator_and_truncation_cutoff(ref: dict, nets: tuple) -> None:
    g, _ = nets
    z = torch.from_numpy(ref["expected"]["z"])
    with torch.no_grad():
        assert rel_err(g(z, truncation_psi=0.7), ref["expected"]["img07"]) <= TOL
        ws = g.mapping(z, truncation_psi=0.5, truncation_cutoff=3)
    full = torch.from_numpy(ref["expected"]["ws"])
    assert torch.allclose(ws[:, 3:], full[:, 3:])
    assert torch.allclose(ws[:, :3], g.w_avg + 0.5 * (full[:, :3] - g.w_avg), atol=1e-5)


def test_float16_path_is_close_to_float32(ref: dict) -> None:
    g = load_g(ref, num_fp16_res=2)
    assert [g.synthesis.b16.use_fp16, g.synthesis.b32.use_fp16, g.synthesis.b8.use_fp16] == [
        True,
        True,
        False,
    ]
    ws = torch.from_numpy(ref["expected"]["ws"])
    with torch.no_grad():
        img16 = g.synthesis(ws, force_fp32=False)
        img32 = g.synthesis(ws)
        one16 = g.synthesis(ws[:1], force_fp32=False)  # the fused path of a batch of one
    assert img16.dtype == torch.float32
    assert rel_err(img32, ref["expected"]["img"]) <= TOL
    assert 0 < rel_err(img16, ref["expected"]["img"]) < 5e-3
    assert rel_err(one16, ref["expected"]["img"][:1]) < 5e-3
    d = load_d(ref, num_fp16_res=2)
    with torch.no_grad():
        logits16 = d(torch.from_numpy(ref["expected"]["img"]), force_fp32=False)
    assert rel_err(logits16, ref["expected"]["dlogits"]) < 1e-2


# -- the discriminator's features -------------------------------------------------------
def test_features_shapes_and_rows_stay_apart(ref: dict, nets: tuple) -> None:
    _, d = nets
    img = torch.from_numpy(ref["expected"]["img"])
    with torch.no_grad():
        feats = d.features(img)
        first = d.features(img[:1])
    assert [tuple(f.shape) for f in feats] == [(4, 64, 16, 16), (4, 64, 8, 8), (4, 64, 4, 4)]
    assert all(f.dtype == torch.float32 for f in feats)
    for a, b in zip(feats, first, strict=True):
        assert torch.allclose(a[:1], b, atol=1e-6)


def test_nan_image_stays_in_its_row(ref: dict, nets: tuple) -> None:
    g, d = nets
    ws = torch.from_numpy(ref["expected"]["ws"]).clone()
    ws[1, 2, 0] = float("nan")
    with torch.no_grad():
        img = g.synthesis(ws)
        feats = d.features(img)
    assert torch.isnan(img[1]).all()
    assert torch.isfinite(img[[0, 2, 3]]).all()
    assert torch.isfinite(feats[-1][[0, 2, 3]]).all()


# -- the official FFHQ configuration --------------------------------------------------------
def test_ffhq_1024_config_builds_with_official_sizes() -> None:
    g = StyleGAN2Generator(**copy.deepcopy(FFHQ_G))
    assert (g.num_ws, g.resolution, g.z_dim, g.w_dim) == (18, 1024, 512, 512)
    assert (g.kind, g.alignment) == ("stylegan2", "ffhq")
    # Totals that the official code's module summary prints for this configuration.
    assert sum(p.numel() for p in g.parameters()) == 30_370_060
    assert sum(b.numel() for b in g.buffers()) == 2_797_104
    assert [r for r in g.synthesis.block_resolutions if getattr(g.synthesis, f"b{r}").use_fp16] == [
        128,
        256,
        512,
        1024,
    ]
    noise = g.noise_buffers()
    assert len(noise) == 17
    assert tuple(noise[0].shape) == (4, 4) and tuple(noise[-1].shape) == (1024, 1024)
    assert tuple(g.w_avg.shape) == (512,)
    kwargs = g.init_kwargs()
    assert kwargs == FFHQ_G and json.loads(json.dumps(kwargs)) == FFHQ_G
    kwargs["synthesis_kwargs"]["channel_max"] = 1  # a copy: the network keeps its own
    assert g.init_kwargs() == FFHQ_G
    d = StyleGAN2Discriminator(**copy.deepcopy(FFHQ_D))
    assert sum(p.numel() for p in d.parameters()) == 29_012_513
    assert sum(b.numel() for b in d.buffers()) == 544


# -- other configurations -----------------------------------------------------------------
@pytest.mark.parametrize("architecture", ["orig", "skip", "resnet"])
def test_small_networks_run_in_every_architecture(architecture: str) -> None:
    torch.manual_seed(0)
    g = StyleGAN2Generator(
        z_dim=16,
        c_dim=0,
        w_dim=16,
        img_resolution=16,
        img_channels=3,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={
            "channel_base": 256,
            "channel_max": 32,
            "architecture": architecture,
            "conv_clamp": 256,
        },
    ).eval()
    d = StyleGAN2Discriminator(
        c_dim=0,
        img_resolution=16,
        img_channels=3,
        channel_base=256,
        channel_max=32,
        architecture=architecture,
    ).eval()
    with torch.no_grad():
        img = g(torch.randn(2, 16))
        again = g.synthesis(g.mapping(torch.randn(2, 16)), noise_mode="random")
        logits = d(img)
    assert (
        g.num_ws == 6
        and tuple(img.shape) == (2, 3, 16, 16)
        and tuple(again.shape) == (2, 3, 16, 16)
    )
    assert torch.isfinite(img).all() and tuple(logits.shape) == (2, 1)
    assert {k.split(".")[1] for k in g.state_dict() if ".torgb." in k} == (
        {"b4", "b8", "b16"} if architecture == "skip" else {"b16"}
    )
    assert any(".skip." in k for k in g.state_dict()) == (architecture == "resnet")


def test_random_noise_changes_the_image_const_does_not(nets: tuple, outputs: dict) -> None:
    g, _ = nets
    ws = outputs["ws"]
    with torch.no_grad():
        a = g.synthesis(ws, noise_mode="random")
        b = g.synthesis(ws, noise_mode="random")
        c = g.synthesis(ws, noise_mode="const")
    assert not torch.allclose(a, b)
    assert torch.equal(c, outputs["img"])


def test_conditional_networks_use_the_label() -> None:
    torch.manual_seed(1)
    g = StyleGAN2Generator(
        z_dim=8,
        c_dim=3,
        w_dim=8,
        img_resolution=8,
        img_channels=3,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 64, "channel_max": 8},
    ).eval()
    d = StyleGAN2Discriminator(
        c_dim=3, img_resolution=8, img_channels=3, channel_base=64, channel_max=8
    ).eval()
    assert "mapping.embed.weight" in g.state_dict() and "mapping.embed.weight" in d.state_dict()
    z = torch.randn(2, 8)
    c0, c1 = torch.eye(3)[[0, 0]], torch.eye(3)[[1, 1]]
    with torch.no_grad():
        assert not torch.allclose(g.mapping(z, c0), g.mapping(z, c1))
        img = g(z, c0)
        assert not torch.allclose(d(img, c0), d(img, c1))
    with pytest.raises(ValueError, match="conditional"):
        g.mapping(z)
    with pytest.raises(ValueError, match="conditional"):
        d(img)


def test_fir_resampling_keeps_a_constant_signal() -> None:
    f = setup_filter([1, 3, 3, 1])
    assert torch.allclose(f.sum(), torch.tensor(1.0))
    ones = torch.ones(1, 2, 8, 8)
    up = upsample2d(ones, f)
    down = downsample2d(ones, f)
    assert tuple(up.shape) == (1, 2, 16, 16) and tuple(down.shape) == (1, 2, 4, 4)
    # Away from the zero-padded border the filters keep DC exactly.
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.ones(1, 2, 12, 12))
    assert torch.allclose(down[..., 1:-1, 1:-1], torch.ones(1, 2, 2, 2))


# -- bad arguments ------------------------------------------------------------------------
def test_bad_arguments_raise_value_error(ref: dict, nets: tuple, outputs: dict) -> None:
    g, d = nets
    ws = outputs["ws"]
    kwargs = ref["meta"]["G_init_kwargs"]
    cases = [
        (lambda: g.synthesis(ws, noise_mode="loud"), "noise_mode"),
        (lambda: g.synthesis(ws[:, :5]), "ws must be"),
        (lambda: g.mapping(torch.zeros(2, 3)), "z must be"),
        (lambda: g.mapping(torch.zeros(2, 64), 0.7), "truncation_psi by keyword"),
        (
            lambda: g.mapping(torch.zeros(2, 64), truncation_psi=0.5, truncation_cutoff=99),
            "truncation_cutoff",
        ),
        (lambda: d(torch.zeros(4, 3, 16, 16)), "img must be"),
        (lambda: d(torch.zeros(6, 3, 32, 32)), "multiple of 4"),
        (lambda: StyleGAN2Generator(**{**kwargs, "img_resolution": 48}), "power of two"),
        (
            lambda: StyleGAN2Generator(**{**kwargs, "synthesis_kwargs": {"architecture": "unet"}}),
            "architecture",
        ),
        (lambda: StyleGAN2Generator(**{**kwargs, "synthesis_kwargs": {"colour": 1}}), "unknown"),
        (
            lambda: StyleGAN2Generator(**{**kwargs, "mapping_kwargs": {"activation": "gelu"}}),
            "activation",
        ),
        (lambda: StyleGAN2Discriminator(c_dim=0, img_resolution=4, img_channels=3), ">= 8"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
