"""The aggregate and render stages: group means of the latents, and their faces.

Aggregate reads the latents of one generator and projection setting (by default those of
the last projection run), the users' home countries from the photos table (Spark does
the counting), and runs aggregate.py's core on the driver: the latents of a run's faces
are small (100 to 9,216 floats per face) next to the photos they came from. It replaces
ROOT/groups/ as a whole. Render loads the generator, checks it is the one the latents were
made with, writes one PNG per renderable group to ROOT/render/faces/ and
ROOT/render/manifest.json with counts and attribution for every group.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from faceatlas import __version__, schemas
from faceatlas.storage import HadoopFS, normalize_root, read_stats, table_path, write_stats

log = logging.getLogger(__name__)

GROUPS = pa.schema(
    [
        ("level", pa.string()),
        ("region", pa.string()),
        ("gender", pa.string()),
        ("age_group", pa.string()),
        ("n_faces", pa.int64()),
        ("n_photos", pa.int64()),
        ("n_users", pa.int64()),
        ("n_sources", pa.int64()),
        ("n_effective", pa.float64()),  # Kish's effective number of sources (balancing)
        ("renderable", pa.bool_()),
        ("reason", pa.string()),
        ("latent", pa.list_(pa.float32())),
        ("latent_shape", pa.list_(pa.int32())),
        ("face_ids", pa.list_(pa.string())),
        ("weights_sum", pa.float64()),
        ("generator_hash", pa.string()),
        ("space", pa.string()),
        ("projection_settings_hash", pa.string()),
        ("settings_hash", pa.string()),
        ("input_hash", pa.string()),  # of everything above: a changed group re-renders
        ("run_id", pa.string()),  # the aggregate run that last changed the group
    ]
)


class AggregateError(RuntimeError):
    """An aggregate or render run cannot start: exit code 2."""


def _local(path: str) -> Path:
    if "://" in path and not path.startswith("file:"):
        raise AggregateError(f"{path}: aggregate and render write local folders only for now")
    return Path(path.removeprefix("file:"))


def _signature(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _group_hash(row: dict) -> str:
    """What a group's face depends on: its latent, its counts, its members and settings."""
    keep = {k: v for k, v in row.items() if k not in ("latent", "input_hash", "run_id")}
    latent = np.ascontiguousarray(row["latent"], np.float32).tobytes()
    return _signature(keep, hashlib.sha256(latent).hexdigest())


def _previous_groups(path: Path) -> dict[tuple, dict]:
    if not path.exists():
        return {}
    rows = pq.read_table(path).to_pylist()
    return {(r["level"], r["region"], r["gender"], r["age_group"]): r for r in rows}


def _unchanged(fs: HadoopFS, root: str, stage: str, previous: dict, t0: float, **counts) -> dict:
    """The stats of a run that found nothing to do: the last run's outputs stand, checked now
    (so `faceatlas status` does not call them older than their inputs)."""
    stats = {**previous, **counts, "nothing_new": True, "seconds": round(time.time() - t0, 3),
             "finished_at": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
    write_stats(fs, root, stage, stats)
    return stats


def run_aggregate(spark, root: str, opts, generator_hash: str | None = None,
                  settings_hash: str | None = None) -> dict:  # fmt: skip
    """Group means of one generator's latents into ROOT/groups/; returns the stats.

    Every stage before it only ever adds part files, so the listing of the input tables
    tells whether anything is new: when it and the settings are those of the last run,
    nothing is read and nothing is written. Otherwise the groups are recomputed (a mean is
    cheap next to a read of the latents), and a group whose inputs did not change keeps its
    input_hash and run_id, so that render re-renders only the changed ones."""
    from pyspark.sql import functions as F

    from faceatlas.aggregate import aggregate, user_homes

    root = normalize_root(root)
    t0 = time.time()
    fs = HadoopFS(spark)
    latents_path = table_path(root, "latents")
    if not fs.exists(latents_path):
        raise AggregateError(f"no latents at {latents_path}: run `faceatlas project` first")
    last = read_stats(fs, root, "project") or {}
    generator_hash = generator_hash or last.get("generator_hash")
    settings_hash = settings_hash or last.get("settings_hash")
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()}
    agg_hash = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    photos_path = table_path(root, "photos")
    inputs = [latents_path] + ([photos_path] if opts.exclude_visitors else [])
    listing = [fs.list_files(p) if fs.exists(p) else [] for p in inputs]
    signature = _signature([[(f, n) for f, n, _ in files] for files in listing],
                           generator_hash, settings_hash, agg_hash, __version__)  # fmt: skip
    final = _local(table_path(root, "groups"))
    previous_stats = read_stats(fs, root, "aggregate") or {}
    if previous_stats.get("input_signature") == signature and final.exists():
        log.warning("aggregate: nothing new: the latents%s and settings are those of run %s",
                    " and photos" if opts.exclude_visitors else "",
                    previous_stats.get("run_id"))  # fmt: skip
        return _unchanged(fs, root, "aggregate", previous_stats, t0, groups_changed=0,
                          groups_unchanged=previous_stats.get("groups"))  # fmt: skip
    latents = spark.read.schema(schemas.spark_ddl(schemas.LATENTS)).parquet(latents_path)
    if generator_hash is None:
        raise AggregateError("which generator? no _stats/project.json: give --generator-hash")
    latents = latents.where(F.col("generator_hash") == generator_hash)
    if settings_hash:
        latents = latents.where(F.col("settings_hash") == settings_hash)
    cols = ["face_id", "photo_id", "user_id", "country", "continent", "gender", "age_group",
            "age_bin", "latent", "latent_shape", "space"]  # fmt: skip
    faces = latents.select(*cols).toPandas()
    if faces.empty:
        raise AggregateError(f"no latents for generator {generator_hash} and settings "
                             f"{settings_hash}")  # fmt: skip
    spaces = set(faces["space"])
    shapes = {tuple(s) for s in faces["latent_shape"]}
    if len(spaces) != 1 or len(shapes) != 1:
        raise AggregateError(f"latents of mixed spaces or shapes: {spaces}, {shapes}")
    faces["latent"] = [np.asarray(v, np.float32) for v in faces["latent"]]

    homes = None
    if opts.exclude_visitors and fs.exists(photos_path):
        photos = spark.read.schema(schemas.spark_ddl(schemas.PHOTOS)).parquet(photos_path)
        users = faces["user_id"].dropna().unique().tolist()
        per_user = (photos.where(F.col("user_id").isin(users)).select("user_id", "country")
                    .toPandas())  # fmt: skip
        homes = user_homes(per_user)
    groups, accounting = aggregate(faces, opts, homes)

    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    (space,), (shape,) = spaces, shapes
    previous = _previous_groups(final)
    out = {f.name: [] for f in GROUPS}
    changed, keys = 0, set()
    for g in groups.itertuples(index=False):
        row = g._asdict()
        row.update(latent=np.asarray(row["latent"], np.float32).tolist(),
                   latent_shape=list(shape), face_ids=list(row["face_ids"]),
                   generator_hash=generator_hash, space=space,
                   projection_settings_hash=settings_hash, settings_hash=agg_hash)  # fmt: skip
        row = {f.name: row.get(f.name) for f in GROUPS}
        row["input_hash"] = _group_hash(row)
        key = (row["level"], row["region"], row["gender"], row["age_group"])
        keys.add(key)
        before = previous.get(key)
        if before and before.get("input_hash") == row["input_hash"]:
            row["run_id"] = before["run_id"]
        else:
            row["run_id"] = run_id
            changed += 1
        for f in GROUPS:
            out[f.name].append(row[f.name])
    table = pa.table(out, schema=GROUPS)
    removed = len(set(previous) - keys)
    tmp = final.with_name(f"groups.__tmp_{run_id}")
    tmp.mkdir(parents=True)
    pq.write_table(table, tmp / "part-00000.parquet")
    if final.exists():
        old = final.with_name(f"groups.__old_{run_id}")
        final.rename(old)
        tmp.rename(final)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        tmp.rename(final)

    stats = {
        "stage": "aggregate",
        "version": __version__,
        "run_id": run_id,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.time() - t0, 3),
        "generator_hash": generator_hash,
        "projection_settings_hash": settings_hash,
        "space": space,
        "groups": len(groups),
        "groups_changed": changed,
        "groups_unchanged": len(groups) - changed,
        "groups_removed": removed,
        "nothing_new": False,
        "input_signature": signature,
        "renderable": int(groups["renderable"].sum()) if len(groups) else 0,
        "accounting": accounting,
        "settings": settings,
        "settings_hash": agg_hash,
        "output": str(final),
    }
    write_stats(fs, root, "aggregate", stats)
    log.warning("aggregate: %d faces -> %d groups (%d changed, %d unchanged, %d removed), %d "
                "renderable", len(faces), stats["groups"], changed, len(groups) - changed,
                removed, stats["renderable"])  # fmt: skip
    return stats


def run_render(spark, root: str, generator: str | None = None, truncation: float = 1.0,
               scale: int = 1) -> dict:  # fmt: skip
    """One PNG per renderable group and manifest.json in ROOT/render/."""
    from pyspark.sql import functions as F

    from faceatlas.gan import GeneratorError, load
    from faceatlas.geocode import continent_of, country_name
    from faceatlas.render import MAX_SOURCES, group_code, render_latent, write_manifest, write_png

    root = normalize_root(root)
    t0 = time.time()
    fs = HadoopFS(spark)
    groups_path = _local(table_path(root, "groups"))
    if not groups_path.exists():
        raise AggregateError(f"no groups at {groups_path}: run `faceatlas aggregate` first")
    groups = pq.read_table(groups_path).to_pylist()
    if not groups:
        raise AggregateError("the groups table is empty")
    generator = generator or (read_stats(fs, root, "project") or {}).get("generator")
    if generator is None:
        raise AggregateError("which generator? give --generator")
    wanted = groups[0]["generator_hash"]
    out_dir = _local(table_path(root, "render"))
    faces_dir = out_dir / "faces"
    codes = [group_code(g["level"], g["region"], g["gender"], g["age_group"]) for g in groups]
    signature = _signature(sorted(zip(codes, [g.get("input_hash") for g in groups],
                                      strict=True)),
                           generator, wanted, truncation, scale, __version__)  # fmt: skip
    previous_stats = read_stats(fs, root, "render") or {}
    pngs_there = all((faces_dir / f"{c}.png").exists()
                     for c, g in zip(codes, groups, strict=True) if g["renderable"])  # fmt: skip
    if (previous_stats.get("input_signature") == signature and pngs_there
            and (out_dir / "manifest.json").exists()):  # fmt: skip
        log.warning("render: nothing new: the groups and settings are those of the last render")
        return _unchanged(fs, root, "render", previous_stats, t0, rendered=0,
                          kept=previous_stats.get("renderable"))  # fmt: skip
    try:
        G = load(generator)
    except GeneratorError as e:
        raise AggregateError(str(e)) from None
    if G.identity != wanted:
        raise AggregateError(f"{generator} is generator {G.identity}, but the groups were "
                             f"made with {wanted}: give the same --generator")  # fmt: skip
    # A face whose group did not change since the last render, made the same way, stays.
    before: dict[str, str] = {}
    if (out_dir / "manifest.json").exists():
        old = json.loads((out_dir / "manifest.json").read_text())
        if (old.get("generator_hash"), old.get("truncation"), old.get("scale", 1)) == (
                G.identity, truncation, scale):  # fmt: skip
            before = {e["code"]: e.get("input_hash") for e in old.get("groups", [])
                      if e.get("rendered")}  # fmt: skip

    # Attribution: the photos behind each group's faces.
    face_ids = sorted({f for g in groups for f in g["face_ids"]})
    photo_of = {f: int(f.rsplit("-", 1)[0]) for f in face_ids}
    photos_path = table_path(root, "photos")
    sources: dict[int, dict] = {}
    if fs.exists(photos_path):
        photos = spark.read.schema(schemas.spark_ddl(schemas.PHOTOS)).parquet(photos_path)
        cols = ["photo_id", "page_url", "license_name", "license_url", "user_nickname", "title"]
        for r in (photos.where(F.col("photo_id").isin(sorted(set(photo_of.values()))))
                  .select(*cols).collect()):  # fmt: skip
            d = r.asDict()
            d["user"] = d.pop("user_nickname")
            sources[d["photo_id"]] = d

    faces_dir.mkdir(parents=True, exist_ok=True)
    wanted_pngs = {f"{c}.png" for c, g in zip(codes, groups, strict=True) if g["renderable"]}
    for stale in faces_dir.glob("*.png"):
        if stale.name not in wanted_pngs:
            stale.unlink()
    entries = []
    rendered = 0
    continents = {"AF": "Africa", "AN": "Antarctica", "AS": "Asia", "EU": "Europe",
                  "NA": "North America", "OC": "Oceania", "SA": "South America"}  # fmt: skip
    for code, g in zip(codes, groups, strict=True):
        continent = None
        if g["level"] == "world":
            name = "World"
        elif g["level"] == "continent":
            name, continent = continents.get(g["region"], g["region"]), g["region"]
        else:
            try:
                name, continent = country_name(g["region"]), continent_of(g["region"])
            except (KeyError, ValueError):
                name = g["region"]
        image = None
        if g["renderable"]:
            png = faces_dir / f"{code}.png"
            if before.get(code) != g.get("input_hash") or g.get("input_hash") is None or (
                    not png.exists()):  # fmt: skip
                latent = np.asarray(g["latent"], np.float32).reshape(g["latent_shape"])
                write_png(png, render_latent(G, latent, g["space"], truncation), scale)
                rendered += 1
            image = f"faces/{code}.png"
        pids = sorted({photo_of[f] for f in g["face_ids"]})
        entries.append({
            "code": code, "level": g["level"], "region": g["region"], "name": name,
            "continent": continent,
            "gender": g["gender"], "age_group": g["age_group"], "n_faces": g["n_faces"],
            "n_photos": g["n_photos"], "n_users": g["n_users"], "n_sources": g["n_sources"],
            "rendered": image is not None, "image": image, "reason": g["reason"],
            "input_hash": g.get("input_hash"),
            "sources": [sources.get(p, {"photo_id": p}) for p in pids[:MAX_SOURCES]],
            "sources_total": len(pids),
        })  # fmt: skip
    manifest = {
        "generator": generator,
        "generator_hash": G.identity,
        "truncation": truncation,
        "scale": scale,
        "min_count": ((read_stats(fs, root, "aggregate") or {}).get("settings") or {}).get(
            "min_count"
        ),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "aggregate": (read_stats(fs, root, "aggregate") or {}).get("settings"),
        "groups": entries,
    }
    write_manifest(out_dir / "manifest.json", manifest)
    stats = {
        "stage": "render",
        "version": __version__,
        "finished_at": manifest["created_at"],
        "seconds": round(time.time() - t0, 3),
        "generator": generator,
        "generator_hash": G.identity,
        "truncation": truncation,
        "groups": len(entries),
        "renderable": sum(e["rendered"] for e in entries),
        "rendered": rendered,  # this run; the others' faces were kept
        "kept": sum(e["rendered"] for e in entries) - rendered,
        "nothing_new": False,
        "input_signature": signature,
        "output": str(out_dir),
    }
    write_stats(fs, root, "render", stats)
    log.warning("render: %d of %d renderable groups rendered, %d kept (unchanged), into %s",
                rendered, stats["renderable"], stats["kept"], out_dir)  # fmt: skip
    return stats
