"""Tests for faceatlas.site (the static web site built from ROOT/render).

The render folders are written here: a manifest in the render stage's format and solid-colour
PNGs, one colour per group, so a test can tell from the pixels which face the page shows.
The browser tests drive Debian's /usr/bin/chromium with Playwright, against
`python -m http.server` on 127.0.0.1 and against file:// URLs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from faceatlas import site
from faceatlas.site import age_by_gender, build_site, ensure_assets, read_manifest, script_json

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHROMIUM = Path("/usr/bin/chromium")
HOSTILE_TITLE = "<img src=x onerror=alert(1)>"
SCRIPT_TITLE = "</script><script>alert(1)</script>"

# Group code -> the RGB colour of its face.
COLOURS = {
    "WORLDAA": (230, 200, 20),
    "NLAA": (220, 30, 30),
    "NLFA": (30, 200, 60),
    "FRAA": (40, 70, 220),
    "CEUAA": (150, 40, 180),
}


def _source(photo_id: int, title: str = "a title", **extra: Any) -> dict[str, Any]:
    return {
        "photo_id": photo_id,
        "page_url": f"http://www.flickr.com/photos/someone/{photo_id}/",
        "license_name": "Attribution License",
        "license_url": "http://creativecommons.org/licenses/by/2.0/",
        "user": "someone",
        "title": title,
        **extra,
    }


def _group(
    code: str,
    level: str,
    region: str,
    name: str,
    gender: str = "all",
    age: str = "all",
    n: int = 10,
    rendered: bool = True,
    continent: str | None = None,
    sources: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "code": code,
        "level": level,
        "region": region,
        "name": name,
        "continent": continent,
        "gender": gender,
        "age_group": age,
        "n_faces": n,
        "n_photos": max(n - 1, 0),
        "n_users": max(n - 2, 0),
        "rendered": rendered,
        "image": f"faces/{code}.png" if rendered else None,
        "reason": None if rendered else f"too few sources ({n} < 5)",
        "sources": sources if sources is not None else [_source(1000 + n)],
    }


def _groups() -> list[dict[str, Any]]:
    nl_sources = [
        _source(1, HOSTILE_TITLE),
        _source(2, SCRIPT_TITLE),
        _source(3, "bad links", page_url="javascript:alert(2)", license_url="data:text/html,x"),
        _source(4, "line\u2028separator & <b>bold</b>", user="<script>alert(3)</script>"),
    ]
    return [
        _group("WORLDAA", "world", "WORLD", "World", n=40),
        _group("WORLDFY", "world", "WORLD", "World", "female", "young", n=9, rendered=False),
        _group("WORLDFO", "world", "WORLD", "World", "female", "old", n=6, rendered=False),
        _group("WORLDMY", "world", "WORLD", "World", "male", "young", n=11, rendered=False),
        _group("WORLDMO", "world", "WORLD", "World", "male", "old", n=4, rendered=False),
        _group("CEUAA", "continent", "EU", "Europe", n=30, continent="EU"),
        _group("CSAAA", "continent", "SA", "South America", n=2, rendered=False, continent="SA"),
        _group("NLAA", "country", "NL", "Netherlands", n=12, continent="EU", sources=nl_sources),
        _group("NLFA", "country", "NL", "Netherlands", "female", n=8, continent="EU"),
        _group("NLMA", "country", "NL", "Netherlands", "male", n=3, rendered=False, continent="EU"),
        _group("FRAA", "country", "FR", "France", n=18, continent="EU"),
        _group("BRAA", "country", "BR", "Brazil", n=2, rendered=False, continent="SA"),
    ]


def _write_png(path: Path, rgb: tuple[int, int, int], size: int = 64) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), rgb, np.uint8)).save(path, "PNG")


def _render_root(tmp: Path, groups: list[dict[str, Any]] | None = None) -> Path:
    """ROOT/render with a manifest and one PNG per rendered group. Not-rendered groups also get
    a PNG on disk (as a stale earlier render would leave), which must never be published."""
    root = tmp / "root"
    render = root / "render"
    groups = _groups() if groups is None else groups
    render.mkdir(parents=True, exist_ok=True)
    for g in (g for g in groups if re.fullmatch(r"\w+", g["code"])):
        _write_png(render / "faces" / f"{g['code']}.png", COLOURS.get(g["code"], (90, 90, 90)))
    manifest = {
        "generator": "dcgan64",
        "generator_hash": "57113a41145e9dea",
        "truncation": 0.7,
        "min_count": 5,
        "created_at": "2026-11-22T03:00:00+00:00",
        "groups": groups,
    }
    (render / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), "utf-8")
    return root


def _read_data_js(site_dir: Path) -> dict[str, Any]:
    text = (site_dir / "data.js").read_text("utf-8")
    prefix, suffix = "window.FACEATLAS_DATA = ", ";\n"
    assert text.startswith(prefix) and text.endswith(suffix)
    return json.loads(text[len(prefix) : -len(suffix)])


@pytest.fixture(scope="module")
def assets() -> Path:
    try:
        return ensure_assets()
    except RuntimeError as e:
        pytest.skip(f"jsvectormap not installable here: {e}")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, assets: Path) -> Path:
    """A site built once for the read-only tests; returns ROOT."""
    root = _render_root(tmp_path_factory.mktemp("built"))
    build_site(root)
    return root


# -- unit -------------------------------------------------------------------------------
def test_script_json_cannot_end_a_script_and_reads_back() -> None:
    value = {"t": SCRIPT_TITLE, "u": "a\u2028b\u2029c & <!-- -->", "n": [1, 2.5, None]}
    text = script_json(value)
    for ch in "<>&\u2028\u2029":
        assert ch not in text
    assert json.loads(text) == value


def test_script_json_refuses_nan() -> None:
    with pytest.raises(ValueError):
        script_json({"x": float("nan")})


def test_data_js_parses_back_with_hostile_strings(built: Path) -> None:
    site_dir = built / "site"
    text = (site_dir / "data.js").read_text("utf-8")
    assert "</script" not in text.lower()
    assert "<" not in text and "\u2028" not in text
    data = _read_data_js(site_dir)
    nl = next(g for g in data["groups"] if g["code"] == "NLAA")
    titles = [s["title"] for s in nl["sources"]]
    assert titles[:2] == [HOSTILE_TITLE, SCRIPT_TITLE]
    assert titles[3] == "line\u2028separator & <b>bold</b>"
    assert data["min_count"] == 5 and data["generator"] == "dcgan64"


def test_only_rendered_images_are_copied(built: Path) -> None:
    site_dir = built / "site"
    rendered = {"WORLDAA", "CEUAA", "NLAA", "NLFA", "FRAA"}
    assert {p.name for p in (site_dir / "faces").iterdir()} == {f"{c}.png" for c in rendered}
    for code in rendered:
        copy = (site_dir / "faces" / f"{code}.png").read_bytes()
        assert copy == (built / "render" / "faces" / f"{code}.png").read_bytes()
    data = _read_data_js(site_dir)
    for g in data["groups"]:
        assert (g["image"] == f"faces/{g['code']}.png") == (g["code"] in rendered)
        assert g["rendered"] == (g["code"] in rendered)


def test_page_and_vendor_files_are_written(built: Path) -> None:
    site_dir = built / "site"
    for name in ("index.html", "app.js", "style.css", "data.js", site.MARKER_FILE):
        assert (site_dir / name).is_file()
    for name in ("jsvectormap.min.js", "jsvectormap.min.css", "world.js"):
        assert (site_dir / "vendor" / name).stat().st_size > 1000
    assert 'addMap("world"' in (site_dir / "vendor" / "world.js").read_text("utf-8")
    html = (site_dir / "index.html").read_text("utf-8")
    for element_id in ("map", "face", "face-missing", "region-name", "sources", "gender"):
        assert f'id="{element_id}"' in html


def test_charts_are_pngs(built: Path) -> None:
    for name in ("faces_per_country.png", "age_by_gender.png"):
        path = built / "site" / "charts" / name
        assert path.read_bytes()[:8] == PNG_MAGIC
        with Image.open(path) as im:
            assert im.width >= 300 and im.height >= 200
            # Not a blank canvas: bars, axes and text leave many distinct colours.
            assert len(im.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 10


def test_age_by_gender_prefers_world_then_sums_countries() -> None:
    world = age_by_gender(_groups())
    assert world == {"female": {"young": 9, "old": 6}, "male": {"young": 11, "old": 4}}
    countries = [
        _group("NLFY", "country", "NL", "Netherlands", "female", "young", n=3),
        _group("FRFY", "country", "FR", "France", "female", "young", n=4),
        _group("FRMO", "country", "FR", "France", "male", "old", n=5),
        _group("FRAA", "country", "FR", "France", n=9),
    ]
    assert age_by_gender(countries) == {"female": {"young": 7}, "male": {"old": 5}}
    assert age_by_gender([]) == {}


def test_rebuild_replaces_the_previous_site(tmp_path: Path, assets: Path) -> None:
    root = _render_root(tmp_path)
    index = build_site(root)
    assert index == (root / "site" / "index.html").resolve()
    (root / "site" / "faces" / "STALE.png").write_bytes(PNG_MAGIC)
    first = (root / "site" / "data.js").read_bytes()

    assert build_site(root) == index
    assert not (root / "site" / "faces" / "STALE.png").exists()
    assert (root / "site" / "data.js").read_bytes() == first

    # France is no longer rendered: its face must disappear from the site.
    groups = _groups()
    fr = next(g for g in groups if g["code"] == "FRAA")
    fr.update(rendered=False, image=None, reason="too few sources (4 < 5)", n_faces=4)
    root = _render_root(tmp_path, groups)
    build_site(root)
    assert not (root / "site" / "faces" / "FRAA.png").exists()
    assert (root / "site" / "faces" / "NLAA.png").exists()
    # No temporary or old build folders are left beside the site.
    assert {p.name for p in root.iterdir()} == {"render", "site"}


def test_empty_manifest_builds_a_site(tmp_path: Path, assets: Path) -> None:
    root = _render_root(tmp_path, [])
    site_dir = build_site(root).parent
    assert _read_data_js(site_dir)["groups"] == []
    assert list((site_dir / "faces").iterdir()) == []
    for name in ("faces_per_country.png", "age_by_gender.png"):
        assert (site_dir / "charts" / name).read_bytes()[:8] == PNG_MAGIC


def test_custom_output_folder(tmp_path: Path, assets: Path) -> None:
    root = _render_root(tmp_path)
    index = build_site(root, tmp_path / "public" / "atlas")
    assert index == (tmp_path / "public" / "atlas" / "index.html").resolve()
    assert not (root / "site").exists()


def test_refuses_to_replace_a_foreign_folder(tmp_path: Path, assets: Path) -> None:
    root = _render_root(tmp_path)
    other = tmp_path / "documents"
    other.mkdir()
    (other / "thesis.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a faceatlas site"):
        build_site(root, other)
    assert (other / "thesis.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="render folder"):
        build_site(root, root)


def test_bad_images_are_published_as_not_rendered(tmp_path: Path, assets: Path) -> None:
    groups = _groups()
    outside = tmp_path / "root" / "secret.png"
    _write_png(outside, (1, 2, 3))
    by_code = {g["code"]: g for g in groups}
    by_code["NLFA"]["image"] = "../secret.png"  # escapes the render folder
    by_code["FRAA"]["image"] = "faces/nothing-here.png"
    by_code["CEUAA"]["code"] = "../../CEU"  # not a file name: published under another name
    root = _render_root(tmp_path, groups)
    _write_png(root / "render" / "faces" / "CEUAA.png", COLOURS["CEUAA"])
    (root / "render" / "faces" / "WORLDAA.png").write_text("<html>not a png</html>")

    build_site(root)
    data = {g["code"]: g for g in _read_data_js(root / "site")["groups"]}
    assert data["NLFA"]["rendered"] is False and "outside" in data["NLFA"]["reason"]
    assert data["FRAA"]["rendered"] is False and "missing" in data["FRAA"]["reason"]
    assert data["WORLDAA"]["rendered"] is False and "not a PNG" in data["WORLDAA"]["reason"]
    assert data["../../CEU"]["rendered"] is True
    ceu_image = data["../../CEU"]["image"]
    assert ceu_image.startswith("faces/group") and (root / "site" / ceu_image).is_file()
    names = {p.name for p in (root / "site" / "faces").iterdir()}
    assert names == {"NLAA.png", Path(ceu_image).name}


def test_manifest_errors_are_value_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no render manifest"):
        read_manifest(tmp_path)
    (tmp_path / "render").mkdir()
    (tmp_path / "render" / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        read_manifest(tmp_path)
    (tmp_path / "render" / "manifest.json").write_text(json.dumps({"groups": [{"code": "X"}]}))
    with pytest.raises(ValueError, match="'level'"):
        read_manifest(tmp_path)
    bad_count = _group("NLAA", "country", "NL", "Netherlands")
    bad_count["n_faces"] = "12"
    (tmp_path / "render" / "manifest.json").write_text(json.dumps({"groups": [bad_count]}))
    with pytest.raises(ValueError, match="n_faces"):
        read_manifest(tmp_path)


def test_manifest_sources_are_normalised(tmp_path: Path) -> None:
    g = _group("NLAA", "country", "NL", "Netherlands")
    g["sources"] = [{"photo_id": 7, "title": 42, "extra": "dropped", "user": None}, "junk"]
    (tmp_path / "render").mkdir()
    manifest = {"min_count": float("nan"), "truncation": True, "groups": [g]}
    # json.dumps writes NaN by default, as Python's json module reads it.
    (tmp_path / "render" / "manifest.json").write_text(json.dumps(manifest))
    m = read_manifest(tmp_path)
    assert m["min_count"] is None and m["truncation"] is None
    (source,) = m["groups"][0]["sources"]
    assert source == {
        "photo_id": "7",
        "page_url": None,
        "license_name": None,
        "license_url": None,
        "user": None,
        "title": "42",
    }


def test_ensure_assets_without_npm_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(site, "WEB_DIR", tmp_path)
    monkeypatch.setattr(site.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="make site-assets"):
        ensure_assets()


def test_ensure_assets_finds_the_pinned_version(assets: Path) -> None:
    meta = json.loads((assets.parent / "package.json").read_text("utf-8"))
    assert meta["version"] == site.JSVECTORMAP_VERSION == "1.7.0"
    lock = json.loads((site.WEB_DIR / "package-lock.json").read_text("utf-8"))
    assert lock["packages"]["node_modules/jsvectormap"]["version"] == "1.7.0"


# -- browser ----------------------------------------------------------------------------
def _playwright():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    return sync_playwright


@pytest.fixture
def served(built: Path):
    """ROOT/site served by `python -m http.server` on a free 127.0.0.1 port; yields the URL."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
         "--directory", str(built / "site")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (http://...) ..."
        assert "port" in line, f"http.server did not start: {line!r}"
        port = int(line.split(" port ")[1].split()[0])
        yield f"http://127.0.0.1:{port}/index.html"
    finally:
        proc.kill()
        proc.wait(timeout=30)


FACE_PIXEL_JS = """() => {
  const img = document.getElementById('face');
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  return Array.from(ctx.getImageData(c.width >> 1, c.height >> 1, 1, 1).data.slice(0, 3));
}"""
FACE_LOADED_JS = """() => {
  const img = document.getElementById('face');
  return !img.hidden && img.complete && img.naturalWidth > 0;
}"""


# A point of the screen where the region's own path is on top: the centre of a country's box
# can lie in the sea or in a neighbour (France's box spans French Guiana).
REGION_POINT_JS = """(code) => {
  const path = document.querySelector(`path[data-code="${code}"]`);
  const r = path.getBoundingClientRect();
  const points = [];
  for (let i = 1; i < 24; i++) for (let j = 1; j < 24; j++) points.push([i / 24, j / 24]);
  points.sort((a, b) => Math.hypot(a[0] - 0.5, a[1] - 0.5) - Math.hypot(b[0] - 0.5, b[1] - 0.5));
  for (const [fx, fy] of points) {
    const x = r.left + r.width * fx, y = r.top + r.height * fy;
    if (document.elementFromPoint(x, y) === path) return [x, y];
  }
  return null;
}"""


def _click_region(page, code: str) -> None:
    """A real mouse click on a map region, as a user would make it."""
    page.locator(f'path[data-code="{code}"]').scroll_into_view_if_needed()
    point = page.evaluate(REGION_POINT_JS, code)
    assert point is not None, f"region {code} is hidden on the map"
    page.mouse.click(*point)


def _open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    problems: dict[str, list[str]] = {"dialogs": [], "errors": []}

    def on_dialog(dialog) -> None:
        problems["dialogs"].append(dialog.message)
        dialog.dismiss()

    def on_console(message) -> None:
        # Failed loads are reported below with their URL; CSP violations and script errors
        # land here.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems["errors"].append(message.text)

    def on_response(response) -> None:
        # Browsers ask for /favicon.ico on their own; the site has none.
        if response.status >= 400 and not response.url.endswith("/favicon.ico"):
            problems["errors"].append(f"HTTP {response.status}: {response.url}")

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda e: problems["errors"].append(str(e)))
    page.on("console", on_console)
    page.on("response", on_response)
    page.on("requestfailed", lambda r: problems["errors"].append(f"failed: {r.url}"))
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    return page, problems


@pytest.mark.browser
@pytest.mark.slow
def test_page_in_chromium(served: str, built: Path, tmp_path: Path) -> None:
    sync_playwright = _playwright()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page, problems = _open_page(browser, served)
            face = page.locator("#face")

            # On load: the world group.
            assert page.text_content("#region-name") == "World"
            page.wait_for_function(FACE_LOADED_JS)
            assert face.get_attribute("src") == "faces/WORLDAA.png"
            assert page.evaluate(FACE_PIXEL_JS) == list(COLOURS["WORLDAA"])
            assert page.text_content("#count-faces") == "40"
            assert page.locator("#map svg path[data-code]").count() > 100
            # Countries with faces are coloured, others keep the base colour.
            fill = page.get_attribute('path[data-code="FR"]', "fill")
            assert fill and fill != page.get_attribute('path[data-code="DE"]', "fill")

            _click_region(page, "NL")
            page.wait_for_function(
                "() => document.getElementById('region-name').textContent === 'Netherlands'"
            )
            page.wait_for_function(FACE_LOADED_JS)
            assert face.get_attribute("src") == "faces/NLAA.png"
            assert page.evaluate(FACE_PIXEL_JS) == list(COLOURS["NLAA"])
            assert page.text_content("#count-faces") == "12"
            assert page.text_content("#count-photos") == "11"
            assert page.text_content("#count-users") == "10"
            assert page.input_value("#level") == "country"

            page.select_option("#gender", "female")
            page.wait_for_function("() => document.getElementById('face').src.endsWith('NLFA.png')")
            page.wait_for_function(FACE_LOADED_JS)
            assert page.evaluate(FACE_PIXEL_JS) == list(COLOURS["NLFA"])
            assert page.text_content("#count-faces") == "8"

            # Not rendered: a message instead of an image.
            page.select_option("#gender", "male")
            missing = page.locator("#face-missing")
            missing.wait_for(state="visible")
            assert missing.text_content() == "too few faces: 3 (at least 5 needed)"
            assert not face.is_visible() and face.get_attribute("src") is None
            assert page.text_content("#count-faces") == "3"

            # Hostile strings are text, links are http(s) only.
            page.select_option("#gender", "all")
            items = page.locator("#sources li")
            assert items.count() == 4
            assert items.nth(0).inner_text().startswith(HOSTILE_TITLE + " by someone")
            assert items.nth(1).inner_text().startswith(SCRIPT_TITLE)
            assert page.locator("#sources").inner_text().count("<script>alert(3)</script>") == 1
            assert page.locator("img[src=x]").count() == 0
            assert page.locator("#sources b, #sources script, #sources img").count() == 0
            hrefs = page.eval_on_selector_all("#sources a", "as => as.map(a => a.href)")
            assert hrefs and all(h.startswith("http://") for h in hrefs)
            assert page.locator("#sources li").nth(2).locator("a").count() == 0
            first_link = items.nth(0).locator("a").first
            assert first_link.get_attribute("href") == "http://www.flickr.com/photos/someone/1/"

            # Continent level: clicking a country selects its continent.
            page.select_option("#level", "continent")
            _click_region(page, "FR")
            page.wait_for_function(
                "() => document.getElementById('region-name').textContent === 'Europe'"
            )
            page.wait_for_function(FACE_LOADED_JS)
            assert page.evaluate(FACE_PIXEL_JS) == list(COLOURS["CEUAA"])
            # The whole continent (of the countries with data) is highlighted.
            assert page.get_attribute('path[data-code="NL"]', "fill") == page.get_attribute(
                'path[data-code="FR"]', "fill"
            )

            # A country not rendered, at country level.
            page.select_option("#level", "country")
            _click_region(page, "BR")
            missing.wait_for(state="visible")
            assert missing.text_content() == "too few faces: 2 (at least 5 needed)"
            assert page.text_content("#region-name") == "Brazil"

            shot = tmp_path / "site.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == PNG_MAGIC
            assert problems == {"dialogs": [], "errors": []}
        finally:
            browser.close()


@pytest.mark.browser
@pytest.mark.slow
def test_page_from_disk(built: Path) -> None:
    sync_playwright = _playwright()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page, problems = _open_page(browser, (built / "site" / "index.html").as_uri())
            assert page.locator("#map svg path[data-code]").count() > 100
            page.wait_for_function(FACE_LOADED_JS)
            assert page.get_attribute("#face", "src") == "faces/WORLDAA.png"
            assert page.text_content("#region-name") == "World"
            charts = page.eval_on_selector_all(
                "#charts img", "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)"
            )
            assert charts == [True, True]
            _click_region(page, "FR")
            page.wait_for_function(
                "() => document.getElementById('face').src.endsWith('faces/FRAA.png')"
            )
            page.wait_for_function(FACE_LOADED_JS)
            assert problems == {"dialogs": [], "errors": []}
        finally:
            browser.close()
