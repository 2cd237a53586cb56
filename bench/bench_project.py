"""Projection speed: how much batching buys.

CPU (always): faces/s for the bundled 64x64 DCGAN at a fixed number of steps, one face at
a time versus a batch of 64, in this process.

GPU (when torch sees a CUDA device): a StyleGAN2 of the official FFHQ 1024 configuration
with random weights (the official weights cannot be had here; the cost per step does not
depend on the values), ms per face-step and faces/hour at 1000 steps for batch sizes 1, 8,
32 and 64, in W and W+, float32 and mixed precision. The goal: at batch 32 or more, at
least 10 times the faces/hour of batch 1.

    python bench/bench_project.py [--steps 50] [--gpu-steps 20] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from faceatlas.gan import build, load
from faceatlas.project import ProjectOptions, project

FFHQ_1024 = {
    "z_dim": 512, "c_dim": 0, "w_dim": 512, "img_resolution": 1024, "img_channels": 3,
    "mapping_kwargs": {"num_layers": 8},
    "synthesis_kwargs": {"channel_base": 32768, "channel_max": 512, "num_fp16_res": 4,
                         "conv_clamp": 256},
}  # fmt: skip


def targets(G, n: int, device: str) -> list[np.ndarray]:
    """Faces the generator itself made, as uint8 images (what projection gets)."""
    g = torch.Generator(device="cpu").manual_seed(1)
    out = []
    with torch.no_grad():
        for start in range(0, n, 8):
            z = torch.randn(min(8, n - start), G.z_dim, generator=g).to(device)
            img = G.synthesis(G.mapping(z, truncation_psi=0.7))
            out += list(((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1)
                        .cpu().numpy())  # fmt: skip
    return out


def timed(G, faces: list[np.ndarray], batch: int, opts: ProjectOptions, device: str) -> float:
    """Seconds to project `faces` in batches of `batch`."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for start in range(0, len(faces), batch):
        chunk = faces[start : start + batch]
        project(G, chunk, [f"f{start + i}" for i in range(len(chunk))], opts, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def cpu_section(steps: int, threads: int) -> None:
    torch.set_num_threads(threads)
    G = load("dcgan64")
    # patience above the step count: every face runs every step, so the timing is fair.
    opts = ProjectOptions(steps=steps, patience=steps + 1)
    faces = targets(G, 64, "cpu")
    timed(G, faces[:2], 2, ProjectOptions(steps=3), "cpu")  # warm-up
    single = timed(G, faces[:8], 1, opts, "cpu") / 8
    batched = timed(G, faces, 64, opts, "cpu") / 64
    print(f"CPU, bundled DCGAN 64x64, {steps} steps, {threads} thread(s), pixel loss:")
    print(f"  batch  1: {1 / single:7.2f} faces/s  ({single / steps * 1000:6.2f} ms per face-step)")
    print(f"  batch 64: {1 / batched:7.2f} faces/s  ({batched / steps * 1000:6.2f} ms per "
          f"face-step)  ratio {single / batched:.1f}x")  # fmt: skip


def gpu_section(steps: int) -> None:
    if not torch.cuda.is_available():
        print("GPU: torch sees no CUDA device here; the GPU section did not run.")
        return
    device = "cuda:0"
    print(f"GPU: {torch.cuda.get_device_name(0)}; StyleGAN2 FFHQ 1024 config, random weights, "
          f"{steps} timed steps, pixel loss")  # fmt: skip
    torch.manual_seed(0)
    G = build("stylegan2", FFHQ_1024).to(device)
    faces = targets(G, 64, device)
    rows = []
    for space in ("w", "wplus"):
        for precision in ("fp32", "mixed"):
            opts = ProjectOptions(steps=steps, space=space, precision=precision,
                                  patience=steps + 1, w_avg_samples=10_000)  # fmt: skip
            timed(G, faces[:2], 2, ProjectOptions(steps=2, space=space, precision=precision),
                  device)  # fmt: skip
            base = None
            for batch in (1, 8, 32, 64):
                n = batch if batch > 1 else 2
                try:
                    sec = timed(G, faces[:n], batch, opts, device) / n
                except torch.cuda.OutOfMemoryError:
                    print(f"  {space} {precision} batch {batch}: out of memory")
                    torch.cuda.empty_cache()
                    continue
                ms = sec / steps * 1000
                per_hour = 3600 / (ms / 1000 * 1000)
                base = base or per_hour
                rows.append((space, precision, batch, ms, per_hour, per_hour / base))
    print(f"  {'space':6} {'precision':9} {'batch':>5} {'ms/face-step':>13} "
          f"{'faces/h @1000':>14} {'x batch 1':>10}")  # fmt: skip
    for space, precision, batch, ms, per_hour, ratio in rows:
        print(f"  {space:6} {precision:9} {batch:>5} {ms:>13.2f} {per_hour:>14.0f} {ratio:>10.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=50, help="CPU steps per face (default 50)")
    ap.add_argument("--gpu-steps", type=int, default=20, help="timed GPU steps per face")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads on the CPU (default 1: per core)")  # fmt: skip
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPU cores; torch {torch.__version__}")
    cpu_section(args.steps, args.threads)
    gpu_section(args.gpu_steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
