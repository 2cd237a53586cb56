"""A human-readable summary of a data root: what each stage wrote and what it dropped."""

from __future__ import annotations

from faceatlas.storage import HadoopFS, normalize_root, read_stats, table_path


def summarize(spark, root: str, top: int = 10) -> str:
    from pyspark.sql import functions as F

    root = normalize_root(root)
    fs = HadoopFS(spark)
    out: list[str] = [f"data root: {root}"]
    stats = read_stats(fs, root, "ingest")
    if stats is None:
        out.append("ingest: not run yet")
        return "\n".join(out)
    out.append(
        f"ingest: {stats['lines_read']:,} lines -> {stats['photos_kept']:,} photos kept, "
        f"{stats['videos']:,} videos, {stats['filtered_total']:,} filtered, "
        f"{stats['quarantined_total']:,} quarantined ({stats['seconds']:.1f} s, "
        f"finished {stats['finished_at']})"
    )
    for group in ("filtered", "quarantined"):
        parts = [f"{r} {n:,}" for r, n in stats[group].items() if n]
        out.append(f"  {group}: " + (", ".join(parts) if parts else "none"))

    photos = spark.read.parquet(table_path(root, "photos"))
    by_continent = photos.groupBy("continent").count().orderBy(F.desc("count")).collect()
    out.append("photos per continent: " + ", ".join(
        f"{r['continent']} {r['count']:,}" for r in by_continent
    ))  # fmt: skip
    by_country = (
        photos.groupBy("country", "country_name").count().orderBy(F.desc("count")).limit(top)
    ).collect()
    n_countries = photos.select("country").distinct().count()
    out.append(f"countries: {n_countries}; the top {len(by_country)}:")
    for r in by_country:
        out.append(f"  {r['country']}  {r['country_name']:<32} {r['count']:>10,}")
    far = photos.where(F.col("far_from_place")).count()
    bogus = photos.where(F.col("taken_at_bogus")).count()
    out.append(f"far from any place: {far:,}; bogus date taken: {bogus:,}")
    fetch = read_stats(fs, root, "fetch")
    if fetch is None:
        out.append("fetch: not run yet")
    else:
        table = fetch["table_counts"]
        out.append(
            f"fetch: images table {sum(table.values()):,} rows: "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(table.items(), key=lambda kv: -kv[1]))
        )
        out.append(
            f"  last run {fetch['run_id']}: {fetch['fetched']:,} fetched, "
            f"{fetch['already_settled']:,} already settled, {fetch['seconds']:.1f} s "
            f"({fetch['images_per_second']:.1f} photos/s)"
        )
    out += _faces_lines(spark, root, read_stats(fs, root, "faces"))
    project = read_stats(fs, root, "project")
    if project:
        out.append(f"project: {project['projected']:,} faces into {project['generator']} "
                   f"({project['space']}), mean PSNR {project['mean_psnr']} dB")  # fmt: skip
    agg, render = read_stats(fs, root, "aggregate"), read_stats(fs, root, "render")
    if agg and render:
        out.append(f"groups: {agg['groups']:,}, {agg['renderable']:,} renderable; "
                   f"{render.get('renderable', render['rendered']):,} faces in "
                   f"{render['output']}")  # fmt: skip
    demo = read_stats(fs, root, "demo")
    if demo:
        out.append(f"demo score: retrieval accuracy {demo['retrieval_accuracy']:.2f} "
                   f"({demo['correct']} of {demo['countries']})")  # fmt: skip
    return "\n".join(out)


def _faces_lines(spark, root: str, stats: dict | None) -> list[str]:
    if stats is None:
        return ["faces: not run yet"]
    from pyspark.sql import functions as F

    from faceatlas import schemas

    faces = spark.read.schema(schemas.spark_ddl(schemas.FACES)).parquet(f"{root}/faces")
    row = faces.agg(
        F.count("*").alias("n"),
        F.sum(F.col("quality_pass").cast("int")).alias("passed"),
        F.countDistinct("country").alias("countries"),
        F.sum((F.col("gender") == "female").cast("int")).alias("female"),
        F.sum((F.col("age_group") == "young").cast("int")).alias("young"),
    ).collect()[0]
    photos = stats["photos"]
    return [
        f"faces: {row['n'] or 0:,} faces in {row['countries']:,} countries, "
        f"{row['passed'] or 0:,} pass the quality checks; {row['female'] or 0:,} female, "
        f"{row['young'] or 0:,} young",
        f"  last run {stats['run_id']}: {stats['processed']:,} photos processed "
        f"({photos['faces']:,} with faces, {photos['no_face']:,} without, "
        f"{photos['quarantined']:,} quarantined), {stats['seconds']:.1f} s",
    ]
