"""The aggregate stage's core: mean latents per region, gender and age group, made fair.

The original study averaged the projected latents of every face in a country into that
country's "characteristic face". Three things made that unfair, and options here correct them:
a prolific photographer could dominate a country (`one_user_once`), tourists' photos stood for
the places they visited (`exclude_visitors`), and a region with mostly young men gave a young
man (`balance`). Plain pandas + numpy; spark_aggregate.py collects the latents and calls this.

Groups: level (world, continent, country) x region ("WORLD", a continent code, a country code)
x gender ("all", "female", "male") x age ("all", "young", "old", and with `age_bins` FairFace's
nine bins). A group is listed when at least one face contributes to it.

Weights, per group:

- A "source" is a user when `one_user_once`, else a face. A face whose user_id is null is its
  own user (its key cannot equal any real user id).
- Unbalanced: every source weighs 1, split evenly over its faces in the group. So the mean is
  the mean over users of each user's mean face (or the plain mean over faces).
- Balanced: the faces are split into cells by the dimensions the group collapses, gender for
  gender "all" and young/old for age "all" (both for all x all). Inside a cell sources weigh 1
  as above; then every present cell is scaled to the same total, U / C (U: sum of the cells'
  source counts, C: the number of present cells). A face whose gender (age group) is null
  cannot be put in a cell, so it is left out of groups balanced over gender (age). Groups that
  collapse nothing (female x young, or a FairFace bin with a gender) are never rebalanced.
- `weights_sum` is the sum of the face weights before the mean divides by it, U in both modes.
  `n_effective` is Kish's effective number of sources, (sum s)^2 / sum s^2 over the per
  (source, cell) weights s: n_sources when unbalanced, less when balancing up-weights a cell.

Exclusions: a face with a missing, empty or non-finite latent is dropped ("bad_latent"). A
visitor's face (see `is_visitor`) is dropped from every level, not just from the visited
country: it says nothing about the people of that continent either, and dropping it everywhere
keeps world = the union of the continents = the union of the countries. A face with a null
country still counts for its continent and the world; a null continent, for the world only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import numpy as np
import pandas as pd

__all__ = [
    "AGE_BINS",
    "LEVELS",
    "OUTPUT_COLUMNS",
    "AggregateOptions",
    "aggregate",
    "is_visitor",
    "user_homes",
]

LEVELS: Final = ("world", "continent", "country")
GENDERS: Final = ("all", "female", "male")
AGE_GROUPS: Final = ("all", "young", "old")
# FairFace's age bins, the same as attributes.FAIRFACE_BINS (not imported: that module loads
# OpenCV and ONNX Runtime, which this stage does not need).
AGE_BINS: Final = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")
WORLD: Final = "WORLD"
OUTPUT_COLUMNS: Final = (
    "level", "region", "gender", "age_group", "n_faces", "n_photos", "n_users", "n_sources",
    "n_effective", "renderable", "reason", "latent", "face_ids", "weights_sum",
)  # fmt: skip
_FACE_COLUMNS: Final = (
    "face_id", "photo_id", "user_id", "country", "continent", "gender", "age_group", "latent",
)  # fmt: skip


@dataclass(frozen=True)
class AggregateOptions:
    """How faces are grouped and weighted; see the module docstring for the arithmetic.

    min_count: groups with fewer sources are listed but not renderable (the original study saw
    deformed faces under about 5 to 10). visitor_share: the least share of a user's photos in
    the home country for the user to count as a visitor elsewhere, in (0, 1].
    """

    min_count: int = 5
    one_user_once: bool = True
    balance: bool = False
    exclude_visitors: bool = True
    visitor_share: float = 0.5
    age_bins: bool = False
    levels: tuple[str, ...] = LEVELS

    def __post_init__(self) -> None:
        if isinstance(self.min_count, bool) or not isinstance(self.min_count, int | np.integer):
            raise ValueError(f"min_count must be an integer, got {self.min_count!r}")
        if self.min_count < 0:
            raise ValueError(f"min_count must be >= 0, got {self.min_count}")
        share = self.visitor_share
        if not (isinstance(share, int | float) and 0 < share <= 1):
            raise ValueError(f"visitor_share must be a number in (0, 1], got {share!r}")
        levels = tuple(self.levels) if not isinstance(self.levels, str) else (self.levels,)
        unknown = [v for v in levels if v not in LEVELS]
        if not levels or unknown or len(set(levels)) != len(levels):
            raise ValueError(f"levels must be distinct values from {LEVELS}, got {self.levels!r}")
        object.__setattr__(self, "levels", levels)


def user_homes(photos: pd.DataFrame) -> pd.DataFrame:
    """Each user's home country: the one holding the largest share of their geotagged photos.

    photos: columns user_id and country (one row per photo; with a photo_id column, repeated
    photo ids count once). Rows with a null user or country are ignored. Ties go to the
    alphabetically first country. Returns user_id, home_country, home_share (in (0, 1]) and
    n_photos (the user's photos with a country), one row per user, sorted by user_id.
    """
    _require(photos, ("user_id", "country"), "photos")
    cols = ["user_id", "country"] + (["photo_id"] if "photo_id" in photos.columns else [])
    df = photos[cols].dropna(subset=["user_id", "country"])
    if "photo_id" in df.columns:
        df = df.drop_duplicates(subset="photo_id")
    counts = df.groupby(["user_id", "country"]).size().rename("n").reset_index()
    n_photos = counts.groupby("user_id")["n"].transform("sum")
    counts = counts.assign(n_photos=n_photos)
    counts = counts.sort_values(["user_id", "n", "country"], ascending=[True, False, True])
    best = counts.drop_duplicates(subset="user_id", keep="first")
    return pd.DataFrame(
        {
            "user_id": best["user_id"].to_numpy(),
            "home_country": best["country"].to_numpy(),
            "home_share": (best["n"] / best["n_photos"]).to_numpy(dtype=np.float64),
            "n_photos": best["n_photos"].to_numpy(dtype=np.int64),
        }
    )


def is_visitor(faces: pd.DataFrame, homes: pd.DataFrame, visitor_share: float) -> np.ndarray:
    """True where the uploader looks like a visitor: the user's home country differs from the
    photo's country and holds at least `visitor_share` of the user's photos. Users without a
    row in `homes`, faces without a user or a country: False (kept)."""
    _require(homes, ("user_id", "home_country", "home_share"), "homes")
    if homes["user_id"].duplicated().any():
        raise ValueError("homes has more than one row for a user_id")
    home = faces["user_id"].map(homes.set_index("user_id")["home_country"])
    share = faces["user_id"].map(homes.set_index("user_id")["home_share"])
    known = home.notna() & faces["country"].notna()
    return (known & (home != faces["country"]) & (share >= visitor_share)).to_numpy(dtype=bool)


def aggregate(
    faces: pd.DataFrame,
    opts: AggregateOptions | None = None,
    homes: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Mean latent and counts per group; one row per group, in OUTPUT_COLUMNS order.

    faces: face_id (unique), photo_id, user_id, country, continent, gender ("female", "male" or
    null), age_group ("young", "old" or null), age_bin (needed with opts.age_bins) and latent
    (1-D, the same length for all). homes: user_homes' output; None checks no one for visits.
    Rows are sorted by level (world, continent, country), region, gender, then age (all, young,
    old, the bins in age order). Raises ValueError on missing columns, unknown labels,
    duplicate face ids and latents of different lengths or shapes.

    The accounting dict holds: faces_in, faces_bad_latent, faces_visitors (a face with a bad
    latent counts as that only), users_visitors, visitors_checked, faces_used,
    faces_without_gender / _age_group / _age_bin / _country / _continent (among the faces used;
    they count in "all" or the upper levels only), groups, groups_renderable.
    """
    opts = opts if opts is not None else AggregateOptions()
    _require(faces, _FACE_COLUMNS + (("age_bin",) if opts.age_bins else ()))
    if faces["face_id"].duplicated().any():
        raise ValueError("face_id must be unique")
    df = faces.reset_index(drop=True)
    _check_labels(df, "gender", GENDERS[1:])
    _check_labels(df, "age_group", AGE_GROUPS[1:])
    if opts.age_bins:
        _check_labels(df, "age_bin", AGE_BINS)

    latents, bad = _stack_latents(df["latent"])
    visitors = np.zeros(len(df), dtype=bool)
    check = opts.exclude_visitors and homes is not None
    if check and len(df):
        visitors = is_visitor(df, homes, opts.visitor_share) & ~bad
    keep = ~bad & ~visitors
    used = df.loc[keep].reset_index(drop=True)
    latents = latents[keep]

    acc: dict[str, Any] = {
        "faces_in": len(df),
        "faces_bad_latent": int(bad.sum()),
        "faces_visitors": int(visitors.sum()),
        "users_visitors": int(df.loc[visitors, "user_id"].nunique()),
        "visitors_checked": bool(check),
        "faces_used": len(used),
    }
    for col in ("gender", "age_group") + (("age_bin",) if opts.age_bins else ()):
        acc[f"faces_without_{col}"] = int(used[col].isna().sum())
    acc["faces_without_country"] = int(used["country"].isna().sum())
    acc["faces_without_continent"] = int(used["continent"].isna().sum())

    rows = _group_rows(used, latents, opts)
    out = pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))
    out = out.astype({"n_faces": "int64", "n_photos": "int64", "n_users": "int64"})
    out = out.astype({"n_sources": "int64", "renderable": "bool", "weights_sum": "float64"})
    out = out.astype({"n_effective": "float64"})
    acc["groups"] = len(out)
    acc["groups_renderable"] = int(out["renderable"].sum())
    return out, acc


class _Codes(NamedTuple):
    """Per used face: source, user and photo codes (dense ints, a null its own) and face id."""

    src: np.ndarray
    users: np.ndarray
    photos: np.ndarray
    face_ids: np.ndarray


def _group_rows(df: pd.DataFrame, x: np.ndarray, opts: AggregateOptions) -> list[dict]:
    """One dict per group with at least one contributing face, already in output order."""
    # Integer codes once, so each group's weights are a few numpy calls. A null user or photo
    # gets a code of its own: -1 from factorize, replaced by a fresh code per face.
    src = _codes(df["user_id"]) if opts.one_user_once else np.arange(len(df))
    users, photos = _codes(df["user_id"]), _codes(df["photo_id"])
    g_code = df["gender"].map({"female": 0, "male": 1}).fillna(-1).to_numpy(dtype=np.int64)
    a_code = df["age_group"].map({"young": 0, "old": 1}).fillna(-1).to_numpy(dtype=np.int64)
    ages = AGE_GROUPS + (AGE_BINS if opts.age_bins else ())
    labels = {"gender": df["gender"].to_numpy(dtype=object)}
    labels["age_group"] = df["age_group"].to_numpy(dtype=object)
    if opts.age_bins:
        labels["age_bin"] = df["age_bin"].to_numpy(dtype=object)
    codes = _Codes(src, users, photos, df["face_id"].to_numpy(dtype=object))
    rows: list[dict] = []
    for level in (v for v in LEVELS if v in opts.levels):
        region = pd.Series(WORLD, index=df.index) if level == "world" else df[level].dropna()
        for name, members in sorted(region.groupby(region).groups.items()):
            idx = np.asarray(members, dtype=np.int64)
            for gender in GENDERS:
                g_ok = _matches(labels["gender"][idx], gender)
                for age in ages:
                    a_col = "age_bin" if age in AGE_BINS else "age_group"
                    member = idx[g_ok & _matches(labels[a_col][idx], age)]
                    cell = np.zeros(len(member), dtype=np.int64)
                    if opts.balance:
                        member, cell = _cells(member, g_code, a_code, gender == "all", age == "all")
                    if len(member):
                        group = (level, str(name), gender, age)
                        rows.append(_one_group(group, member, cell, codes, x, opts))
    return rows


def _cells(
    member: np.ndarray, g_code: np.ndarray, a_code: np.ndarray, by_gender: bool, by_age: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The members that can be put in a cell of the collapsed dimensions, and their cell."""
    cell = np.zeros(len(member), dtype=np.int64)
    ok = np.ones(len(member), dtype=bool)
    if by_gender:
        ok &= g_code[member] >= 0
        cell += 2 * g_code[member]
    if by_age:
        ok &= a_code[member] >= 0
        cell += a_code[member]
    return member[ok], cell[ok]


def _matches(values: np.ndarray, label: str) -> np.ndarray:
    return np.ones(len(values), dtype=bool) if label == "all" else values == label


def _one_group(
    group: tuple[str, str, str, str],
    member: np.ndarray,
    cell: np.ndarray,
    codes: _Codes,
    x: np.ndarray,
    opts: AggregateOptions,
) -> dict:
    """The row of one group: `member` indexes its faces, `cell` their balancing cell."""
    src, users, photos = codes.src, codes.users, codes.photos
    # Each (source, cell) pair weighs 1, split evenly over its faces.
    pair_key = cell * (int(src.max()) + 1) + src[member]
    _, pair, faces_per_pair = np.unique(pair_key, return_inverse=True, return_counts=True)
    w = 1.0 / faces_per_pair[pair]
    pair_cell = np.zeros(len(faces_per_pair), dtype=np.int64)
    pair_cell[pair] = cell
    per_cell = np.bincount(pair_cell)
    present = per_cell[per_cell > 0]
    total = float(len(faces_per_pair))
    if len(present) > 1:
        # Every present cell gets the same total weight; the overall total stays unchanged.
        scale = np.zeros(len(per_cell))
        scale[per_cell > 0] = (total / len(present)) / present
        w = w * scale[cell]
    s = np.bincount(pair, weights=w)
    mean = (w @ x[member].astype(np.float64)) / w.sum()
    n_users = len(np.unique(users[member]))
    n_sources = n_users if opts.one_user_once else len(member)
    renderable = n_sources >= opts.min_count
    what = "users" if opts.one_user_once else "faces"
    return {
        "level": group[0],
        "region": group[1],
        "gender": group[2],
        "age_group": group[3],
        "n_faces": len(member),
        "n_photos": len(np.unique(photos[member])),
        "n_users": n_users,
        "n_sources": n_sources,
        "n_effective": float(s.sum() ** 2 / (s**2).sum()),
        "renderable": renderable,
        "reason": None if renderable else f"too_few_{what} ({n_sources} < {opts.min_count})",
        "latent": mean.astype(np.float32),
        "face_ids": sorted(codes.face_ids[member].tolist()),
        "weights_sum": float(w.sum()),
    }


def _codes(values: pd.Series) -> np.ndarray:
    """Dense integer codes; each null gets a code of its own."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    null = codes < 0
    codes[null] = len(uniques) + np.arange(int(null.sum()))
    return codes.astype(np.int64)


def _stack_latents(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """An (n, d) float32 matrix and a mask of bad latents (missing, empty or non-finite; their
    rows are zero). Different lengths or a latent of more than one dimension: ValueError."""
    arrays: list[np.ndarray | None] = []
    for v in values:
        a = _as_vector(v)
        arrays.append(a if a is not None and a.size and np.isfinite(a).all() else None)
    lengths = {a.size for a in arrays if a is not None}
    if len(lengths) > 1:
        raise ValueError(f"latents have different lengths: {sorted(lengths)}")
    d = lengths.pop() if lengths else 0
    x = np.zeros((len(arrays), d), dtype=np.float32)
    bad = np.array([a is None for a in arrays], dtype=bool)
    for i, a in enumerate(arrays):
        if a is not None:
            x[i] = a
    return x, bad


def _as_vector(v: object) -> np.ndarray | None:
    """A latent as float32, or None when it is missing or holds something that is no number."""
    if v is None or (np.isscalar(v) and pd.isna(v)):
        return None
    try:
        a = np.asarray(v, dtype=np.float32)
    except (TypeError, ValueError):
        return None
    if a.ndim != 1:
        raise ValueError(f"a latent must be 1-D, got shape {a.shape}")
    return a


def _check_labels(df: pd.DataFrame, col: str, allowed: tuple[str, ...]) -> None:
    labels = set(df[col].dropna().unique())
    if not labels <= set(allowed):
        unknown = sorted(map(str, labels - set(allowed)))
        raise ValueError(f"{col} must be one of {allowed} or null, got {unknown}")


def _require(df: pd.DataFrame, columns: tuple[str, ...], what: str = "faces") -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {', '.join(missing)}")
