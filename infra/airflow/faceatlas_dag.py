"""faceatlas_reprocess: the faceatlas stages as an Apache Airflow DAG, one task per stage.

    ingest >> fetch >> faces >> project >> aggregate >> render >> site

Each Spark stage is its own application, submitted with `SparkSubmitOperator` (provider
apache-airflow-providers-apache-spark) from the job files `jobs/STAGE.py`, so that only the
project stage asks for GPUs. The site is built on the Airflow worker with
`python -m faceatlas site`, as in infra/cron.example. Every stage resumes from what it has
written, so a retried task carries on; `max_active_runs=1` keeps two runs from writing the
same data root at once. Written for Airflow 3.3 (tested with the versions pinned in
infra/airflow/requirements.txt).

Deployment
----------
1. Copy this file into the dags folder (`[core] dags_folder`) of the scheduler, the DAG
   processor and the workers, or point `dags_folder` at infra/airflow.
2. On the workers: `spark-submit` on PATH (or the connection extra `spark-binary`), the
   cluster's client configuration (HADOOP_CONF_DIR for YARN), and a faceatlas checkout with
   its `.venv` and site assets (`make venv site-assets`) for the site task.
3. A Spark connection (default id `spark_default`): its host is the master (`yarn`,
   `spark://HOST:7077`, `k8s://https://HOST:443`), its extra may set `deploy-mode`, `queue`,
   `namespace`. Connection settings override the properties file's `spark.master`.
4. Variables (Admin > Variables, or `AIRFLOW_VAR_<NAME>` environment variables); each falls
   back to the environment variable in brackets, read when the file is parsed, then to the
   default shown. They are read when a task renders its templates, never while the file is
   parsed, so parsing needs no metadata database.

   faceatlas_home          [FACEATLAS_HOME] /opt/faceatlas: the checkout or install
   faceatlas_jobs_dir      [FACEATLAS_JOBS_DIR] HOME/jobs: the job files; a URI such as
                           local:///opt/faceatlas/jobs (Kubernetes image) is used as is
   faceatlas_data_root     [FACEATLAS_DATA_ROOT] /shared/faceatlas: the data root
   faceatlas_input_dir     [FACEATLAS_INPUT_DIR] /shared/yfcc100m/incoming: the folder of
                           YFCC100M metadata files; ingest takes each new file once
   faceatlas_spark_conn_id [FACEATLAS_SPARK_CONN_ID] spark_default
   faceatlas_spark_properties [FACEATLAS_SPARK_PROPERTIES] empty: a spark-defaults file
                           (infra/spark-defaults.*.conf); empty: Spark's own
   faceatlas_env_archive   [FACEATLAS_ENV_ARCHIVE] empty: the packed environment
                           (infra/pack-env.sh), local or a URI; sets spark.archives=ENV#environment
                           and spark.pyspark.python=./environment/bin/python. Empty: the
                           executors' Python already has faceatlas
   faceatlas_driver_python [FACEATLAS_DRIVER_PYTHON] empty: spark.pyspark.driver.python, needed
                           with a packed environment in client mode (a local Python that
                           imports faceatlas, e.g. HOME/.venv/bin/python)
   faceatlas_py_files      [FACEATLAS_PY_FILES] empty: --py-files, e.g. the faceatlas wheel
                           copied to a .zip name (see infra/README.md: not for the faces stage)
   faceatlas_gpu_discovery_script [FACEATLAS_GPU_DISCOVERY_SCRIPT] HOME/infra/gpu-discovery.sh
   faceatlas_gpu_vendor    [FACEATLAS_GPU_VENDOR] empty: nvidia.com on Kubernetes
   faceatlas_python        [FACEATLAS_PYTHON] HOME/.venv/bin/python: runs the site task
   faceatlas_site_out      [FACEATLAS_SITE_OUT] empty: where the site goes (default ROOT/site)
   faceatlas_site_copy     [FACEATLAS_SITE_COPY] /var/lib/faceatlas: with a URI data root
                           (hdfs://, s3a://) the site is built from a copy of ROOT/render
                           fetched here with `hdfs dfs -get`

5. Run parameters (the trigger form) override the data root, the input folder and the
   connection for one run, and set the stage options: generator, per_country, steps,
   min_count, truncation, gpus_per_task, gpu_executor_cores.

Environment variables read when the file is parsed (set them alike wherever it is parsed):
FACEATLAS_AIRFLOW_SCHEDULE (default `@daily`; a cron expression, a preset, or `none` for
manual runs only), FACEATLAS_AIRFLOW_RETRIES (default 2), FACEATLAS_AIRFLOW_RETRY_DELAY_MIN
(default 10), FACEATLAS_AIRFLOW_GPU_POOL (default `default_pool`: the pool of the project task).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Param, chain

DAG_ID = "faceatlas_reprocess"
STAGES = ("ingest", "fetch", "faces", "project", "aggregate", "render")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a whole number") from None
    if value < 0:
        raise ValueError(f"{name}={raw!r}: expected 0 or more")
    return value


def _schedule() -> str | None:
    raw = os.environ.get("FACEATLAS_AIRFLOW_SCHEDULE", "").strip()
    if raw.lower() == "none":
        return None
    return raw or "@daily"


def _variable(name: str, default_expr: str, param: str | None = None) -> str:
    """A Jinja expression: the run's param when set, else Variable faceatlas_NAME, else the
    environment variable FACEATLAS_NAME as it was at parse time, else `default_expr` (itself
    a Jinja expression, evaluated only when needed)."""
    env = os.environ.get(f"FACEATLAS_{name.upper()}", "")
    fallback = json.dumps(env) if env else default_expr
    expr = f"(var.value.get('faceatlas_{name}', '') or {fallback})"
    return f"(params.{param} or {expr})" if param else expr


def _lit(text: str) -> str:
    return json.dumps(text)


def _t(expr: str) -> str:
    return "{{ " + expr + " }}"


HOME = _variable("home", _lit("/opt/faceatlas"))
JOBS_DIR = _variable("jobs_dir", f"{HOME} ~ '/jobs'")
ROOT = _variable("data_root", _lit("/shared/faceatlas"), param="data_root")
INPUT_DIR = _variable("input_dir", _lit("/shared/yfcc100m/incoming"), param="input_dir")
CONN_ID = _variable("spark_conn_id", _lit("spark_default"), param="spark_conn_id")
PROPERTIES = _variable("spark_properties", _lit(""))
ENV_ARCHIVE = _variable("env_archive", _lit(""))
DRIVER_PYTHON = _variable("driver_python", _lit(""))
PY_FILES = _variable("py_files", _lit(""))
GPU_SCRIPT = _variable("gpu_discovery_script", f"{HOME} ~ '/infra/gpu-discovery.sh'")
GPU_VENDOR = _variable("gpu_vendor", _lit(""))
SITE_PYTHON = _variable("python", f"{HOME} ~ '/.venv/bin/python'")
SITE_OUT = _variable("site_out", _lit(""))
SITE_COPY = _variable("site_copy", _lit("/var/lib/faceatlas"))

# Settings every Spark stage gets. An empty value is left out (FaceatlasSparkSubmitOperator),
# so the packed environment's settings appear only when an archive is named.
COMMON_CONF: dict[str, str] = {
    "spark.archives": _t(f"{ENV_ARCHIVE} ~ '#environment' if {ENV_ARCHIVE} else ''"),
    "spark.pyspark.python": _t(f"'./environment/bin/python' if {ENV_ARCHIVE} else ''"),
    "spark.pyspark.driver.python": _t(DRIVER_PYTHON),
}

# The project stage's GPU request (infra/spark-defaults.*.conf); tasks per executor are
# min(executor cores, GPUs / gpus_per_task).
GPU_CONF: dict[str, str] = {
    "spark.executor.resource.gpu.amount": "1",
    "spark.task.resource.gpu.amount": "{{ params.gpus_per_task }}",
    "spark.executor.resource.gpu.discoveryScript": _t(GPU_SCRIPT),
    "spark.executor.resource.gpu.vendor": _t(GPU_VENDOR),
    "spark.executor.cores": "{{ params.gpu_executor_cores }}",
}

# `--data ROOT` for every stage; options that render empty are left out.
STAGE_ARGS: dict[str, list[str]] = {
    "ingest": [_t(INPUT_DIR), "--incremental"],
    "fetch": ["{{ '--per-country=%d' % params.per_country if params.per_country else '' }}"],
    "faces": [],
    "project": ["--generator", "{{ params.generator }}", "--steps", "{{ params.steps }}"],
    "aggregate": ["--min-count", "{{ params.min_count }}"],
    "render": ["--truncation", "{{ params.truncation }}"],
}

# Runs on the worker. The site is written with local file calls, so a URI root (hdfs://,
# s3a://) is first copied: only ROOT/render is needed.
SITE_SCRIPT = r"""set -euo pipefail
case $FACEATLAS_ROOT in
  file://*) data=${FACEATLAS_ROOT#file://} ;;
  file:*) data=${FACEATLAS_ROOT#file:} ;;
  *://*)
    data=${FACEATLAS_SITE_COPY:?set the Variable faceatlas_site_copy to a local folder}
    rm -rf -- "$data/render"
    mkdir -p -- "$data"
    hdfs dfs -get "$FACEATLAS_ROOT/render" "$data/"
    ;;
  *) data=$FACEATLAS_ROOT ;;
esac
args=(--data "$data")
if [[ -n ${FACEATLAS_SITE_OUT:-} ]]; then args+=(--out "$FACEATLAS_SITE_OUT"); fi
exec "$FACEATLAS_PYTHON" -m faceatlas site "${args[@]}"
"""


class FaceatlasSparkSubmitOperator(SparkSubmitOperator):
    """SparkSubmitOperator with a templated connection id, leaving out unset options.

    A conf value or an application argument that renders to an empty string is dropped
    after rendering, so one DAG serves clusters with and without a packed environment, and
    options such as --per-country appear only when set."""

    template_fields: Sequence[str] = (*SparkSubmitOperator.template_fields, "conn_id")

    @property
    def conn_id(self) -> str:
        return self._conn_id

    @conn_id.setter
    def conn_id(self, value: str) -> None:
        self._conn_id = value

    def _drop_unset(self) -> None:
        self.conf = {k: v for k, v in (self.conf or {}).items() if str(v).strip()}
        self.application_args = [a for a in self.application_args or [] if str(a).strip()]

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        super().render_template_fields(context, jinja_env)
        self._drop_unset()

    def execute(self, context: Any) -> None:
        self._drop_unset()
        super().execute(context)


default_args: dict[str, Any] = {
    "owner": "faceatlas",
    "retries": _env_int("FACEATLAS_AIRFLOW_RETRIES", 2),
    "retry_delay": timedelta(minutes=_env_int("FACEATLAS_AIRFLOW_RETRY_DELAY_MIN", 10)),
    "depends_on_past": False,
}

with DAG(
    dag_id=DAG_ID,
    description="faceatlas: ingest new metadata, fetch, faces, project, aggregate, render, site",
    schedule=_schedule(),
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    tags=["faceatlas", "spark"],
    doc_md=__doc__,
    params={
        "data_root": Param("", type="string", description="data root (empty: the Variable)"),
        "input_dir": Param(
            "", type="string", description="metadata folder for ingest (empty: the Variable)"
        ),
        "spark_conn_id": Param(
            "", type="string", description="Spark connection id (empty: the Variable)"
        ),
        "generator": Param("dcgan64", type="string", description="project --generator"),
        "per_country": Param(
            None, type=["null", "integer"], minimum=1, description="fetch --per-country"
        ),
        "steps": Param(200, type="integer", minimum=1, description="project --steps"),
        "min_count": Param(5, type="integer", minimum=1, description="aggregate --min-count"),
        "truncation": Param(1.0, type="number", minimum=0, description="render --truncation"),
        "gpus_per_task": Param(
            "1",
            type="string",
            pattern=r"^[0-9]+(\.[0-9]+)?$",
            description="spark.task.resource.gpu.amount (1, 0.5, 0.25)",
        ),
        "gpu_executor_cores": Param(
            1, type="integer", minimum=1, description="spark.executor.cores for project"
        ),
    },
) as dag:
    tasks = []
    for stage in STAGES:
        conf = dict(COMMON_CONF)
        extra: dict[str, Any] = {}
        if stage == "project":
            conf.update(GPU_CONF)
            extra["pool"] = os.environ.get("FACEATLAS_AIRFLOW_GPU_POOL", "default_pool")
        tasks.append(
            FaceatlasSparkSubmitOperator(
                task_id=stage,
                conn_id=_t(CONN_ID),
                application=_t(f"{JOBS_DIR}.rstrip('/')") + f"/{stage}.py",
                application_args=[*STAGE_ARGS[stage], "--data", _t(ROOT)],
                conf=conf,
                properties_file=_t(PROPERTIES),
                py_files=_t(PY_FILES),
                name=f"faceatlas-{stage}",
                # A retry submits a new application, which resumes from what the last one
                # wrote. durable=True would reattach instead, but in YARN cluster mode it
                # needs the ResourceManager's REST address in the connection.
                durable=False,
                **extra,
            )
        )
    tasks.append(
        BashOperator(
            task_id="site",
            bash_command=SITE_SCRIPT,
            env={
                "FACEATLAS_ROOT": _t(ROOT),
                "FACEATLAS_PYTHON": _t(SITE_PYTHON),
                "FACEATLAS_SITE_OUT": _t(SITE_OUT),
                "FACEATLAS_SITE_COPY": _t(SITE_COPY),
            },
            append_env=True,
        )
    )
    chain(*tasks)
