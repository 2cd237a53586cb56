"""StyleGAN2 (ADA) generator and discriminator in plain PyTorch, able to run NVIDIA's pickles.

The projection stage needs NVIDIA's FFHQ networks (stylegan2-ada-pytorch, whose pickles hold
`G_ema` and `D` with their `init_kwargs`), but that code loads custom CUDA kernels and code
from inside the pickle. This module is an independent implementation written from the
published architecture: standard torch ops only (conv2d, conv_transpose2d, F.pad), an
upfirdn2d of our own, no code from a pickle. Module, parameter and buffer names follow the
official ones, so a state dict from an official network loads with `strict=True`; the test
suite proves it against tests/data/stylegan2_tiny_reference.npz, a network built and run by
the official code (every output within 1e-5 relative L2 in float32).

What the official code does and we do the same way:

- Mapping: z (and an embedded label, when c_dim > 0) normalised to unit second moment
  (eps 1e-8), `num_layers` fully connected lrelu layers with equalised learning rate
  (weight gain lr_multiplier / sqrt(fan_in), bias gain lr_multiplier, default 0.01), output
  broadcast to `num_ws` rows; truncation is `w_avg.lerp(w, psi)` on the first
  `truncation_cutoff` rows (all when None).
- Synthesis: a learned 4x4 constant, then per resolution a block of modulated 3x3
  convolutions (the first one upsampling x2 by a transposed convolution and the [1,3,3,1]
  FIR filter), demodulation with eps 1e-8, per-pixel noise times a learned strength, bias,
  lrelu (slope 0.2) times sqrt(2). Architecture 'skip' (FFHQ) sums upsampled tRGB outputs;
  'orig' has a tRGB at the last block only; 'resnet' adds a 1x1 upsampling skip and scales
  both paths by sqrt(0.5).
- conv_clamp: the official bias-and-activation op clamps to +-conv_clamp * gain whenever a
  layer was given a conv_clamp, whatever its dtype; the networks pass conv_clamp to every
  synthesis layer, tRGB, and the discriminator's main convolutions and epilogue convolution
  (not to 1x1 skips, fully connected layers or the epilogue's fromrgb). We clamp in the
  same places, in float32 too.
- Discriminator ('resnet' for FFHQ): fromrgb, two 3x3 convolutions (the second downsampling
  with the FIR filter and stride 2), a 1x1 downsampling skip, both paths times sqrt(0.5);
  then the epilogue: minibatch standard deviation (group size 4 by default; a group is
  every (N/G)-th sample, as the official reshape makes it), a 3x3 convolution, two fully
  connected layers; with labels, a projection onto the mapped label.

Differences, on purpose:

- `w_avg` is never updated: the official mapping tracks it in training mode; this module is
  for inference and projection, where silently moving the truncation centre would be a bug.
- Precision: `force_fp32=True` (the default) runs every layer in float32, which is what the
  fixture and the official float32 reference do. With `force_fp32=False` the blocks that the
  config marks as fp16 (the `num_fp16_res` highest resolutions, not below 8) run in float16
  as the official GPU code does: weights and styles pre-normalised by their max before
  modulation, per-sample scaling instead of a grouped convolution when the batch is larger
  than one, clamping at conv_clamp keeps activations in range, and tRGB output is returned in
  float32. It is meant for a CUDA device (CPU float16 works but is slow) and its images
  differ from float32 by about 1e-3 relative.
- Layers frozen for training (`freeze_layers`) and channels-last memory formats are
  accepted in the kwargs and ignored: they change neither the state dict names nor numbers.

Bad input: wrong shapes, unknown noise modes or architectures raise ValueError. NaN values are
not checked: a NaN in a row of z or ws makes that image NaN (rows never mix in the generator);
in the discriminator, the minibatch-std layer mixes a group, so one NaN image turns the logits
of its whole group NaN, while `features()` keeps rows apart.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from faceatlas.gan.base import GeneratorBase

__all__ = [
    "ACTIVATIONS",
    "MappingNetwork",
    "StyleGAN2Discriminator",
    "StyleGAN2Generator",
    "SynthesisNetwork",
    "conv2d_resample",
    "downsample2d",
    "modulated_conv2d",
    "setup_filter",
    "upfirdn2d",
    "upsample2d",
]

_SQRT2 = math.sqrt(2.0)
_SQRT_HALF = math.sqrt(0.5)
_ARCHITECTURES = ("orig", "skip", "resnet")
_NOISE_MODES = ("random", "const", "none")
_DEFAULT_FILTER = (1, 3, 3, 1)

# name -> (function of x, default gain); the gains keep the signal's magnitude, as the
# official op does (lrelu's slope is 0.2).
ACTIVATIONS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], float]] = {
    "linear": (lambda x: x, 1.0),
    "relu": (F.relu, _SQRT2),
    "lrelu": (lambda x: F.leaky_relu(x, 0.2), _SQRT2),
    "tanh": (torch.tanh, 1.0),
    "sigmoid": (torch.sigmoid, 1.0),
    "elu": (F.elu, 1.0),
    "selu": (F.selu, 1.0),
    "softplus": (F.softplus, 1.0),
    "swish": (lambda x: torch.sigmoid(x) * x, _SQRT2),
}


def _check_activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}")
    return name


def _bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None,
    act: str = "linear",
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """Bias, activation, gain (the activation's default when None), then clamp to +-clamp."""
    func, def_gain = ACTIVATIONS[act]
    if b is not None:
        x = x + b.to(x.dtype).reshape([1, -1] + [1] * (x.ndim - 2))
    x = func(x)
    gain = def_gain if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


# -- FIR resampling -------------------------------------------------------------------------
def setup_filter(taps: Sequence[float] | torch.Tensor = _DEFAULT_FILTER) -> torch.Tensor:
    """A 2D low-pass filter from 1D taps (outer product) or a 2D array, normalised to sum 1."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    if f.ndim == 1:
        f = torch.outer(f, f)
    if f.ndim != 2 or f.numel() == 0 or float(f.sum()) == 0.0:
        raise ValueError(f"a resample filter needs 1D or 2D taps with a non-zero sum, got {taps}")
    return f / f.sum()


def _pad4(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    if isinstance(padding, int):
        return padding, padding, padding, padding
    p = tuple(int(v) for v in padding)
    if len(p) == 2:
        return p[0], p[0], p[1], p[1]
    if len(p) == 4:
        return p
    raise ValueError(f"padding must be an int, [x, y] or [x0, x1, y0, y1], got {padding}")


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    gain: float = 1.0,
    flip_filter: bool = False,
) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative = crop), convolve each channel with the 2D
    filter `f` scaled by `gain`, keep every `down`-th pixel. `padding` is [x0, x1, y0, y1]
    (or one int, or [x, y]) in upsampled pixels; flip_filter=False is a true convolution."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d needs an NCHW tensor, got shape {tuple(x.shape)}")
    if f.ndim != 2:
        raise ValueError(f"upfirdn2d needs a 2D filter, got shape {tuple(f.shape)}")
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got {up}, {down}")
    n, c, h, w = x.shape
    px0, px1, py0, py1 = _pad4(padding)
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    k = (f * gain).to(x.dtype)
    if not flip_filter:
        k = k.flip([0, 1])
    k = k[None, None].repeat(c, 1, 1, 1)
    # A strided depthwise convolution computes exactly the kept pixels of the full one.
    return F.conv2d(x, k, stride=down, groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """x `up` times larger: zero insertion and the filter, gain up^2 so DC is kept."""
    fh, fw = f.shape
    pad = ((fw + up - 1) // 2, (fw - up) // 2, (fh + up - 1) // 2, (fh - up) // 2)
    return upfirdn2d(x, f, up=up, padding=pad, gain=up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2) -> torch.Tensor:
    """x `down` times smaller: the filter, then every `down`-th pixel."""
    fh, fw = f.shape
    pad = ((fw - down + 1) // 2, (fw - down) // 2, (fh - down + 1) // 2, (fh - down) // 2)
    return upfirdn2d(x, f, down=down, padding=pad)


def _conv(
    x: torch.Tensor,
    w: torch.Tensor,
    stride: int = 1,
    padding: int | tuple[int, int] = 0,
    groups: int = 1,
    transpose: bool = False,
    flip_weight: bool = True,
) -> torch.Tensor:
    # torch's conv2d is a correlation; flip_weight=False asks for a true convolution.
    if not flip_weight and (w.shape[2] > 1 or w.shape[3] > 1):
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    groups: int = 1,
    flip_weight: bool = True,
) -> torch.Tensor:
    """Convolution with x2-style resampling, padded once up front; `padding` is relative to
    the upsampled image. Up- and downsampling in one call are not supported (unused)."""
    if up > 1 and down > 1:
        raise ValueError("conv2d_resample does either up- or downsampling, not both")
    if (up > 1 or down > 1) and f is None:
        raise ValueError("resampling needs a filter")
    out_ch, in_per_group, kh, kw = w.shape
    px0 = px1 = py0 = py1 = padding
    if up > 1:
        fh, fw = f.shape
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        fh, fw = f.shape
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2
    pads = (px0, px1, py0, py1)

    if down > 1:
        if kh == 1 and kw == 1:
            # 1x1: shrink first, convolve the smaller image.
            x = upfirdn2d(x, f, down=down, padding=pads)
            return _conv(x, w, groups=groups, flip_weight=flip_weight)
        x = upfirdn2d(x, f, padding=pads)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    if up > 1:
        if kh == 1 and kw == 1:
            x = _conv(x, w, groups=groups, flip_weight=flip_weight)
            return upfirdn2d(x, f, up=up, padding=pads, gain=up * up)
        # A transposed strided convolution does zero insertion and the kernel in one op; its
        # weight layout is [in, out/groups, kh, kw].
        if groups == 1:
            wt = w.transpose(0, 1)
        else:
            wt = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
            wt = wt.reshape(groups * in_per_group, out_ch // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = _conv(
            x,
            wt,
            stride=up,
            padding=(pyt, pxt),
            groups=groups,
            transpose=True,
            flip_weight=not flip_weight,
        )
        pads = (px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt)
        return upfirdn2d(x, f, padding=pads, gain=up * up)

    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=(py0, px0), groups=groups, flip_weight=flip_weight)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    return _conv(x, w, groups=groups, flip_weight=flip_weight)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused: bool = True,
) -> torch.Tensor:
    """Convolution whose input channels are scaled per sample by `styles` [N, I], output
    channels optionally demodulated to unit norm (eps 1e-8), then `noise` added. `fused`
    runs one grouped convolution with per-sample weights; otherwise the activations are
    scaled before and after a shared convolution (same result, better for large batches)."""
    n = x.shape[0]
    _, in_ch, kh, kw = weight.shape
    if styles.shape != (n, in_ch):
        raise ValueError(f"styles must be [{n}, {in_ch}], got {tuple(styles.shape)}")
    if x.dtype == torch.float16 and demodulate:
        # Keep the float16 products in range; demodulation cancels the scale.
        weight = weight * (
            1 / math.sqrt(in_ch * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True)
        )
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    w = None
    dcoefs = None
    if demodulate or fused:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
    if demodulate and fused:
        w = w * dcoefs.reshape(n, -1, 1, 1, 1)

    if not fused:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = conv2d_resample(
            x,
            weight.to(x.dtype),
            f=resample_filter,
            up=up,
            padding=padding,
            flip_weight=flip_weight,
        )
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x

    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_ch, kh, kw)
    x = conv2d_resample(
        x,
        w.to(x.dtype),
        f=resample_filter,
        up=up,
        padding=padding,
        groups=n,
        flip_weight=flip_weight,
    )
    x = x.reshape(n, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


# -- layers -------------------------------------------------------------------------------
class FullyConnectedLayer(nn.Module):
    """Dense layer with equalised learning rate: weights stored as N(0, 1) / lr_multiplier and
    scaled by lr_multiplier / sqrt(in_features) at run time, bias scaled by lr_multiplier."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.activation = _check_activation(activation)
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return _bias_act(x.matmul(w.t()), b, act=self.activation)


class Conv2dLayer(nn.Module):
    """Convolution with equalised learning rate, optional x2 resampling, bias, activation and
    clamp (the discriminator's layers and the generator's resnet skips)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        down: int = 1,
        resample_filter: Sequence[float] = _DEFAULT_FILTER,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.activation = _check_activation(activation)
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = ACTIVATIONS[activation][1]
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        )
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight * self.weight_gain
        x = conv2d_resample(
            x,
            w.to(x.dtype),
            f=self.resample_filter,
            up=self.up,
            down=self.down,
            padding=self.padding,
            flip_weight=self.up == 1,
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return _bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class MappingNetwork(nn.Module):
    """z (and label c) -> w, broadcast to [N, num_ws, w_dim]; see the module docstring."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 8,
        embed_features: int | None = None,
        layer_features: int | None = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if z_dim < 0 or c_dim < 0 or z_dim + c_dim == 0:
            raise ValueError(f"need z_dim >= 0, c_dim >= 0 and one > 0, got {z_dim}, {c_dim}")
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        widths = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for i in range(num_layers):
            layer = FullyConnectedLayer(
                widths[i], widths[i + 1], activation=activation, lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{i}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor | None,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        if c is not None and not isinstance(c, torch.Tensor):
            raise ValueError(
                f"c must be a label tensor or None, got {type(c).__name__}; "
                "pass truncation_psi by keyword"
            )
        x = None
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                shape = None if z is None else tuple(z.shape)
                raise ValueError(f"z must be [N, {self.z_dim}], got {shape}")
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                shape = None if c is None else tuple(c.shape)
                raise ValueError(
                    f"this network is conditional: c must be [N, {self.c_dim}], got {shape}"
                )
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if not hasattr(self, "w_avg"):
                raise ValueError("truncation needs w_avg, which this mapping does not track")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                if not 0 <= truncation_cutoff <= self.num_ws:
                    raise ValueError(
                        f"truncation_cutoff must be in [0, {self.num_ws}], got {truncation_cutoff}"
                    )
                head = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
                x = torch.cat([head, x[:, truncation_cutoff:]], dim=1)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally upsampling x2), noise, bias, lrelu, clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        resample_filter: Sequence[float] = _DEFAULT_FILTER,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = _check_activation(activation)
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = ACTIVATIONS[activation][1]
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        )
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.noise_input: torch.Tensor | None = None  # set for one call by SynthesisNetwork
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise_mode: str = "const",
        fused: bool = True,
        gain: float = 1.0,
    ) -> torch.Tensor:
        styles = self.affine(w)
        noise = None
        if self.use_noise and self.noise_input is not None:
            # A projection's own noise maps, one per sample ([N, 1, H, W]).
            noise = self.noise_input * self.noise_strength
        elif self.use_noise and noise_mode == "random":
            shape = [x.shape[0], 1, self.resolution, self.resolution]
            noise = torch.randn(shape, device=x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            noise=noise,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            flip_weight=self.up == 1,
            fused=fused,
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return _bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to image channels, no demodulation, bias, clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        kernel_size: int = 1,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        )
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused)
        return _bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: (const or conv0 up) + conv1 [+ tRGB]."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        architecture: str = "skip",
        resample_filter: Sequence[float] = _DEFAULT_FILTER,
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        **layer_kwargs: object,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        common = dict(
            w_dim=w_dim,
            resolution=resolution,
            resample_filter=resample_filter,
            conv_clamp=conv_clamp,
            **layer_kwargs,
        )
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, **common)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, **common)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(
                in_channels,
                out_channels,
                kernel_size=1,
                bias=False,
                up=2,
                resample_filter=resample_filter,
            )

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: str = "const",
        force_fp32: bool = True,
        fused_modconv: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        w_iter = iter(ws.unbind(dim=1))
        dtype = torch.float16 if self.use_fp16 and not force_fp32 else torch.float32
        fused = fused_modconv
        if fused is None:
            # One grouped conv per batch in float32; float16 batches scale activations instead,
            # as the official code does (its pre-normalisation assumes that path).
            fused = dtype == torch.float32 or ws.shape[0] == 1
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            x = x.to(dtype)
        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused=fused)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=_SQRT_HALF)
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused=fused)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused=fused, gain=_SQRT_HALF)
            x = y + x
        else:
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused=fused)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused=fused)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused=fused).to(torch.float32)
            img = img + y if img is not None else y
        return x, img


def _check_architecture(architecture: str) -> str:
    if architecture not in _ARCHITECTURES:
        raise ValueError(f"architecture must be one of {_ARCHITECTURES}, got {architecture!r}")
    return architecture


def _log2_resolution(img_resolution: int) -> int:
    if img_resolution < 4 or img_resolution & (img_resolution - 1):
        raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
    return int(math.log2(img_resolution))


def _fp16_resolution(log2_res: int, num_fp16_res: int) -> int:
    # The num_fp16_res highest resolutions, never 4x4.
    return max(2 ** (log2_res + 1 - num_fp16_res), 8)


_SYNTHESIS_KWARGS = {
    "architecture",
    "resample_filter",
    "conv_clamp",
    "fp16_channels_last",
    "kernel_size",
    "use_noise",
    "activation",
}


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> images [N, img_channels, R, R], nominally [-1, 1]."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        **block_kwargs: object,
    ) -> None:
        super().__init__()
        unknown = set(block_kwargs) - _SYNTHESIS_KWARGS
        if unknown:
            raise ValueError(f"unknown synthesis_kwargs: {sorted(unknown)}")
        _check_architecture(str(block_kwargs.get("architecture", "skip")))
        if block_kwargs.get("activation") is not None:
            _check_activation(str(block_kwargs["activation"]))
        log2 = _log2_resolution(img_resolution)
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        channels = {r: min(channel_base // r, channel_max) for r in self.block_resolutions}
        fp16_res = _fp16_resolution(log2, num_fp16_res)
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(
                channels[res // 2] if res > 4 else 0,
                channels[res],
                w_dim=w_dim,
                resolution=res,
                img_channels=img_channels,
                is_last=res == img_resolution,
                use_fp16=res >= fp16_res,
                **block_kwargs,
            )
            self.num_ws += block.num_conv
            if res == img_resolution:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: str = "const",
        force_fp32: bool = True,
        fused_modconv: bool | None = None,
        noise_inputs: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """`noise_inputs`: per-sample noise maps [N, 1, H, W] for every noise layer, in the
        order of StyleGAN2Generator.noise_buffers(), used instead of noise_mode's."""
        if noise_mode not in _NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {_NOISE_MODES}, got {noise_mode!r}")
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        if noise_inputs is not None:
            layers = self.noise_layers()
            if len(noise_inputs) != len(layers):
                raise ValueError(f"noise_inputs needs {len(layers)} maps, got {len(noise_inputs)}")
            for layer, n in zip(layers, noise_inputs, strict=True):
                layer.noise_input = n
            try:
                return self.forward(ws, noise_mode, force_fp32, fused_modconv)
            finally:
                for layer in layers:
                    layer.noise_input = None
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            # Consecutive blocks share a w: a block's tRGB uses the next block's first one.
            cur = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(
                x,
                img,
                cur,
                noise_mode=noise_mode,
                force_fp32=force_fp32,
                fused_modconv=fused_modconv,
            )
        return img

    def noise_layers(self) -> list[SynthesisLayer]:
        """The layers with noise inputs, in order (b4.conv1, b8.conv0, b8.conv1, ...)."""
        out = []
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            for name in ("conv0", "conv1"):
                layer = getattr(block, name, None)
                if layer is not None and layer.use_noise:
                    out.append(layer)
        return out


_MAPPING_KWARGS = {
    "num_layers",
    "embed_features",
    "layer_features",
    "activation",
    "lr_multiplier",
    "w_avg_beta",
}


class StyleGAN2Generator(GeneratorBase):
    """NVIDIA's StyleGAN2-ADA generator; the constructor takes a pickle's `G.init_kwargs`.

    The official FFHQ 1024 network: `StyleGAN2Generator(z_dim=512, c_dim=0, w_dim=512,
    img_resolution=1024, img_channels=3, mapping_kwargs={'num_layers': 8},
    synthesis_kwargs={'channel_base': 32768, 'channel_max': 512, 'num_fp16_res': 4,
    'conv_clamp': 256})`, 18 ws, 30,370,060 parameters. Load an official state dict (the
    pickle's G_ema.state_dict()) with `load_state_dict(state, strict=True)`.
    """

    kind = "stylegan2"
    alignment = "ffhq"
    has_mapping = True

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict | None = None,
        synthesis_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {})
        for name, value in (("z_dim", z_dim), ("w_dim", w_dim), ("img_channels", img_channels)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if c_dim < 0:
            raise ValueError(f"c_dim must be >= 0, got {c_dim}")
        unknown = set(mapping_kwargs) - _MAPPING_KWARGS
        if unknown:
            raise ValueError(f"unknown mapping_kwargs: {sorted(unknown)}")
        self._init_kwargs = copy.deepcopy(
            dict(
                z_dim=z_dim,
                c_dim=c_dim,
                w_dim=w_dim,
                img_resolution=img_resolution,
                img_channels=img_channels,
                mapping_kwargs=mapping_kwargs,
                synthesis_kwargs=synthesis_kwargs,
            )
        )
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = self.resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(
            w_dim=w_dim,
            img_resolution=img_resolution,
            img_channels=img_channels,
            **synthesis_kwargs,
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs
        )

    @property
    def w_avg(self) -> torch.Tensor:
        """The tracked mean of w, [w_dim]: the truncation centre and projection start."""
        if not hasattr(self.mapping, "w_avg"):
            raise ValueError("this network was built with w_avg_beta=None and has no w_avg")
        return self.mapping.w_avg

    def init_kwargs(self) -> dict:
        return copy.deepcopy(self._init_kwargs)

    def noise_buffers(self) -> list[torch.Tensor]:
        """The `noise_const` maps, in layer order (b4.conv1, b8.conv0, b8.conv1, ...)."""
        return [layer.noise_const for layer in self.synthesis.noise_layers()]

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
        force_fp32: bool = True,
    ) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, force_fp32=force_fp32)


# -- discriminator --------------------------------------------------------------------------
class DiscriminatorBlock(nn.Module):
    """One resolution of the discriminator: [fromrgb] conv0, conv1 (down x2) [+ skip]."""

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        activation: str = "lrelu",
        resample_filter: Sequence[float] = _DEFAULT_FILTER,
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        freeze_layers: int = 0,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(
                img_channels,
                tmp_channels,
                kernel_size=1,
                activation=activation,
                conv_clamp=conv_clamp,
            )
        self.conv0 = Conv2dLayer(
            tmp_channels, tmp_channels, kernel_size=3, activation=activation, conv_clamp=conv_clamp
        )
        self.conv1 = Conv2dLayer(
            tmp_channels,
            out_channels,
            kernel_size=3,
            activation=activation,
            down=2,
            resample_filter=resample_filter,
            conv_clamp=conv_clamp,
        )
        if architecture == "resnet":
            self.skip = Conv2dLayer(
                tmp_channels,
                out_channels,
                kernel_size=1,
                bias=False,
                down=2,
                resample_filter=resample_filter,
            )

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, force_fp32: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        dtype = torch.float16 if self.use_fp16 and not force_fp32 else torch.float32
        if x is not None:
            x = x.to(dtype)
        if self.in_channels == 0 or self.architecture == "skip":
            img = img.to(dtype)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
        if self.architecture == "resnet":
            y = self.skip(x, gain=_SQRT_HALF)
            x = self.conv0(x)
            x = self.conv1(x, gain=_SQRT_HALF)
            x = y + x
        else:
            x = self.conv1(self.conv0(x))
        return x, img


class MinibatchStdLayer(nn.Module):
    """Appends the mean standard deviation over a group of samples as extra channels."""

    def __init__(self, group_size: int | None, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        f = self.num_channels
        if n % g:
            raise ValueError(
                f"the minibatch-std layer needs a batch that is a multiple of {g}, got {n}"
            )
        if c % f:
            raise ValueError(f"{c} channels do not split into {f} minibatch-std groups")
        # Group k holds samples k, k + N/G, k + 2N/G, ...: the official reshape's layout.
        y = x.reshape(g, -1, f, c // f, h, w)
        y = y - y.mean(dim=0)
        y = y.square().mean(dim=0)
        y = (y + 1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4])
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """The 4x4 head: [fromrgb] minibatch-std, conv, fc, out [, label projection]."""

    def __init__(
        self,
        in_channels: int,
        cmap_dim: int,
        resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        activation: str = "lrelu",
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.architecture = architecture
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(
                img_channels, in_channels, kernel_size=1, activation=activation
            )
        self.mbstd = (
            MinibatchStdLayer(mbstd_group_size, mbstd_num_channels)
            if mbstd_num_channels > 0
            else None
        )
        self.conv = Conv2dLayer(
            in_channels + mbstd_num_channels,
            in_channels,
            kernel_size=3,
            activation=activation,
            conv_clamp=conv_clamp,
        )
        self.fc = FullyConnectedLayer(
            in_channels * resolution**2, in_channels, activation=activation
        )
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(
        self, x: torch.Tensor, img: torch.Tensor | None, cmap: torch.Tensor | None
    ) -> torch.Tensor:
        x = x.to(torch.float32)
        if self.architecture == "skip":
            x = x + self.fromrgb(img.to(torch.float32))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


_D_BLOCK_KWARGS = {"activation", "resample_filter", "fp16_channels_last", "freeze_layers"}
_D_EPILOGUE_KWARGS = {"mbstd_group_size", "mbstd_num_channels", "activation"}


class StyleGAN2Discriminator(nn.Module):
    """NVIDIA's StyleGAN2-ADA discriminator; the constructor takes a pickle's `D.init_kwargs`.

    `forward(img, c=None)` gives logits [N, 1]; `img` is [N, img_channels, R, R] in [-1, 1].
    With the minibatch-std layer, N must be a multiple of min(group size, N) (4 for FFHQ).
    `features(img)` gives the activations after each resolution block (R down to 8, each
    [N, C, r/2, r/2] in float32); they skip the epilogue, so rows never mix.
    """

    def __init__(
        self,
        c_dim: int,
        img_resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        conv_clamp: float | None = None,
        cmap_dim: int | None = None,
        block_kwargs: dict | None = None,
        mapping_kwargs: dict | None = None,
        epilogue_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        block_kwargs = dict(block_kwargs or {})
        mapping_kwargs = dict(mapping_kwargs or {})
        epilogue_kwargs = dict(epilogue_kwargs or {})
        for name, given, allowed in (
            ("block_kwargs", block_kwargs, _D_BLOCK_KWARGS),
            ("mapping_kwargs", mapping_kwargs, _MAPPING_KWARGS),
            ("epilogue_kwargs", epilogue_kwargs, _D_EPILOGUE_KWARGS),
        ):
            if set(given) - allowed:
                raise ValueError(f"unknown {name}: {sorted(set(given) - allowed)}")
        if c_dim < 0:
            raise ValueError(f"c_dim must be >= 0, got {c_dim}")
        _check_architecture(architecture)
        for kw in (block_kwargs, epilogue_kwargs):
            if "activation" in kw:
                _check_activation(kw["activation"])
        log2 = _log2_resolution(img_resolution)
        if img_resolution < 8:
            raise ValueError(f"the discriminator needs img_resolution >= 8, got {img_resolution}")
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        channels = {r: min(channel_base // r, channel_max) for r in [*self.block_resolutions, 4]}
        fp16_res = _fp16_resolution(log2, num_fp16_res)
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0
        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        for res in self.block_resolutions:
            block = DiscriminatorBlock(
                channels[res] if res < img_resolution else 0,
                channels[res],
                channels[res // 2],
                resolution=res,
                use_fp16=res >= fp16_res,
                **block_kwargs,
                **common,
            )
            setattr(self, f"b{res}", block)
        if c_dim > 0:
            self.mapping = MappingNetwork(
                z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None, **mapping_kwargs
            )
        self.b4 = DiscriminatorEpilogue(
            channels[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs, **common
        )

    def _check_img(self, img: torch.Tensor) -> None:
        want = (self.img_channels, self.img_resolution, self.img_resolution)
        if img.ndim != 4 or tuple(img.shape[1:]) != want:
            raise ValueError(
                f"img must be [N, {', '.join(map(str, want))}], got {tuple(img.shape)}"
            )

    def _blocks(
        self, img: torch.Tensor, force_fp32: bool
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        self._check_img(img)
        x = None
        feats = []
        cur: torch.Tensor | None = img
        for res in self.block_resolutions:
            x, cur = getattr(self, f"b{res}")(x, cur, force_fp32=force_fp32)
            feats.append(x)
        return feats, cur

    def features(self, img: torch.Tensor, force_fp32: bool = True) -> list[torch.Tensor]:
        """Activations after each block, highest resolution first, as float32."""
        feats, _ = self._blocks(img, force_fp32)
        return [f.to(torch.float32) for f in feats]

    def forward(
        self, img: torch.Tensor, c: torch.Tensor | None = None, force_fp32: bool = True
    ) -> torch.Tensor:
        feats, cur = self._blocks(img, force_fp32)
        cmap = None
        if self.c_dim > 0:
            cmap = self.mapping(None, c)
        return self.b4(feats[-1], cur, cmap)
