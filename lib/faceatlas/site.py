"""The static web site: a clickable world map of the rendered characteristic faces.

`build_site(root)` turns the render stage's folder (`ROOT/render/manifest.json` and its PNGs)
into `ROOT/site/`, a folder that works from any static web server and opened from disk
(file://), so nothing but a browser is needed to look at the results:

  index.html, app.js, style.css   the page, hand-written (lib/faceatlas/web/)
  data.js                         the manifest as `window.FACEATLAS_DATA = {...};`: a script,
                                  not JSON, because browsers refuse fetch() on file:// URLs
  faces/*.png                     the rendered groups' images, copied from the render folder
  charts/*.png                    faces per country; age group by gender (matplotlib, Agg)
  vendor/                         jsvectormap 1.7.0 (MIT) and its world map, from npm

Decisions:

- Every string in the manifest may come from Flickr metadata (titles, user names, URLs), so
  the page puts data into the DOM only through textContent and safe attributes, and links a
  URL only when its scheme is http or https. data.js also escapes `<`, `>`, `&`, U+2028 and
  U+2029 inside the JSON, so no string can end the script element even if the data is ever
  inlined into a page.
- Only files that the manifest names as a rendered group's image, inside the render folder
  and starting with the PNG signature, are copied; they get a new name from the group code
  (or the group's index when the code is not a plain file name). A rendered group whose image
  is missing or not a PNG is published as not rendered, with the reason, and logged.
- The site is built in a temporary sibling folder and swapped in, so a re-run replaces the
  previous build completely (no stale faces) and a failed run leaves the old one. An existing
  output folder is replaced only if an earlier build_site wrote it (it holds MARKER_FILE);
  anything else there is refused rather than deleted.
- jsvectormap comes from npm, pinned by web/package-lock.json; `ensure_assets` runs `npm ci`
  on first use. Nothing is fetched when the site is opened.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

log = logging.getLogger(__name__)

__all__ = [
    "JSVECTORMAP_VERSION",
    "MARKER_FILE",
    "WEB_DIR",
    "age_by_gender",
    "build_site",
    "chart_age_by_gender",
    "chart_faces_per_country",
    "ensure_assets",
    "read_manifest",
    "script_json",
]

JSVECTORMAP_VERSION: Final = "1.7.0"
WEB_DIR: Final = Path(__file__).resolve().parent / "web"
PAGE_FILES: Final = ("index.html", "app.js", "style.css")
# Site name -> path under node_modules/jsvectormap/dist.
VENDOR_FILES: Final = {
    "jsvectormap.min.js": "jsvectormap.min.js",
    "jsvectormap.min.css": "jsvectormap.min.css",
    "world.js": "maps/world.js",
}
MARKER_FILE: Final = ".faceatlas-site"
LEVELS: Final = ("country", "continent", "world")

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_SAFE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_SOURCE_KEYS: Final = ("photo_id", "page_url", "license_name", "license_url", "user", "title")
# Characters that could end a <script> element or a JS string if the JSON were inlined.
_SCRIPT_ESCAPES: Final = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_SCRIPT_ESCAPE_RE: Final = re.compile("[<>&\u2028\u2029]")


# -- assets -----------------------------------------------------------------------------
def ensure_assets() -> Path:
    """The jsvectormap `dist` folder, installing it with `npm ci` into web/node_modules first
    if it is missing or not the pinned version. Raises RuntimeError when npm is absent or fails."""
    package_dir = WEB_DIR / "node_modules" / "jsvectormap"
    dist = package_dir / "dist"
    if _assets_ready(package_dir):
        return dist
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            f"jsvectormap {JSVECTORMAP_VERSION} is not installed in {WEB_DIR / 'node_modules'} "
            "and npm is not on PATH: install nodejs and npm (Debian: apt-get install nodejs npm) "
            "or run `make site-assets`"
        )
    log.info("installing jsvectormap %s with npm ci in %s", JSVECTORMAP_VERSION, WEB_DIR)
    proc = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=WEB_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"`npm ci` in {WEB_DIR} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
        )
    if not _assets_ready(package_dir):
        raise RuntimeError(
            f"`npm ci` in {WEB_DIR} did not install jsvectormap {JSVECTORMAP_VERSION}"
        )
    return dist


def _assets_ready(package_dir: Path) -> bool:
    try:
        meta = json.loads((package_dir / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("version") == JSVECTORMAP_VERSION and all(
        (package_dir / "dist" / rel).is_file() for rel in VENDOR_FILES.values()
    )


# -- data -------------------------------------------------------------------------------
def script_json(value: Any) -> str:
    """JSON that is also safe inside an HTML <script> element and as JavaScript source.

    The escaped characters only ever occur inside JSON strings, where `\\uXXXX` means the
    same character, so `json.loads` reads the result back unchanged."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return _SCRIPT_ESCAPE_RE.sub(lambda m: _SCRIPT_ESCAPES[m.group(0)], text)


def read_manifest(root: str | Path) -> dict[str, Any]:
    """ROOT/render/manifest.json, checked and normalised: each group keeps only the fields
    the site uses, with counts as ints and every free-text field a string or None.

    Raises ValueError if the file is missing, is not JSON, or a group lacks its structure
    (code, level, region, gender, age_group as strings; counts as non-negative ints)."""
    path = Path(root) / "render" / "manifest.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"no render manifest at {path}: run the render stage first") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"unreadable render manifest {path}: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("groups"), list):
        raise ValueError(f"render manifest {path} has no 'groups' list")
    meta = {
        "generator": _text(raw.get("generator")),
        "generator_hash": _text(raw.get("generator_hash")),
        "truncation": _number(raw.get("truncation")),
        "min_count": _number(raw.get("min_count")),
        "created_at": _text(raw.get("created_at")),
    }
    groups = [_group(g, i, path) for i, g in enumerate(raw["groups"])]
    return {**meta, "groups": groups}


def _group(g: Any, i: int, path: Path) -> dict[str, Any]:
    where = f"render manifest {path}, group {i}"
    if not isinstance(g, dict):
        raise ValueError(f"{where}: not an object")
    out: dict[str, Any] = {}
    for key in ("code", "level", "region", "gender", "age_group"):
        if not isinstance(g.get(key), str) or not g[key]:
            raise ValueError(f"{where}: {key!r} must be a non-empty string, got {g.get(key)!r}")
        out[key] = g[key]
    for key in ("name", "continent", "reason"):
        out[key] = _text(g.get(key))
    for key in ("n_faces", "n_photos", "n_users"):
        n = g.get(key, 0)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{where}: {key!r} must be a non-negative integer, got {n!r}")
        out[key] = n
    for key in ("n_sources", "sources_total"):  # optional: older manifests lack them
        n = g.get(key)
        if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
            out[key] = n
    out["rendered"] = g.get("rendered") is True
    out["image"] = g["image"] if isinstance(g.get("image"), str) else None
    sources = g.get("sources") or []
    if not isinstance(sources, list):
        raise ValueError(f"{where}: 'sources' must be a list")
    out["sources"] = [
        {k: _text(s.get(k)) for k in _SOURCE_KEYS} for s in sources if isinstance(s, dict)
    ]
    return out


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _number(value: Any) -> float | int | None:
    # NaN and infinity have no JSON spelling; booleans are not numbers here.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


# -- build ------------------------------------------------------------------------------
def build_site(root: str | Path, out: str | Path | None = None) -> Path:
    """Write the static site for ROOT/render into `out` (default ROOT/site) and return the
    path of its index.html. See the module docstring for what is written.

    Raises ValueError for a missing or malformed manifest, or an output folder that holds
    something other than an earlier build; RuntimeError if jsvectormap cannot be installed."""
    root = Path(root)
    render_dir = (root / "render").resolve()
    manifest = read_manifest(root)
    out_dir = Path(out) if out is not None else root / "site"
    out_dir = out_dir.resolve()
    if out_dir == render_dir or render_dir.is_relative_to(out_dir):
        raise ValueError(f"site folder {out_dir} would replace the render folder {render_dir}")
    if out_dir.exists() and not _replaceable(out_dir):
        raise ValueError(
            f"{out_dir} exists and is not a faceatlas site (no {MARKER_FILE}): "
            "refusing to replace it; choose another output folder"
        )
    dist = ensure_assets()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a web server must read it
        _write_site(tmp, manifest, render_dir, dist)
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / "index.html"


def _replaceable(path: Path) -> bool:
    return path.is_dir() and ((path / MARKER_FILE).is_file() or not any(path.iterdir()))


def _swap_in(new: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_site(site: Path, manifest: dict[str, Any], render_dir: Path, dist: Path) -> None:
    for name in PAGE_FILES:
        shutil.copyfile(WEB_DIR / name, site / name)
    vendor = site / "vendor"
    vendor.mkdir()
    for name, rel in VENDOR_FILES.items():
        shutil.copyfile(dist / rel, vendor / name)
    shutil.copyfile(dist.parent / "LICENSE", vendor / "jsvectormap.LICENSE")

    faces = site / "faces"
    faces.mkdir()
    used: set[str] = set()
    for i, group in enumerate(manifest["groups"]):
        _publish_image(group, i, render_dir, faces, used)

    charts = site / "charts"
    charts.mkdir()
    groups = manifest["groups"]
    chart_faces_per_country(groups, charts / "faces_per_country.png", manifest["min_count"])
    chart_age_by_gender(groups, charts / "age_by_gender.png")

    (site / "data.js").write_text(
        f"window.FACEATLAS_DATA = {script_json(manifest)};\n", encoding="utf-8"
    )
    (site / MARKER_FILE).write_text("written by faceatlas.site.build_site\n", encoding="utf-8")


def _publish_image(
    group: dict[str, Any], index: int, render_dir: Path, faces: Path, used: set[str]
) -> None:
    """Copy a rendered group's PNG into faces/ and point group["image"] at the copy; a group
    whose image cannot be published becomes not rendered, with the reason."""
    name = group.pop("image")
    group["image"] = None
    if not group["rendered"]:
        return
    problem = None
    src = (render_dir / name).resolve() if name else None
    if src is None:
        problem = "no image named in the manifest"
    elif not src.is_relative_to(render_dir):
        problem = "image path outside the render folder"
    elif not src.is_file():
        problem = "image file missing"
    else:
        with open(src, "rb") as f:
            if f.read(len(_PNG_SIGNATURE)) != _PNG_SIGNATURE:
                problem = "image file is not a PNG"
    if problem is not None:
        log.warning("group %r not published: %s (%r)", group["code"], problem, name)
        group["rendered"] = False
        group["reason"] = problem
        return
    stem = group["code"] if _SAFE_NAME.fullmatch(group["code"]) else f"group{index}"
    if stem.lower() in used:  # case-insensitive file systems would merge NLfy and NLFY
        stem = f"{stem}-{index}"
    used.add(stem.lower())
    shutil.copyfile(src, faces / f"{stem}.png")
    group["image"] = f"faces/{stem}.png"


# -- charts -----------------------------------------------------------------------------
def _figure(width: float, height: float):
    # A bare Figure, not pyplot: no global state, no GUI backend, safe beside other threads.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: Path) -> None:
    fig.savefig(path, format="png", metadata={"Software": None})


def chart_faces_per_country(
    groups: Iterable[Mapping[str, Any]], path: Path, min_count: float | None = None
) -> None:
    """Histogram of faces per country (country-level groups with gender and age "all"), on
    logarithmic bins because a few countries hold most photos; a dashed line marks the
    rendering threshold when known. With no countries the chart says so."""
    from matplotlib.ticker import MaxNLocator

    counts = [
        int(g["n_faces"])
        for g in groups
        if g["level"] == "country" and g["gender"] == "all" and g["age_group"] == "all"
    ]
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot()
    ax.set_title("Faces per country")
    ax.set_xlabel("faces (log scale)")
    ax.set_ylabel("countries")
    positive = [c for c in counts if c > 0]
    if positive:
        top = max(positive)
        n_bins = max(1, min(30, math.ceil(math.log10(top + 1) * 6)))
        edges = [10 ** (math.log10(top + 1) * k / n_bins) for k in range(n_bins + 1)]
        edges[0] = 1.0
        ax.hist(positive, bins=edges, color="#3b6ea5", edgecolor="white")
        ax.set_xscale("log")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if min_count:
            ax.axvline(min_count, color="#c0392b", linestyle="--", label=f"min. {min_count:g}")
            ax.legend(loc="upper right")
    else:
        ax.text(0.5, 0.5, "no countries with faces", ha="center", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
    if len(positive) < len(counts):
        ax.annotate(
            f"{len(counts) - len(positive)} countries with no faces",
            (0.99, 0.02),
            xycoords="axes fraction",
            ha="right",
            fontsize=8,
        )
    _save(fig, path)


def age_by_gender(groups: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Faces by gender, then age group (neither "all"): from the world-level groups when
    there are any, else summed over the country-level groups."""
    groups = list(groups)
    for level in ("world", "country"):
        table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for g in groups:
            if g["level"] == level and g["gender"] != "all" and g["age_group"] != "all":
                table[g["gender"]][g["age_group"]] += int(g["n_faces"])
        if table:
            return {k: dict(v) for k, v in table.items()}
    return {}


def chart_age_by_gender(groups: Iterable[Mapping[str, Any]], path: Path) -> None:
    """Stacked bars: one bar per gender, one segment per age group."""
    table = age_by_gender(groups)
    genders = _ordered(table, ("female", "male"))
    ages = _ordered({a for row in table.values() for a in row}, ("young", "old"))
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot()
    ax.set_title("Faces by gender and age group")
    ax.set_ylabel("faces")
    if genders:
        bottom = [0] * len(genders)
        colours = ["#3b6ea5", "#e0a030", "#5a9e6f", "#b0504f", "#8c6bb1", "#7f7f7f"]
        for j, age in enumerate(ages):
            heights = [table[g].get(age, 0) for g in genders]
            ax.bar(
                [_plain(g) for g in genders],
                heights,
                bottom=bottom,
                label=_plain(age),
                color=colours[j % len(colours)],
            )
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.legend(title="age group", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    else:
        ax.text(0.5, 0.5, "no faces with gender and age", ha="center", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, path)


def _plain(label: str) -> str:
    # Matplotlib reads text between dollar signs as TeX math, which can fail to parse.
    return label.replace("$", r"\$")


def _ordered(values: Iterable[str], first: tuple[str, ...]) -> list[str]:
    values = set(values)
    return [v for v in first if v in values] + sorted(values - set(first))
