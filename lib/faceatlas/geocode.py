"""Offline reverse geocoding: (lat, lon) -> country, admin1, place, continent.

Built on reverse_geocoder's bundled GeoNames cities1000 table and k-d tree. Everything is
vectorized numpy so a Spark Python worker can geocode whole Arrow batches at once; the
index is built lazily once per Python process (see `place_index`).

Country and continent codes are kept as plain Python strings in numpy object arrays.
Namibia ("NA") and North America ("NA") look like a missing-value marker to CSV readers,
so nothing here goes through pandas.read_csv or any other NA-sniffing parser.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from functools import lru_cache

import numpy as np

__all__ = [
    "CONTINENTS",
    "CONTINENT_OVERRIDES",
    "COUNTRY_NAME_OVERRIDES",
    "EARTH_RADIUS_KM",
    "PlaceIndex",
    "continent_of",
    "continent_table",
    "continents_of",
    "country_name",
    "country_name_table",
    "country_names_of",
    "haversine_km",
    "place_index",
]

# IUGG mean Earth radius; the usual choice for spherical great-circle distances.
EARTH_RADIUS_KM: float = 6371.0088

# The seven continent codes we allow anywhere downstream.
CONTINENTS: frozenset[str] = frozenset({"AF", "AN", "AS", "EU", "NA", "OC", "SA"})

# Codes pycountry_convert raises for (AQ EH PN SX TF TL VA UM AN CS) or whose answer we pin
# down explicitly (BV HM already come back as "AN", XK as "EU", but we do not want a library
# upgrade to silently change them). Checked before pycountry_convert.
CONTINENT_OVERRIDES: dict[str, str] = {
    "AQ": "AN",  # Antarctica
    "BV": "AN",  # Bouvet Island
    "HM": "AN",  # Heard Island and McDonald Islands
    "TF": "AN",  # French Southern Territories (Kerguelen etc.)
    "EH": "AF",  # Western Sahara
    "PN": "OC",  # Pitcairn
    "SX": "NA",  # Sint Maarten (Dutch part), Caribbean
    "TL": "AS",  # Timor-Leste: South-eastern Asia in the UN geoscheme
    "VA": "EU",  # Holy See
    "UM": "OC",  # US Minor Outlying Islands: nearly all in the Pacific
    "AN": "NA",  # Netherlands Antilles (withdrawn code), Caribbean
    "CS": "EU",  # Serbia and Montenegro (withdrawn code)
    "XK": "EU",  # Kosovo (user-assigned code, not ISO 3166-1)
}

# Names for codes pycountry.countries does not know. XK is the only one present in
# reverse_geocoder's data; AN and CS are withdrawn codes that older data sets still use.
COUNTRY_NAME_OVERRIDES: dict[str, str] = {
    "XK": "Kosovo",
    "AN": "Netherlands Antilles",
    "CS": "Serbia and Montenegro",
}


# ---------------------------------------------------------------------------------------------
# Distances
# ---------------------------------------------------------------------------------------------


def haversine_km(
    lat1: np.ndarray | float,
    lon1: np.ndarray | float,
    lat2: np.ndarray | float,
    lon2: np.ndarray | float,
) -> np.ndarray:
    """Great-circle distance in km between points given in degrees (broadcasts like numpy)."""
    p1 = np.radians(np.asarray(lat1, dtype=np.float64))
    p2 = np.radians(np.asarray(lat2, dtype=np.float64))
    dphi = p2 - p1
    dlmb = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    a = np.sin(dphi * 0.5) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb * 0.5) ** 2
    # Rounding can push `a` a hair above 1 near antipodes (or below 0); arcsin would give NaN.
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


# ---------------------------------------------------------------------------------------------
# Country / continent tables
# ---------------------------------------------------------------------------------------------


def _rgeocoder():  # -> reverse_geocoder.RGeocoder (untyped library)
    # Imported lazily so importing faceatlas.geocode stays cheap and loads no data.
    import reverse_geocoder

    # mode=1: single-process cKDTree (mode 2 forks worker processes, which must not happen
    # inside Spark workers). verbose=False: the library prints while loading otherwise.
    # RGeocoder is a process-wide singleton, so these kwargs only matter on first use.
    return reverse_geocoder.RGeocoder(mode=1, verbose=False)


@lru_cache(maxsize=1)
def _rg_country_codes() -> tuple[str, ...]:
    return tuple(sorted({loc["cc"] for loc in _rgeocoder().locations}))


def _pycountry_codes() -> list[str]:
    import pycountry

    return [c.alpha_2 for c in pycountry.countries]


def _all_known_codes() -> set[str]:
    return (
        set(_rg_country_codes())
        | set(_pycountry_codes())
        | set(CONTINENT_OVERRIDES)
        | set(COUNTRY_NAME_OVERRIDES)
    )


def _compute_continent(cc: str) -> str:
    if cc in CONTINENT_OVERRIDES:
        return CONTINENT_OVERRIDES[cc]
    import pycountry_convert

    try:
        code = pycountry_convert.country_alpha2_to_continent_code(cc)
    except (KeyError, ValueError, TypeError) as exc:
        raise KeyError(f"no continent known for country code {cc!r}") from exc
    if code not in CONTINENTS:
        # Guard against the library's own codes leaking out (e.g. a new "Antarctica" code).
        raise KeyError(f"pycountry_convert gave unexpected continent {code!r} for {cc!r}")
    return code


def _compute_country_name(cc: str) -> str:
    if cc in COUNTRY_NAME_OVERRIDES:
        return COUNTRY_NAME_OVERRIDES[cc]
    import pycountry

    country = pycountry.countries.get(alpha_2=cc)
    if country is None:
        raise KeyError(f"no country name known for country code {cc!r}")
    # common_name is the everyday form ("Bolivia", "Iran", "South Korea", "Taiwan").
    return getattr(country, "common_name", None) or country.name


@lru_cache(maxsize=1)
def continent_table() -> dict[str, str]:
    """Continent code for every country code reverse_geocoder can return, plus pycountry's.

    Computed once per process; the returned dict is shared, so callers must not mutate it.
    """
    return {cc: _compute_continent(cc) for cc in sorted(_all_known_codes())}


@lru_cache(maxsize=1)
def country_name_table() -> dict[str, str]:
    """English short name for every code in `continent_table`. Computed once per process."""
    return {cc: _compute_country_name(cc) for cc in sorted(_all_known_codes())}


def _check_code(cc: object) -> str:
    if not isinstance(cc, str):
        raise KeyError(f"country code must be a str, got {cc!r}")
    return cc


def continent_of(cc: str) -> str:
    """Continent code (AF AN AS EU NA OC SA) of an ISO alpha-2 country code.

    Raises KeyError for a code neither the override table nor pycountry_convert knows.
    """
    cc = _check_code(cc)
    table = continent_table()
    if cc in table:
        return table[cc]
    return _compute_continent(cc)  # raises KeyError with a clear message


def country_name(cc: str) -> str:
    """English short name (pycountry's common_name if it has one, else name)."""
    cc = _check_code(cc)
    table = country_name_table()
    if cc in table:
        return table[cc]
    return _compute_country_name(cc)  # raises KeyError with a clear message


def _map_codes(codes: Iterable[str | None], fn: Callable[[str], str]) -> np.ndarray:
    # Map each distinct code once; None (no country) stays None.
    values = list(codes)
    memo: dict[str | None, str | None] = {None: None}
    for cc in set(values):
        if cc not in memo:
            memo[cc] = fn(cc)
    out = np.empty(len(values), dtype=object)
    out[:] = [memo[cc] for cc in values]
    return out


def continents_of(codes: Iterable[str | None]) -> np.ndarray:
    """Vectorized `continent_of`: object array of continent codes; None maps to None."""
    return _map_codes(codes, continent_of)


def country_names_of(codes: Iterable[str | None]) -> np.ndarray:
    """Vectorized `country_name`: object array of names; None maps to None."""
    return _map_codes(codes, country_name)


# ---------------------------------------------------------------------------------------------
# Place index
# ---------------------------------------------------------------------------------------------


def _object_array(values: list[str | None]) -> np.ndarray:
    # Fill an empty object array rather than np.array(values): that would pick a <U dtype.
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


class PlaceIndex:
    """Nearest-place lookup over reverse_geocoder's cities1000 table.

    Holds the per-place attributes as numpy arrays so `lookup` is a single k-d tree query
    plus fancy indexing, with no per-point Python work.
    """

    def __init__(self) -> None:
        from scipy.spatial import cKDTree

        rg = _rgeocoder()
        locs = rg.locations
        self.lat: np.ndarray = np.array([loc["lat"] for loc in locs], dtype=np.float64)
        self.lon: np.ndarray = np.array([loc["lon"] for loc in locs], dtype=np.float64)
        if getattr(rg, "mode", 1) == 1:
            self.tree = rg.tree
        else:
            # Someone created the singleton in multi-process mode first; its tree is a
            # subclass we do not want to rely on, so build a plain one on the same points.
            self.tree = cKDTree(np.column_stack([self.lat, self.lon]))
        if self.tree.n != len(locs):
            raise RuntimeError("reverse_geocoder tree and locations disagree in size")

        # Empty strings are "unknown"; expose them as None so they become nulls downstream.
        self.cc: np.ndarray = _object_array([loc["cc"] for loc in locs])
        self.admin1: np.ndarray = _object_array([loc["admin1"] or None for loc in locs])
        self.name: np.ndarray = _object_array([loc["name"] or None for loc in locs])
        # Per-place continent/name, so lookup needs no dictionary work per point.
        self.continent: np.ndarray = continents_of(self.cc)
        self.country_name: np.ndarray = country_names_of(self.cc)

    def __len__(self) -> int:
        return len(self.cc)

    def __reduce__(self):
        # If pickled into a Spark closure, rebuild (once) from the worker's own data
        # instead of shipping ~150k places over the wire.
        return (place_index, ())

    def lookup(self, lat: np.ndarray, lon: np.ndarray) -> dict[str, np.ndarray]:
        """Reverse-geocode points given in degrees.

        Returns equal-length 1-D arrays: country, admin1, place, continent, country_name
        (object arrays of str or None) and place_km (float64, haversine distance to the
        matched place). Rows with a non-finite coordinate or |lat| > 90 get None / NaN.
        Longitudes are wrapped into [-180, 180) first. Like reverse_geocoder, the nearest
        place is found in raw (lat, lon) degree space, not by great-circle distance.
        """
        lat = np.asarray(lat, dtype=np.float64).reshape(-1)
        lon = np.asarray(lon, dtype=np.float64).reshape(-1)
        if lat.shape != lon.shape:
            raise ValueError(f"lat and lon differ in length: {lat.size} != {lon.size}")
        n = lat.size

        # cKDTree rejects NaN/inf outright, so query only the valid rows.
        valid = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90.0)
        all_valid = bool(valid.all())
        qlat = lat if all_valid else lat[valid]
        qlon = lon if all_valid else lon[valid]
        qlon = (qlon + 180.0) % 360.0 - 180.0

        points = np.empty((qlat.size, 2), dtype=np.float64)
        points[:, 0] = qlat
        points[:, 1] = qlon
        _, idx = self.tree.query(points, k=1)
        idx = np.asarray(idx, dtype=np.intp).reshape(-1)
        km = haversine_km(qlat, qlon, self.lat[idx], self.lon[idx])

        if all_valid:
            return {
                "country": self.cc[idx],
                "admin1": self.admin1[idx],
                "place": self.name[idx],
                "place_km": km,
                "continent": self.continent[idx],
                "country_name": self.country_name[idx],
            }

        out: dict[str, np.ndarray] = {}
        for key, src in (
            ("country", self.cc),
            ("admin1", self.admin1),
            ("place", self.name),
            ("continent", self.continent),
            ("country_name", self.country_name),
        ):
            col = np.full(n, None, dtype=object)
            col[valid] = src[idx]
            out[key] = col
        place_km = np.full(n, np.nan, dtype=np.float64)
        place_km[valid] = km
        out["place_km"] = place_km
        return out


_INDEX: PlaceIndex | None = None
_INDEX_LOCK = threading.Lock()


def place_index() -> PlaceIndex:
    """The process-wide PlaceIndex, built on first call (about a second) and then reused."""
    global _INDEX
    if _INDEX is None:
        with _INDEX_LOCK:
            if _INDEX is None:
                _INDEX = PlaceIndex()
    return _INDEX
