"""The whole chain in one Spark session: ingest, fetch, faces, project, aggregate, render,
site. `faceatlas run` (and jobs/pipeline.py) call `run_pipeline`; `make demo` runs it on
the demo world and scores the result. Every stage resumes, so re-running the chain after
an interruption redoes only what is missing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from faceatlas.faces import FaceOptions
from faceatlas.fetch import ImageOptions
from faceatlas.httpfetch import FetchOptions
from faceatlas.ingest import IngestOptions
from faceatlas.project import ProjectOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineJob:
    ingest: IngestOptions = field(default_factory=IngestOptions)
    fetch: FetchOptions = field(default_factory=FetchOptions)
    image: ImageOptions = field(default_factory=ImageOptions)
    per_country: int | None = None
    url_template: str | None = None
    faces: FaceOptions = field(default_factory=FaceOptions)
    generator: str = "dcgan64"
    project: ProjectOptions = field(default_factory=ProjectOptions)
    aggregate: object = None  # aggregate.AggregateOptions; None: its defaults
    truncation: float = 1.0
    incremental: bool = False  # ingest only input files not ingested before


def run_pipeline(spark, root: str, inputs: list[str], job: PipelineJob) -> dict:
    """Run every stage in order; returns each stage's stats and the site's index path."""
    from faceatlas.aggregate import AggregateOptions
    from faceatlas.site import build_site
    from faceatlas.spark_aggregate import run_aggregate, run_render
    from faceatlas.spark_faces import FacesJob, run_faces
    from faceatlas.spark_fetch import FetchJob, run_fetch
    from faceatlas.spark_ingest import run_ingest
    from faceatlas.spark_project import ProjectJob, run_project

    out: dict = {}
    t0 = time.time()

    def step(name: str, fn):
        t = time.time()
        log.warning("run: %s ...", name)
        out[name] = fn()
        log.warning("run: %s done in %.1f s", name, time.time() - t)

    if inputs:
        step("ingest", lambda: run_ingest(spark, inputs, root, job.ingest,
                                          incremental=job.incremental))  # fmt: skip
    step("fetch", lambda: run_fetch(spark, root, FetchJob(
        fetch=job.fetch, image=job.image, per_country=job.per_country,
        url_template=job.url_template)))  # fmt: skip
    step("faces", lambda: run_faces(spark, root, FacesJob(faces=job.faces)))
    step("project", lambda: run_project(spark, root, ProjectJob(
        generator=job.generator, options=job.project)))  # fmt: skip
    step("aggregate", lambda: run_aggregate(spark, root, job.aggregate or AggregateOptions()))
    step("render", lambda: run_render(spark, root, job.generator, job.truncation))
    out["work"] = work_done(out)
    site = Path(root.removeprefix("file:")) / "site" / "index.html"
    if any(out["work"].values()) or not site.exists():
        step("site", lambda: str(build_site(root)))
    else:
        out["site"] = str(site)
    out["nothing_new"] = not any(out["work"].values())
    out["seconds"] = round(time.time() - t0, 1)
    log.warning("run: %s in %.1f s", describe_work(out["work"]), out["seconds"])
    return out


def work_done(out: dict) -> dict[str, int]:
    """What each stage of a run did, from its stats: files, photos, faces or groups."""
    count = {
        "ingest": lambda s: s.get("files_ingested", 0 if s.get("nothing_new") else 1),
        "fetch": lambda s: s.get("fetched", 0),
        "faces": lambda s: s.get("processed", 0),
        "project": lambda s: s.get("projected", 0),
        "aggregate": lambda s: 0 if s.get("nothing_new") else s.get("groups_changed", 1),
        "render": lambda s: s.get("rendered", 0),
    }
    return {stage: int(fn(out[stage])) for stage, fn in count.items() if stage in out}


def describe_work(work: dict[str, int]) -> str:
    if not any(work.values()):
        return "nothing new: every stage found its work already done"
    units = {"ingest": "files", "fetch": "photos fetched", "faces": "photos searched",
             "project": "faces projected", "aggregate": "groups changed",
             "render": "faces rendered"}  # fmt: skip
    return "new work: " + ", ".join(f"{stage} {n} {units[stage]}" for stage, n in work.items())
