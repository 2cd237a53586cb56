"""Projection: the latent code that makes a generator reproduce each face, many at once.

A batch of B aligned faces is optimised together: each face has its own latent (W, W+ or
Z), the per-face losses are summed, so one forward and backward pass serves the batch
while every latent gets exactly the gradient it would get alone (Adam is element-wise, so
the updates stay independent too). The schedule follows NVIDIA's published projector:
start at `w_avg`, Adam (lr 0.1, betas 0.9/0.999) with a linear rampup over the first 5 % of
the steps and a cosine rampdown over the last 25 %, Gaussian noise added to the latent
that decays to zero over the first 75 % (scale 0.05 x the spread of w, squared decay),
and, when the noise maps of a StyleGAN2 are optimised too, its noise regularisation
(weight 1e5) and renormalisation.

Losses (recorded per face): `vgg`, an LPIPS-style distance on VGG16 features of 256 px
images when the user supplies VGG16 weights (none can be bundled); `disc`, the same kind
of distance on the discriminator's block features when the network file has one; else
`pixel`, mean squared error plus 1 - MS-SSIM.

A face stops early when its loss has not improved by `min_improvement` (relative) for
`patience` steps once the latent noise is small; its latent is then frozen. Every face
draws its random numbers from its own generator seeded by (seed, face key), so a face's
result does not depend on the batch it is in, and a run is deterministic for a seed on a
given device.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Final

import numpy as np
import torch
import torch.nn.functional as F

SPACES: Final = ("auto", "w", "wplus", "z")
LOSSES: Final = ("auto", "vgg", "disc", "pixel")


@dataclass(frozen=True)
class ProjectOptions:
    space: str = "auto"  # w for generators with a mapping network, z otherwise
    steps: int = 200
    batch: int = 32
    lr: float = 0.1
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    noise_start: float = 0.05  # latent noise, times the spread of w
    noise_ramp: float = 0.75
    optimize_noise: bool = False  # StyleGAN2 noise maps (then regularised, weight below)
    noise_reg: float = 1e5
    loss: str = "auto"
    vgg_weights: str | None = None
    patience: int = 30
    min_improvement: float = 1e-3
    # Start spread for generators without a mapping network: at z = 0 the bundled DCGAN's
    # first layer (no bias) feeds zeros into batch norm and ReLU, and every gradient is 0.
    z_init: float = 0.3
    w_avg_samples: int = 10_000
    seed: int = 0
    # mixed: a StyleGAN2's high-resolution blocks in float16 as the official networks train
    # (num_fp16_res); for CUDA devices, where it roughly halves the time per step.
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.steps < 1 or self.batch < 1 or self.patience < 1:
            raise ValueError("steps, batch and patience must be >= 1")
        if self.lr <= 0 or not 0 <= self.noise_ramp <= 1:
            raise ValueError("lr must be > 0 and noise_ramp in [0, 1]")
        if self.precision not in ("fp32", "mixed"):
            raise ValueError(f"precision must be fp32 or mixed, got {self.precision!r}")
        if self.loss == "vgg" and not self.vgg_weights:
            raise ValueError("loss vgg needs --vgg-weights (a VGG16 state dict)")

    def settings(self) -> dict:
        d = asdict(self)
        d.pop("batch")  # the batch size does not change a face's result
        return d

    def settings_hash(self) -> str:
        blob = repr(sorted(self.settings().items())).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class Projection:
    latent: np.ndarray  # float32 [num_ws or 1, w_dim]
    space: str
    loss_kind: str
    loss: float
    steps: int
    psnr: float
    ssim: float


# -- image measures -----------------------------------------------------------------------
def _gauss_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _ssim_parts(a: torch.Tensor, b: torch.Tensor, win: torch.Tensor):
    """Per-sample SSIM and contrast-structure terms of images in [0, 1] (valid window)."""
    c = a.shape[1]
    k = win.numel()
    wx = win.view(1, 1, 1, k).repeat(c, 1, 1, 1)
    wy = win.view(1, 1, k, 1).repeat(c, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, wx, groups=c), wy, groups=c)

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    cs = (2 * cov + c2) / (var_a + var_b + c2)
    ssim = ((2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)) * cs
    return ssim.mean(dim=(1, 2, 3)), cs.mean(dim=(1, 2, 3))


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample SSIM (Gaussian window 11, sigma 1.5) of NCHW images in [0, 1]."""
    return _ssim_parts(a, b, _gauss_window(device=a.device))[0]


_MS_WEIGHTS: Final = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample MS-SSIM of NCHW images in [0, 1]: as many of the five standard scales as
    the size allows (each at least the 11 px window), their weights renormalised."""
    win = _gauss_window(device=a.device)
    levels = 1
    while levels < 5 and min(a.shape[-2:]) // 2**levels >= win.numel():
        levels += 1
    weights = torch.tensor(_MS_WEIGHTS[:levels], device=a.device)
    weights = weights / weights.sum()
    out = torch.ones(a.shape[0], device=a.device)
    for i in range(levels):
        s, cs = _ssim_parts(a, b, win)
        # Negative contrast-structure terms would make the fractional power undefined.
        term = s if i == levels - 1 else cs
        out = out * term.clamp(min=1e-6) ** weights[i]
        if i < levels - 1:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    return out


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample PSNR in dB of NCHW images in [0, 1]."""
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3)).clamp(min=1e-10)
    return 10 * torch.log10(1.0 / mse)


# -- losses ---------------------------------------------------------------------------
def _feature_distance(fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
    """LPIPS-style: channel vectors scaled to unit length, squared difference averaged over
    positions, summed over layers (no learned weights). Per sample."""
    total = 0
    for a, b in zip(fa, fb, strict=True):
        a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
        b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
        total = total + ((a - b) ** 2).sum(dim=1).mean(dim=(1, 2))
    return total


class VGG16Features(torch.nn.Module):
    """VGG16's convolutional part, with torchvision's parameter names (`features.N.*`),
    returning the activations after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3."""

    _CFG: Final = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                   512, 512, 512)  # fmt: skip
    _TAPS: Final = (3, 8, 15, 22, 29)  # indices of the ReLUs whose outputs are used

    def __init__(self) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        cin = 3
        for v in self._CFG:
            if v == "M":
                layers.append(torch.nn.MaxPool2d(2, 2))
            else:
                layers += [torch.nn.Conv2d(cin, v, 3, padding=1), torch.nn.ReLU(inplace=False)]
                cin = v
        self.features = torch.nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    @classmethod
    def from_file(cls, path: str) -> VGG16Features:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if k.startswith("features.")}
        net = cls()
        missing = net.load_state_dict(state, strict=False).missing_keys
        missing = [k for k in missing if k not in ("mean", "std")]
        if missing:
            raise ValueError(f"{path}: not a VGG16 state dict (missing {missing[:3]} ...)")
        return net.eval()

    def forward(self, img01: torch.Tensor) -> list[torch.Tensor]:
        x = (img01 - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._TAPS:
                out.append(x)
            if i >= self._TAPS[-1]:
                break
        return out


class Loss:
    """The distance between generated and target images (NCHW, [-1, 1]), per sample."""

    def __init__(self, kind: str, G, D=None, vgg_weights: str | None = None) -> None:
        if kind == "auto":
            kind = "vgg" if vgg_weights else ("disc" if D is not None else "pixel")
        if kind == "disc" and D is None:
            raise ValueError("loss disc needs a network file with a discriminator")
        self.kind = kind
        self.D = D
        self.vgg = VGG16Features.from_file(vgg_weights) if kind == "vgg" else None
        self._target_features: list[torch.Tensor] | None = None

    def to(self, device) -> Loss:
        if self.vgg is not None:
            self.vgg = self.vgg.to(device)
        if self.D is not None:
            self.D = self.D.to(device)
        return self

    def _features(self, img: torch.Tensor) -> list[torch.Tensor]:
        if self.kind == "vgg":
            x = (img + 1) / 2
            if x.shape[-1] > 256:
                x = F.interpolate(x, size=(256, 256), mode="area")
            elif x.shape[-1] < 256:
                x = F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False)
            return self.vgg(x)
        return self.D.features(img)

    def set_target(self, target: torch.Tensor) -> None:
        self.target = target
        if self.kind in ("vgg", "disc"):
            with torch.no_grad():
                self._target_features = [f.detach() for f in self._features(target)]

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.kind == "pixel":
            mse = ((img - self.target) ** 2).mean(dim=(1, 2, 3))
            return mse + (1 - ms_ssim((img + 1) / 2, (self.target + 1) / 2))
        return _feature_distance(self._features(img), self._target_features)


# -- the optimisation -----------------------------------------------------------------
_W_STATS: dict[tuple[int, str, int, int], tuple[torch.Tensor, float]] = {}


def w_stats(G, n: int, seed: int, device) -> tuple[torch.Tensor, float]:
    """(w_avg, spread) of the latent space: the mean of n mapped samples and the root of
    the summed variance (cached per generator), or the prior's for generators w = z."""
    if not G.has_mapping:
        return G.w_avg.detach().to(device), math.sqrt(G.z_dim)
    key = (id(G), str(device), n, seed)
    if key not in _W_STATS:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        z = torch.randn(n, G.z_dim, generator=gen).to(device)
        with torch.no_grad():
            w = G.mapping(z, truncation_psi=1.0)[:, :1, :]
        avg = w.mean(dim=0, keepdim=True)
        spread = float(((w - avg) ** 2).sum() / n) ** 0.5
        _W_STATS[key] = (avg[0, 0], spread)
    return _W_STATS[key]


def face_seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") >> 1


def resolve_space(G, space: str) -> str:
    if space == "auto":
        return "w" if G.has_mapping else "z"
    if space in ("w", "wplus") and not G.has_mapping:
        raise ValueError(f"{G.kind} has no mapping network: project into z")
    if space == "z" and G.has_mapping:
        raise ValueError("z projection is for generators without a mapping network (use w)")
    return space


def to_tensor(faces: list[np.ndarray], resolution: int, device) -> torch.Tensor:
    """uint8 HxWx3 faces to an NCHW float batch in [-1, 1] at the generator's size."""
    x = torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).float().to(device) / 127.5 - 1
    if x.shape[-1] != resolution:
        mode = "area" if x.shape[-1] > resolution else "bilinear"
        kw = {} if mode == "area" else {"align_corners": False}
        x = F.interpolate(x, size=(resolution, resolution), mode=mode, **kw)
    return x


def project(G, faces: list[np.ndarray], keys: list[str], opts: ProjectOptions, D=None,
            device: str | torch.device = "cpu") -> list[Projection]:  # fmt: skip
    """Project `faces` (uint8 RGB, aligned for G) into G's latent space, as one batch.

    `keys` (e.g. face ids) seed each face's random numbers. Returns one Projection per face.
    """
    if len(faces) != len(keys):
        raise ValueError("one key per face")
    if not faces:
        return []
    device = torch.device(device)
    G = G.to(device).eval()
    for p in G.parameters():
        p.requires_grad_(False)
    space = resolve_space(G, opts.space)
    loss_fn = Loss(opts.loss, G, D, opts.vgg_weights).to(device)
    target = to_tensor(faces, G.resolution, device)
    loss_fn.set_target(target)
    n = len(faces)
    gens = [torch.Generator(device="cpu").manual_seed(face_seed(opts.seed, k)) for k in keys]

    def randn(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device)

    w_avg, w_spread = w_stats(G, opts.w_avg_samples, opts.seed, device)
    layers = G.num_ws if space == "wplus" else 1
    start = w_avg.view(1, 1, -1).repeat(n, layers, 1)
    if space == "z":
        start = start + opts.z_init * randn((1, G.z_dim))
    latent = start.clone().requires_grad_(True)
    params = [latent]
    noise_maps: list[torch.Tensor] = []
    if opts.optimize_noise and G.noise_buffers():
        noise_maps = [randn((1, *b.shape)).requires_grad_(True) for b in G.noise_buffers()]
        params += noise_maps
    optimizer = torch.optim.Adam(params, lr=opts.lr, betas=(0.9, 0.999))

    mixed = opts.precision == "mixed" and G.kind == "stylegan2"

    def synth(lat: torch.Tensor, noise: list[torch.Tensor] | None) -> torch.Tensor:
        ws = lat.repeat(1, G.num_ws, 1) if lat.shape[1] == 1 else lat
        extra: dict = {"force_fp32": False} if mixed else {}
        if noise:
            extra["noise_inputs"] = noise
        return G.synthesis(ws, noise_mode="const", **extra).float()

    best = torch.full((n,), math.inf, device=device)
    since_best = torch.zeros(n, dtype=torch.long, device=device)
    active = torch.ones(n, dtype=torch.bool, device=device)
    steps_used = torch.full((n,), opts.steps, dtype=torch.long, device=device)
    last_loss = torch.zeros(n, device=device)
    for step in range(opts.steps):
        t = step / opts.steps
        lr_ramp = min(1.0, (1.0 - t) / opts.lr_rampdown) if opts.lr_rampdown > 0 else 1.0
        lr_ramp = 0.5 - 0.5 * math.cos(lr_ramp * math.pi)
        lr_ramp *= min(1.0, t / opts.lr_rampup) if opts.lr_rampup > 0 else 1.0
        for group in optimizer.param_groups:
            group["lr"] = opts.lr * lr_ramp
        fade = max(0.0, 1.0 - t / opts.noise_ramp) if opts.noise_ramp > 0 else 0.0
        noise_scale = w_spread * opts.noise_start * fade**2
        jitter = randn(tuple(latent.shape[1:])) * noise_scale if noise_scale > 0 else 0
        img = synth(latent + jitter, noise_maps)
        dist = loss_fn(img)
        total = dist.clone()
        if noise_maps:
            total = total + opts.noise_reg * _noise_reg(noise_maps)
        before = latent.detach().clone()
        optimizer.zero_grad(set_to_none=True)
        total.sum().backward()
        optimizer.step()
        with torch.no_grad():
            # Frozen faces keep their latent: Adam's momentum would still move them.
            latent[~active] = before[~active]
            for m in noise_maps:
                m -= m.mean(dim=(1, 2, 3), keepdim=True)
                m /= m.square().mean(dim=(1, 2, 3), keepdim=True).sqrt()
            d = dist.detach()
            last_loss = torch.where(active, d, last_loss)
            improved = d < best * (1 - opts.min_improvement)
            best = torch.where(improved & active, d, best)
            since_best = torch.where(improved, torch.zeros_like(since_best), since_best + 1)
            if fade < 0.5:  # the latent noise is small enough for the loss to mean something
                stop = active & (since_best >= opts.patience)
                steps_used = torch.where(stop, torch.full_like(steps_used, step + 1), steps_used)
                active &= ~stop
        if not bool(active.any()):
            break

    with torch.no_grad():
        final = synth(latent, None).clamp(-1, 1)
        a, b = (final + 1) / 2, (target + 1) / 2
        p, s = psnr(a, b), ssim(a, b)
        final_loss = loss_fn(final)
    out = []
    lat = latent.detach().to("cpu").float().numpy()
    for i in range(n):
        out.append(Projection(lat[i].copy(), space, loss_fn.kind, float(final_loss[i]),
                              int(steps_used[i]), float(p[i]), float(s[i])))  # fmt: skip
    return out


def _noise_reg(maps: list[torch.Tensor]) -> torch.Tensor:
    """StyleGAN2's noise regularisation, per sample: squared autocorrelation of each map at
    one pixel's shift, in both directions, over a pyramid down to 8x8."""
    reg = 0
    for m in maps:
        x = m
        while True:
            reg = reg + (x * torch.roll(x, 1, dims=3)).mean(dim=(1, 2, 3)) ** 2
            reg = reg + (x * torch.roll(x, 1, dims=2)).mean(dim=(1, 2, 3)) ** 2
            if x.shape[-1] <= 8:
                break
            x = F.avg_pool2d(x, 2)
    return reg
