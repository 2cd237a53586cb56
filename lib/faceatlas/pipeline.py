"""The whole chain in one Spark session: ingest, fetch, faces, project, aggregate, render,
site. `faceatlas run` (and jobs/pipeline.py) call `run_pipeline`; `make demo` runs it on
the demo world and scores the result. Every stage resumes, so re-running the chain after
an interruption redoes only what is missing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

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
    step("site", lambda: str(build_site(root)))
    out["seconds"] = round(time.time() - t0, 1)
    return out
