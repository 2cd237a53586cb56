"""Render characteristic faces: each renderable group's mean latent through the generator.

File names follow a documented code, after the original study's `NLMY` (country, gender,
age): the region, then the gender letter (A all, F female, M male), then the age letter
(A all, Y young, O old). Countries use their ISO alpha-2 code (`NLFY`), continents are
prefixed with C (`CEUAA`, so that "NA", North America, cannot be read as Namibia), and the
world is `WORLD` (`WORLDMO`). FairFace age bins, when aggregated, follow an underscore
(`NLF_20-29`).

`manifest.json` lists every group, rendered or not, with its counts and its provenance:
the source photos' ids, page URLs, licence names and uploaders, for attribution. No
individual's aligned face is ever written here: only generator output of group means.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import numpy as np
import torch

GENDER_LETTER: Final = {"all": "A", "female": "F", "male": "M"}
AGE_LETTER: Final = {"all": "A", "young": "Y", "old": "O"}
MAX_SOURCES: Final = 500  # per group in the manifest; the groups table has every face id


def group_code(level: str, region: str, gender: str, age_group: str) -> str:
    prefix = {"country": "", "continent": "C", "world": ""}[level]
    g = GENDER_LETTER[gender]
    a = AGE_LETTER.get(age_group)
    tail = f"{g}{a}" if a else f"{g}_{age_group}"
    return f"{prefix}{region}{tail}"


def latent_to_ws(G, latent: np.ndarray, space: str, truncation: float) -> torch.Tensor:
    """[1, num_ws, w_dim] for a stored latent ([layers, dim]), truncated toward w_avg."""
    lat = torch.from_numpy(np.asarray(latent, np.float32)).to(G.w_avg.device)
    if space == "z":
        return G.mapping(lat[:1], truncation_psi=truncation)
    w_avg = G.w_avg.view(1, -1)
    w = w_avg + truncation * (lat - w_avg)
    return (w if w.shape[0] == G.num_ws else w[:1].repeat(G.num_ws, 1))[None]


def render_latent(G, latent: np.ndarray, space: str, truncation: float = 1.0) -> np.ndarray:
    """uint8 RGB H x W x 3 of one latent."""
    with torch.no_grad():
        img = G.synthesis(latent_to_ws(G, latent, space, truncation), noise_mode="const")
    img = ((img[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return img.permute(1, 2, 0).cpu().numpy()


def write_png(path: Path, rgb: np.ndarray, scale: int = 1) -> None:
    from PIL import Image

    im = Image.fromarray(rgb)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    im.save(tmp, "PNG")
    tmp.replace(path)


def write_manifest(path: Path, manifest: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False, default=str) + "\n",
                   encoding="utf-8")  # fmt: skip
    tmp.replace(path)
