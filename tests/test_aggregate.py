"""Tests for faceatlas.aggregate: group means, counts, thresholds, the one-user rule, balancing
weights, visitors, null labels, FairFace bins, bad latents, order and bad arguments. Every
expected mean is computed here with plain numpy from the faces that should contribute."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from faceatlas.aggregate import (
    AGE_BINS,
    OUTPUT_COLUMNS,
    AggregateOptions,
    aggregate,
    user_homes,
)

D = 6  # latent length
PLAIN = AggregateOptions(min_count=1, one_user_once=False)


def face(
    i: int,
    *,
    user: str | None = None,
    photo: int | None = None,
    country: str | None = "NL",
    continent: str | None = "EU",
    gender: str | None = "female",
    age: str | None = "young",
    age_bin: str | None = None,
    latent: object = None,
) -> dict:
    """One faces row; by default its own user and photo, and a latent drawn from its index."""
    if latent is None:
        latent = np.random.default_rng(i).normal(size=D).astype(np.float32)
    return {
        "face_id": f"f{i:03d}",
        "photo_id": 1000 + i if photo is None else photo,
        "user_id": f"u{i:03d}" if user is None else user,
        "country": country,
        "continent": continent,
        "gender": gender,
        "age_group": age,
        "age_bin": age_bin,
        "latent": latent,
    }


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(face(0)))


def group(out: pd.DataFrame, level: str, region: str, gender: str = "all", age: str = "all"):
    hit = out[
        (out["level"] == level)
        & (out["region"] == region)
        & (out["gender"] == gender)
        & (out["age_group"] == age)
    ]
    assert len(hit) == 1, (level, region, gender, age)
    return hit.iloc[0]


def mean_of(rows: list[dict]) -> np.ndarray:
    return np.mean([np.asarray(r["latent"], dtype=np.float64) for r in rows], axis=0)


def test_group_mean_is_the_plain_mean_of_its_faces() -> None:
    rows = [face(i, gender="female" if i % 3 else "male", age="young" if i % 2 else "old")
            for i in range(12)]  # fmt: skip
    out, _ = aggregate(frame(rows), PLAIN)
    np.testing.assert_allclose(group(out, "country", "NL")["latent"], mean_of(rows), rtol=1e-6)
    female_old = [r for r in rows if r["gender"] == "female" and r["age_group"] == "old"]
    g = group(out, "country", "NL", "female", "old")
    np.testing.assert_allclose(g["latent"], mean_of(female_old), rtol=1e-6)
    assert g["face_ids"] == sorted(r["face_id"] for r in female_old)
    assert g["latent"].dtype == np.float32 and g["latent"].shape == (D,)
    assert g["weights_sum"] == pytest.approx(len(female_old))


def test_one_user_once_weighs_a_prolific_user_like_any_other() -> None:
    prolific = [face(i, user="busy") for i in range(10)]
    single = [face(10, user="once")]
    faces = frame(prolific + single)
    out, _ = aggregate(faces, AggregateOptions(min_count=1))
    g = group(out, "country", "NL")
    expected = (mean_of(prolific) + mean_of(single)) / 2
    np.testing.assert_allclose(g["latent"], expected, rtol=1e-6)
    assert (g["n_faces"], g["n_users"], g["n_sources"]) == (11, 2, 2)
    assert g["weights_sum"] == pytest.approx(2.0)
    assert g["n_effective"] == pytest.approx(2.0)
    plain = group(aggregate(faces, PLAIN)[0], "country", "NL")
    np.testing.assert_allclose(plain["latent"], mean_of(prolific + single), rtol=1e-6)
    assert plain["n_sources"] == 11
    assert not np.allclose(plain["latent"], expected)


def test_counts_photos_users_and_levels() -> None:
    rows = [
        face(0, user="a", photo=1),
        face(1, user="a", photo=1),  # two faces in one photo
        face(2, user="b", photo=2),
        face(3, user="c", photo=3, country="FR"),
        face(4, user="a", photo=4, country="JP", continent="AS"),
    ]
    out, acc = aggregate(frame(rows), PLAIN)
    nl = group(out, "country", "NL")
    assert (nl["n_faces"], nl["n_photos"], nl["n_users"]) == (3, 2, 2)
    world = group(out, "world", "WORLD")
    assert (world["n_faces"], world["n_photos"], world["n_users"]) == (5, 4, 3)
    assert world["face_ids"] == [r["face_id"] for r in rows]
    np.testing.assert_allclose(world["latent"], mean_of(rows), rtol=1e-6)
    eu = group(out, "continent", "EU")
    countries = out[(out["level"] == "country") & (out["gender"] == "all")]
    countries = countries[
        (countries["age_group"] == "all") & countries["region"].isin(["NL", "FR"])
    ]
    assert eu["n_faces"] == countries["n_faces"].sum() == 4
    continents = out[(out["level"] == "continent") & (out["gender"] == "all")]
    assert continents[continents["age_group"] == "all"]["n_faces"].sum() == world["n_faces"]
    assert acc["faces_in"] == acc["faces_used"] == 5


def test_min_count_on_both_sides_of_the_bound() -> None:
    opts = AggregateOptions(min_count=5)
    out, acc = aggregate(frame([face(i, country="NL") for i in range(5)]
                               + [face(10 + i, country="FR") for i in range(4)]), opts)  # fmt: skip
    nl, fr = group(out, "country", "NL"), group(out, "country", "FR")
    assert nl["renderable"] and nl["reason"] is None
    assert not fr["renderable"] and fr["reason"] == "too_few_users (4 < 5)"
    assert acc["groups_renderable"] == int(out["renderable"].sum()) < acc["groups"]


def test_min_count_compares_users_under_the_one_user_rule() -> None:
    rows = [face(i, user="a" if i < 4 else "b") for i in range(6)]  # 6 faces, 2 users
    g = group(aggregate(frame(rows), AggregateOptions(min_count=5))[0], "country", "NL")
    assert (g["n_sources"], g["renderable"], g["reason"]) == (2, False, "too_few_users (2 < 5)")
    opts = AggregateOptions(min_count=5, one_user_once=False)
    g = group(aggregate(frame(rows), opts)[0], "country", "NL")
    assert (g["n_sources"], g["renderable"], g["reason"]) == (6, True, None)
    opts = AggregateOptions(min_count=7, one_user_once=False)
    assert group(aggregate(frame(rows), opts)[0], "country", "NL")["reason"] == (
        "too_few_faces (6 < 7)"
    )


def test_balance_gives_young_and_old_equal_weight() -> None:
    young = [face(i, age="young") for i in range(9)]
    old = [face(9, age="old")]
    faces = frame(young + old)
    out, _ = aggregate(faces, AggregateOptions(min_count=1, balance=True))
    midpoint = (mean_of(young) + mean_of(old)) / 2
    for gender in ("all", "female"):
        g = group(out, "country", "NL", gender, "all")
        np.testing.assert_allclose(g["latent"], midpoint, rtol=1e-6)
        assert g["weights_sum"] == pytest.approx(10.0)
        # Kish: the old face weighs 5, each young face 5/9.
        assert g["n_effective"] == pytest.approx(100 / (9 * (5 / 9) ** 2 + 25))
    # Groups that collapse nothing are plain means.
    g = group(out, "country", "NL", "female", "young")
    np.testing.assert_allclose(g["latent"], mean_of(young), rtol=1e-6)
    unbalanced = group(aggregate(faces, AggregateOptions(min_count=1))[0], "country", "NL")
    np.testing.assert_allclose(unbalanced["latent"], mean_of(young + old), rtol=1e-6)
    assert unbalanced["n_effective"] == pytest.approx(10.0)


def test_balance_over_gender_and_age_cells() -> None:
    cells = {
        ("female", "young"): [face(i, gender="female", age="young") for i in range(5)],
        ("female", "old"): [face(5 + i, gender="female", age="old") for i in range(2)],
        ("male", "young"): [face(7, gender="male", age="young")],
        ("male", "old"): [face(8 + i, gender="male", age="old") for i in range(3)],
    }
    unknown = [face(20, gender=None, age="young")]  # cannot be put in a gender cell
    all_rows = [r for rows in cells.values() for r in rows] + unknown
    out, _ = aggregate(frame(all_rows), AggregateOptions(min_count=1, balance=True))
    g = group(out, "country", "NL")
    expected = np.mean([mean_of(rows) for rows in cells.values()], axis=0)
    np.testing.assert_allclose(g["latent"], expected, rtol=1e-6)
    assert "f020" not in g["face_ids"] and g["n_faces"] == 11
    young = group(out, "country", "NL", "all", "young")
    expected = (mean_of(cells["female", "young"]) + mean_of(cells["male", "young"])) / 2
    np.testing.assert_allclose(young["latent"], expected, rtol=1e-6)
    # A user's faces are averaged inside each cell first.
    rows = [face(i, user="busy", age="young") for i in range(4)] + [
        face(4, user="other", age="young"),
        face(5, user="busy", age="old"),
    ]
    g = group(aggregate(frame(rows), AggregateOptions(min_count=1, balance=True))[0],
              "country", "NL")  # fmt: skip
    expected = ((mean_of(rows[:4]) + mean_of(rows[4:5])) / 2 + mean_of(rows[5:])) / 2
    np.testing.assert_allclose(g["latent"], expected, rtol=1e-6)
    assert g["n_users"] == 2 and g["weights_sum"] == pytest.approx(3.0)


def test_user_homes_shares_ties_and_duplicates() -> None:
    photos = pd.DataFrame(
        {
            "photo_id": [1, 2, 3, 4, 5, 5, 6, 7, 8, 9],
            "user_id": ["a", "a", "a", "a", "a", "a", "b", "b", None, "c"],
            "country": ["FR", "FR", "FR", "NL", "FR", "FR", "NL", "BE", "FR", None],
        }
    )
    homes = user_homes(photos)
    assert homes.columns.tolist() == ["user_id", "home_country", "home_share", "n_photos"]
    assert homes["user_id"].tolist() == ["a", "b"]  # c has no country, None no user
    a, b = homes.iloc[0], homes.iloc[1]
    assert (a["home_country"], a["n_photos"]) == ("FR", 5)  # photo 5 counts once
    assert a["home_share"] == pytest.approx(0.8)
    assert (b["home_country"], b["home_share"]) == ("BE", 0.5)  # tie: alphabetically first
    empty = user_homes(photos.iloc[:0])
    assert len(empty) == 0 and "home_share" in empty.columns
    with pytest.raises(ValueError, match="country"):
        user_homes(photos[["user_id"]])


def test_visitors_are_excluded_from_every_level() -> None:
    photos = pd.DataFrame(
        {
            "user_id": ["tourist"] * 10 + ["half"] * 4,
            "country": ["FR"] * 8 + ["NL"] * 2 + ["FR", "FR", "NL", "NL"],
        }
    )
    homes = user_homes(photos)
    rows = [
        face(0, user="tourist"),  # in NL, 80 % of the user's photos in FR
        face(1, user="tourist", country="FR"),  # at home
        face(2, user="nobody-knows"),  # no home info: kept
        face(3, user="half"),  # 50/50 FR/NL: home FR by the tie rule
        face(4, user=None),
    ]
    out, acc = aggregate(frame(rows), AggregateOptions(min_count=1), homes)
    for level, region in (("country", "NL"), ("continent", "EU"), ("world", "WORLD")):
        ids = group(out, level, region)["face_ids"]
        assert "f000" not in ids and "f003" not in ids and "f002" in ids and "f004" in ids
    assert group(out, "country", "FR")["face_ids"] == ["f001"]
    assert (acc["faces_visitors"], acc["users_visitors"], acc["faces_used"]) == (2, 2, 3)
    assert acc["visitors_checked"] is True
    out, acc = aggregate(frame(rows), AggregateOptions(min_count=1, visitor_share=0.6), homes)
    assert "f003" in group(out, "country", "NL")["face_ids"]
    assert "f000" not in group(out, "country", "NL")["face_ids"]
    assert acc["faces_visitors"] == 1
    opts = AggregateOptions(min_count=1, exclude_visitors=False)
    assert aggregate(frame(rows), opts, homes)[1]["faces_visitors"] == 0
    assert aggregate(frame(rows), AggregateOptions(min_count=1))[1]["visitors_checked"] is False
    with pytest.raises(ValueError, match="more than one row"):
        aggregate(frame(rows), AggregateOptions(), pd.concat([homes, homes]))


def test_null_labels_count_in_all_only() -> None:
    rows = [
        face(0, gender="female", age="young"),
        face(1, gender=None, age="old"),
        face(2, gender="male", age=None),
        face(3, gender=None, age=None, country=None),
        face(4, continent=None, country=None),
    ]
    out, acc = aggregate(frame(rows), PLAIN)
    assert group(out, "country", "NL")["face_ids"] == ["f000", "f001", "f002"]
    assert group(out, "country", "NL", "all", "old")["face_ids"] == ["f001"]
    assert group(out, "country", "NL", "male", "all")["face_ids"] == ["f002"]
    assert (
        len(out[(out["region"] == "NL") & (out["gender"] == "male") & (out["age_group"] != "all")])
        == 0
    )
    assert group(out, "continent", "EU")["n_faces"] == 4  # a null country still counts here
    assert group(out, "world", "WORLD")["n_faces"] == 5
    assert acc["faces_without_gender"] == 2 and acc["faces_without_age_group"] == 2
    assert acc["faces_without_country"] == 2 and acc["faces_without_continent"] == 1
    # A null user is a user of its own.
    rows = [face(i, user=None) for i in range(3)]
    rows = [{**r, "user_id": None} for r in rows]
    g = group(aggregate(frame(rows), AggregateOptions(min_count=3))[0], "country", "NL")
    assert (g["n_users"], g["n_sources"], g["renderable"]) == (3, 3, True)


def test_fairface_bins_option() -> None:
    rows = [face(0, age_bin="20-29"), face(1, age_bin="20-29"), face(2, age="old", age_bin="70+"),
            face(3, age_bin=None)]  # fmt: skip
    out, acc = aggregate(frame(rows), PLAIN)
    assert not out["age_group"].isin(AGE_BINS).any()
    out, acc = aggregate(frame(rows), AggregateOptions(min_count=1, one_user_once=False,
                                                      age_bins=True))  # fmt: skip
    g = group(out, "country", "NL", "all", "20-29")
    np.testing.assert_allclose(g["latent"], mean_of(rows[:2]), rtol=1e-6)
    assert group(out, "country", "NL", "female", "70+")["face_ids"] == ["f002"]
    assert group(out, "country", "NL")["n_faces"] == 4
    ages = out[(out["level"] == "country") & (out["gender"] == "all")]["age_group"].tolist()
    assert ages == ["all", "young", "old", "20-29", "70+"]
    assert acc["faces_without_age_bin"] == 1
    with pytest.raises(ValueError, match="age_bin"):
        aggregate(frame([face(0, age_bin="20-30")]), AggregateOptions(age_bins=True))


def test_fairface_bins_match_the_attributes_module() -> None:
    attributes = pytest.importorskip("faceatlas.attributes")
    assert attributes.FAIRFACE_BINS == AGE_BINS


def test_bad_latents_are_dropped_and_counted() -> None:
    nan = np.full(D, np.nan, dtype=np.float32)
    rows = [face(0), face(1, latent=nan), face(2, latent=[1.0] * (D - 1) + [np.inf]),
            face(3, latent=[]), face(4)]  # fmt: skip
    rows[4]["latent"] = None
    out, acc = aggregate(frame(rows), PLAIN)
    g = group(out, "world", "WORLD")
    assert g["face_ids"] == ["f000"]
    np.testing.assert_allclose(g["latent"], rows[0]["latent"], rtol=1e-6)
    assert (acc["faces_in"], acc["faces_bad_latent"], acc["faces_used"]) == (5, 4, 1)
    # All latents bad: no group, no crash.
    out, acc = aggregate(frame(rows[1:]), PLAIN)
    assert len(out) == 0 and acc["faces_bad_latent"] == 4


def test_latent_shapes_must_agree() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        aggregate(frame([face(0), face(1, latent=np.zeros(D + 1))]))
    with pytest.raises(ValueError, match="1-D"):
        aggregate(frame([face(0, latent=np.zeros((2, D)))]))


def test_order_is_deterministic() -> None:
    rows = [face(i, country=c, continent=k, gender=g, age=a)
            for i, (c, k, g, a) in enumerate([("NL", "EU", "male", "old"),
                                             ("JP", "AS", "female", "young"),
                                             ("FR", "EU", "female", "old"),
                                             ("BR", "SA", "male", "young")])]  # fmt: skip
    out, _ = aggregate(frame(rows), PLAIN)
    shuffled, _ = aggregate(frame(rows).sample(frac=1, random_state=3), PLAIN)
    pd.testing.assert_frame_equal(out.drop(columns="latent"), shuffled.drop(columns="latent"))
    for a, b in zip(out["latent"], shuffled["latent"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    keys = list(zip(out["level"], out["region"], strict=True))
    assert keys[0] == ("world", "WORLD")
    assert list(dict.fromkeys(keys)) == [
        ("world", "WORLD"), ("continent", "AS"), ("continent", "EU"), ("continent", "SA"),
        ("country", "BR"), ("country", "FR"), ("country", "JP"), ("country", "NL"),
    ]  # fmt: skip
    world = out[out["level"] == "world"]
    assert list(zip(world["gender"], world["age_group"], strict=True)) == [
        ("all", "all"), ("all", "young"), ("all", "old"), ("female", "all"),
        ("female", "young"), ("female", "old"), ("male", "all"), ("male", "young"),
        ("male", "old"),
    ]  # fmt: skip
    only = aggregate(frame(rows), AggregateOptions(levels=("country", "world")))[0]
    assert only["level"].unique().tolist() == ["world", "country"]


def test_empty_input() -> None:
    out, acc = aggregate(frame([]))
    assert out.columns.tolist() == list(OUTPUT_COLUMNS) and len(out) == 0
    assert acc["faces_in"] == acc["groups"] == acc["groups_renderable"] == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_count": -1},
        {"min_count": 2.5},
        {"visitor_share": 0.0},
        {"visitor_share": 1.5},
        {"levels": ()},
        {"levels": ("planet",)},
        {"levels": ("world", "world")},
    ],
)
def test_bad_options(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        AggregateOptions(**kwargs)


def test_bad_faces_tables() -> None:
    with pytest.raises(ValueError, match="latent"):
        aggregate(frame([face(0)]).drop(columns="latent"))
    with pytest.raises(ValueError, match="gender"):
        aggregate(frame([face(0, gender="F")]))
    with pytest.raises(ValueError, match="age_group"):
        aggregate(frame([face(0, age="adult")]))
    with pytest.raises(ValueError, match="unique"):
        aggregate(frame([face(0), face(0)]))
    # age_bin is only needed with the option.
    assert len(aggregate(frame([face(0)]).drop(columns="age_bin"))[0]) > 0
