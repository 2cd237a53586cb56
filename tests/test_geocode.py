"""Unit tests for faceatlas.geocode (no Spark; a second or two to build the index)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pycountry
import pytest

from faceatlas import geocode
from faceatlas.geocode import (
    CONTINENT_OVERRIDES,
    CONTINENTS,
    COUNTRY_NAME_OVERRIDES,
    continent_of,
    continent_table,
    continents_of,
    country_name,
    country_name_table,
    country_names_of,
    haversine_km,
    place_index,
)

LIB_DIR = Path(__file__).resolve().parents[1] / "lib"


@pytest.fixture(scope="module")
def index() -> geocode.PlaceIndex:
    return place_index()


def _one(index: geocode.PlaceIndex, lat: float, lon: float) -> dict[str, object]:
    out = index.lookup(np.array([lat]), np.array([lon]))
    return {k: v[0] for k, v in out.items()}


# --- known points -----------------------------------------------------------------------------

KNOWN = [
    # name, lat, lon, country, continent, place
    ("Amsterdam", 52.37, 4.89, "NL", "EU", "Amsterdam"),
    ("Windhoek", -22.56, 17.08, "NA", "AF", "Windhoek"),
    ("New York", 40.71, -74.0, "US", "NA", "New York City"),
    ("Sydney", -33.87, 151.21, "AU", "OC", "Sydney"),
    ("Sao Paulo", -23.55, -46.63, "BR", "SA", "Sao Paulo"),
    ("Tokyo", 35.68, 139.69, "JP", "AS", "Tokyo"),
    ("Nairobi", -1.29, 36.82, "KE", "AF", "Nairobi"),
    ("McMurdo", -77.85, 166.67, "AQ", "AN", "McMurdo Station"),
]


@pytest.mark.parametrize(("label", "lat", "lon", "cc", "cont", "place"), KNOWN)
def test_known_points(index, label, lat, lon, cc, cont, place):
    row = _one(index, lat, lon)
    assert row["country"] == cc, label
    assert row["continent"] == cont, label
    assert row["place"] == place, label
    assert row["place_km"] < 30.0, label
    assert isinstance(row["country_name"], str) and row["country_name"]


def test_known_points_batch_matches_singles(index):
    lat = np.array([k[1] for k in KNOWN])
    lon = np.array([k[2] for k in KNOWN])
    out = index.lookup(lat, lon)
    assert list(out["country"]) == [k[3] for k in KNOWN]
    assert list(out["continent"]) == [k[4] for k in KNOWN]


def test_country_names_and_admin1(index):
    ams = _one(index, 52.37, 4.89)
    assert ams["country_name"] == "Netherlands"
    assert ams["admin1"] == "North Holland"
    wdh = _one(index, -22.56, 17.08)
    assert wdh["country_name"] == "Namibia"
    # McMurdo has no admin1 in the data: empty string must come back as None.
    assert _one(index, -77.85, 166.67)["admin1"] is None
    assert _one(index, 25.03, 121.56)["country_name"] == "Taiwan"  # common_name preferred


def test_far_from_land_is_far(index):
    out = index.lookup(np.array([0.0, 0.0, -45.0]), np.array([-150.0, -25.0, -120.0]))
    assert (out["place_km"] > 500.0).all(), out["place_km"]
    assert all(isinstance(c, str) for c in out["country"])


def test_place_km_is_haversine_to_matched_place(index):
    out = index.lookup(np.array([52.37]), np.array([4.89]))
    # Amsterdam in cities1000 is at 52.37403, 4.88969.
    expected = haversine_km(52.37, 4.89, 52.37403, 4.88969)
    assert out["place_km"][0] == pytest.approx(float(expected), rel=1e-9)
    assert out["place_km"][0] < 1.0


# --- vectorized behaviour ---------------------------------------------------------------------


def test_empty_lookup(index):
    out = index.lookup(np.array([], dtype=np.float64), np.array([], dtype=np.float64))
    assert set(out) == {"country", "admin1", "place", "place_km", "continent", "country_name"}
    for v in out.values():
        assert isinstance(v, np.ndarray)
        assert v.shape == (0,)


def test_random_points(index):
    rng = np.random.default_rng(42)
    n = 10_000
    lat = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))  # uniform on the sphere
    lon = rng.uniform(-180.0, 180.0, n)
    out = index.lookup(lat, lon)
    for v in out.values():
        assert len(v) == n
    assert all(isinstance(c, str) and len(c) == 2 for c in out["country"])
    assert set(out["continent"]) <= CONTINENTS
    assert all(isinstance(c, str) and c for c in out["country_name"])
    assert np.isfinite(out["place_km"]).all()
    assert (out["place_km"] >= 0).all()
    # No point on Earth is farther than half the circumference from its match.
    assert (out["place_km"] <= 20016.0).all()


def test_invalid_coordinates_become_null(index):
    lat = np.array([52.37, np.nan, 95.0, -22.56, 10.0])
    lon = np.array([4.89, 4.89, 0.0, 17.08, np.inf])
    out = index.lookup(lat, lon)
    assert list(out["country"]) == ["NL", None, None, "NA", None]
    assert list(out["continent"]) == ["EU", None, None, "AF", None]
    assert np.isnan(out["place_km"][[1, 2, 4]]).all()
    assert np.isfinite(out["place_km"][[0, 3]]).all()


def test_longitude_is_wrapped(index):
    a = index.lookup(np.array([40.71]), np.array([-74.0]))
    b = index.lookup(np.array([40.71]), np.array([-74.0 + 360.0]))
    assert a["place"][0] == b["place"][0] == "New York City"
    assert a["place_km"][0] == pytest.approx(b["place_km"][0])


def test_mismatched_lengths_raise(index):
    with pytest.raises(ValueError):
        index.lookup(np.zeros(3), np.zeros(2))


def test_index_is_cached_and_pickles_to_singleton(index):
    assert place_index() is index
    assert pickle.loads(pickle.dumps(index)) is index
    assert len(index) == 144_563


# --- "NA" must never turn into a null ---------------------------------------------------------


def test_na_codes_survive_parquet_roundtrip(index, tmp_path):
    out = index.lookup(np.array([-22.56, 40.71]), np.array([17.08, -74.0]))
    table = pa.table({k: pa.array(v) for k, v in out.items()})
    assert table.column("country").null_count == 0
    assert table.column("continent").null_count == 0
    path = tmp_path / "geo.parquet"
    pq.write_table(table, path)

    df = pd.read_parquet(path)
    assert df["country"].tolist() == ["NA", "US"]
    assert df["continent"].tolist() == ["AF", "NA"]
    assert df["country"].notna().all() and df["continent"].notna().all()

    # Same via a pandas DataFrame built from the lookup output.
    pdf = pd.DataFrame(out)
    path2 = tmp_path / "geo2.parquet"
    pdf.to_parquet(path2)
    back = pd.read_parquet(path2)
    assert back.loc[0, "country"] == "NA"
    assert back.loc[1, "continent"] == "NA"
    assert not back[["country", "continent"]].isna().any().any()


def test_na_in_tables():
    assert continent_of("NA") == "AF"  # Namibia is in Africa
    assert country_name("NA") == "Namibia"
    assert continent_table()["US"] == "NA"
    assert "NA" in continent_table() and "NA" in country_name_table()


# --- continent / name tables ------------------------------------------------------------------


def _rg_codes() -> set[str]:
    return {loc["cc"] for loc in geocode._rgeocoder().locations}


def test_every_rg_and_pycountry_code_has_continent_and_name():
    codes = _rg_codes() | {c.alpha_2 for c in pycountry.countries}
    assert len(_rg_codes()) == 246
    table = continent_table()
    names = country_name_table()
    for cc in codes:
        assert table[cc] in CONTINENTS, cc
        assert continent_of(cc) == table[cc]
        assert isinstance(names[cc], str) and names[cc].strip(), cc
        assert country_name(cc) == names[cc]
    assert set(table.values()) == CONTINENTS
    assert set(table) == set(names)


@pytest.mark.parametrize(
    ("cc", "cont"),
    [
        ("AQ", "AN"),
        ("BV", "AN"),
        ("HM", "AN"),
        ("TF", "AN"),
        ("EH", "AF"),
        ("PN", "OC"),
        ("SX", "NA"),
        ("TL", "AS"),
        ("VA", "EU"),
        ("UM", "OC"),
        ("AN", "NA"),
        ("CS", "EU"),
        ("XK", "EU"),
    ],
)
def test_continent_overrides(cc, cont):
    assert CONTINENT_OVERRIDES[cc] == cont
    assert continent_of(cc) == cont
    assert continent_table()[cc] == cont


def test_override_codes_not_in_pycountry_have_names():
    assert country_name("XK") == "Kosovo"
    assert country_name("AN") == "Netherlands Antilles"
    assert country_name("CS") == "Serbia and Montenegro"
    missing = {cc for cc in _rg_codes() if pycountry.countries.get(alpha_2=cc) is None}
    assert missing <= set(COUNTRY_NAME_OVERRIDES)


def test_some_continents_and_names():
    assert continent_of("RU") == "EU"
    assert continent_of("EG") == "AF"
    assert continent_of("PA") == "NA"
    assert continent_of("GL") == "NA"
    assert continent_of("NZ") == "OC"
    assert country_name("BO") == "Bolivia"
    assert country_name("IR") == "Iran"
    assert country_name("DE") == "Germany"


def test_unknown_code_raises_keyerror():
    with pytest.raises(KeyError, match="ZZ"):
        continent_of("ZZ")
    with pytest.raises(KeyError, match="ZZ"):
        country_name("ZZ")
    with pytest.raises(KeyError):
        continent_of(None)  # type: ignore[arg-type]


def test_vectorized_code_helpers():
    codes = np.array(["NA", "US", None, "NA", "XK"], dtype=object)
    assert list(continents_of(codes)) == ["AF", "NA", None, "AF", "EU"]
    assert list(country_names_of(codes)) == [
        "Namibia",
        "United States",
        None,
        "Namibia",
        "Kosovo",
    ]
    assert continents_of([]).shape == (0,)
    with pytest.raises(KeyError):
        continents_of(["ZZ"])


# --- haversine --------------------------------------------------------------------------------


def test_haversine_paris_london():
    d = haversine_km(48.8566, 2.3522, 51.5074, -0.1278)
    assert float(d) == pytest.approx(343.5, rel=0.01)


def test_haversine_zero_and_antipodes():
    assert float(haversine_km(12.3, 45.6, 12.3, 45.6)) == 0.0
    half = np.pi * geocode.EARTH_RADIUS_KM
    assert float(haversine_km(0.0, 0.0, 0.0, 180.0)) == pytest.approx(half, rel=1e-12)
    assert float(haversine_km(90.0, 0.0, -90.0, 0.0)) == pytest.approx(half, rel=1e-12)
    # Near-antipodal points with awkward rounding must not produce NaN.
    d = haversine_km(
        np.array([30.0, -45.123456789]),
        np.array([10.0, 33.3]),
        np.array([-30.0, 45.123456789]),
        np.array([-170.0, -146.7]),
    )
    assert np.isfinite(d).all()
    assert d == pytest.approx(np.full(2, 20015.1), abs=1.0)


def test_haversine_vectorized_broadcast():
    d = haversine_km(np.zeros(4), np.zeros(4), 0.0, np.array([0.0, 90.0, 180.0, -90.0]))
    q = np.pi * geocode.EARTH_RADIUS_KM / 2
    assert d == pytest.approx([0.0, q, 2 * q, q])


# --- quiet loading ----------------------------------------------------------------------------


def test_loading_prints_nothing_in_fresh_process():
    # The RGeocoder singleton may already exist in this process, so check a fresh one.
    code = (
        "import numpy as np\n"
        "import faceatlas.geocode as g\n"
        "assert g._INDEX is None\n"  # import alone builds nothing
        "out = g.place_index().lookup(np.array([52.37]), np.array([4.89]))\n"
        "assert out['country'][0] == 'NL'\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(LIB_DIR), env.get("PYTHONPATH", "")) if p)
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""
    assert res.stderr == ""


def test_lookup_prints_nothing(index, capsys):
    index.lookup(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    continent_table()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
