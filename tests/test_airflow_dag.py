"""The Airflow DAG (infra/airflow/faceatlas_dag.py), loaded by Airflow's own DagBag.

Airflow has its own virtual environment (infra/airflow/make-venv.sh, `make airflow-venv`;
FACEATLAS_AIRFLOW_VENV names another): its pins clash with the project's. A small script runs
in that environment, fills a DagBag from a folder for each case below, renders every task's
templates with the run's params and Variables taken from AIRFLOW_VAR_* (as Airflow's
environment-variable secrets backend does, so no metadata database is needed), and writes what
it found as JSON. The DAG must load without touching the database: its SQLite file must not
appear. Broken copies of the DAG prove that the harness reports import errors.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DAG_DIR = REPO / "infra" / "airflow"
DAG_FILE = DAG_DIR / "faceatlas_dag.py"
DAG_ID = "faceatlas_reprocess"
CHAIN = ["ingest", "fetch", "faces", "project", "aggregate", "render", "site"]
SPARK_STAGES = CHAIN[:-1]
GPU_KEYS = {
    "spark.executor.resource.gpu.amount",
    "spark.task.resource.gpu.amount",
    "spark.executor.resource.gpu.discoveryScript",
}

# Runs inside the Airflow venv: argv[1] is a JSON spec {"out": PATH, "cases": [...]}, each case
# {"name", "folder", "env", "params"}; writes {name: result} to PATH.
HARNESS = r"""
import inspect, json, os, sys, traceback

spec = json.load(open(sys.argv[1]))
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:
    from airflow.models.dagbag import DagBag

try:
    from airflow.sdk.execution_time.context import VariableAccessor

    var = {"value": VariableAccessor(deserialize_json=False),
           "json": VariableAccessor(deserialize_json=True)}
    accessor = "airflow"
except ImportError:
    class _Vars:
        def __init__(self, as_json):
            self.as_json = as_json

        def get(self, key, default=None):
            raw = os.environ.get("AIRFLOW_VAR_" + key.upper())
            if raw is None:
                return default
            return json.loads(raw) if self.as_json else raw

    var = {"value": _Vars(False), "json": _Vars(True)}
    accessor = "stub"


def plain(value):
    return json.loads(json.dumps(value, default=str))


def task_info(task, context):
    info = {
        "operator": type(task).__name__,
        "mro": [c.__name__ for c in type(task).__mro__],
        "upstream": sorted(task.upstream_task_ids),
        "downstream": sorted(task.downstream_task_ids),
        "retries": task.retries,
        "retry_delay_s": task.retry_delay.total_seconds(),
        "pool": task.pool,
    }
    try:
        task.render_template_fields(context)
    except Exception:
        info["render_error"] = traceback.format_exc()
    for field in ("application", "application_args", "conf", "conn_id", "name",
                  "properties_file", "py_files", "env", "bash_command"):
        if hasattr(task, field):
            info[field] = plain(getattr(task, field))
    return info


results = {}
for case in spec["cases"]:
    for key, value in case["env"].items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    kwargs = {"dag_folder": case["folder"]}
    if "include_examples" in inspect.signature(DagBag).parameters:
        kwargs["include_examples"] = False
    bag = DagBag(**kwargs)
    dags = {}
    for dag_id, dag in bag.dags.items():
        params = dag.params
        for key, value in case["params"].items():
            params[key] = value
        context = {"params": params.validate(), "var": var}
        try:
            from airflow.serialization.serialized_objects import DagSerialization

            DagSerialization.validate_schema(DagSerialization.to_dict(dag))
            serialized = "ok"
        except ImportError:
            serialized = "not checked"
        except Exception:
            serialized = traceback.format_exc()
        dags[dag_id] = {
            "schedule": plain(dag.schedule),
            "timetable": type(dag.timetable).__name__,
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
            "serialized": serialized,
            "tasks": {t.task_id: task_info(t, context) for t in dag.tasks},
        }
    results[case["name"]] = {
        "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
        "dags": dags,
        "var_accessor": accessor,
    }
json.dump(results, open(spec["out"], "w"))
"""


def _venv() -> Path:
    venv = Path(os.environ.get("FACEATLAS_AIRFLOW_VENV") or REPO / ".venv-airflow")
    if not (venv / "bin" / "python").exists():
        pytest.fail(
            f"no Airflow virtual environment at {venv}: run `make airflow-venv` "
            "(infra/airflow/make-venv.sh), or point FACEATLAS_AIRFLOW_VENV at one",
            pytrace=False,
        )
    stamp = venv / ".requirements.sha256"
    if stamp.exists():
        want = hashlib.sha256((DAG_DIR / "requirements.txt").read_bytes()).hexdigest()
        if stamp.read_text().split()[0] != want:
            pytest.fail(
                f"{venv} was built from another infra/airflow/requirements.txt: run "
                "`make airflow-venv`",
                pytrace=False,
            )
    return venv


def _copy_dag(folder: Path, append: str = "") -> Path:
    folder.mkdir(parents=True)
    (folder / DAG_FILE.name).write_text(DAG_FILE.read_text() + append)
    return folder


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> dict[str, Any]:
    """Every case's DagBag, from one run of the harness: (results, tmp folder)."""
    venv = _venv()
    tmp = tmp_path_factory.mktemp("airflow")
    home = tmp / "airflow-home"
    home.mkdir()
    (tmp / "empty-dags").mkdir()
    cases = [
        {
            "name": "default",
            "folder": str(DAG_DIR),
            "env": {
                "FACEATLAS_HOME": "/opt/fa-test",
                "AIRFLOW_VAR_FACEATLAS_DATA_ROOT": "/data/fa",
            },
            "params": {},
        },
        {
            "name": "override",
            "folder": str(_copy_dag(tmp / "override")),
            "env": {
                "FACEATLAS_AIRFLOW_SCHEDULE": "30 1 * * *",
                "FACEATLAS_AIRFLOW_RETRIES": "4",
                "AIRFLOW_VAR_FACEATLAS_JOBS_DIR": "local:///opt/faceatlas/jobs/",
                "AIRFLOW_VAR_FACEATLAS_ENV_ARCHIVE": "hdfs:///apps/env.tar.gz",
                "AIRFLOW_VAR_FACEATLAS_GPU_VENDOR": "nvidia.com",
                "AIRFLOW_VAR_FACEATLAS_SPARK_PROPERTIES": "/etc/spark/yarn.conf",
            },
            "params": {
                "data_root": "hdfs:///faceatlas",
                "input_dir": "hdfs:///yfcc/new",
                "per_country": 7,
                "spark_conn_id": "spark_yarn",
                "gpus_per_task": "0.25",
                "generator": "/models/ffhq.pkl",
            },
        },
        {
            "name": "syntax_error",
            "folder": str(_copy_dag(tmp / "syntax", "\ndef broken(:\n    pass\n")),
            "env": {},
            "params": {},
        },
        {
            "name": "missing_import",
            "folder": str(_copy_dag(tmp / "missing", "\nimport faceatlas_no_such_module\n")),
            "env": {},
            "params": {},
        },
    ]
    spec = tmp / "spec.json"
    out = tmp / "result.json"
    spec.write_text(json.dumps({"out": str(out), "cases": cases}))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "FACEATLAS_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(tmp / "empty-dags"),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        PYTHONDONTWRITEBYTECODE="1",
    )
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", HARNESS, str(spec)],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"results": json.loads(out.read_text()), "home": home}


def _dag(loaded: dict[str, Any], case: str) -> dict[str, Any]:
    result = loaded["results"][case]
    assert result["import_errors"] == {}, result["import_errors"]
    assert list(result["dags"]) == [DAG_ID]
    return result["dags"][DAG_ID]


def _chain(tasks: dict[str, Any]) -> list[str]:
    """The task ids from the one root along the downstream links; fails on any branching."""
    roots = [t for t, info in tasks.items() if not info["upstream"]]
    assert len(roots) == 1, roots
    order = roots
    while tasks[order[-1]]["downstream"]:
        (nxt,) = tasks[order[-1]]["downstream"]
        assert tasks[nxt]["upstream"] == [order[-1]]
        order.append(nxt)
    return order


@pytest.mark.slow
def test_dag_loads_without_the_metadata_database(loaded):
    dag = _dag(loaded, "default")
    assert dag["serialized"] == "ok"
    assert loaded["results"]["default"]["var_accessor"] == "airflow"
    assert not (loaded["home"] / "airflow.db").exists()


@pytest.mark.slow
def test_dag_schedule_and_run_settings(loaded):
    dag = _dag(loaded, "default")
    assert dag["schedule"] == "@daily"
    assert dag["catchup"] is False
    assert dag["max_active_runs"] == 1
    for task in dag["tasks"].values():
        assert task["retries"] == 2
        assert task["retry_delay_s"] == 600
    override = _dag(loaded, "override")
    assert override["schedule"] == "30 1 * * *"
    assert {t["retries"] for t in override["tasks"].values()} == {4}


@pytest.mark.slow
def test_one_task_per_stage_in_order(loaded):
    tasks = _dag(loaded, "default")["tasks"]
    assert sorted(tasks) == sorted(CHAIN)
    assert _chain(tasks) == CHAIN
    for stage in SPARK_STAGES:
        assert "SparkSubmitOperator" in tasks[stage]["mro"], tasks[stage]["mro"]
        assert "render_error" not in tasks[stage], tasks[stage]["render_error"]
    assert tasks["site"]["operator"] == "BashOperator"


@pytest.mark.slow
def test_spark_tasks_rendered_with_defaults(loaded):
    tasks = _dag(loaded, "default")["tasks"]
    for stage in SPARK_STAGES:
        task = tasks[stage]
        # FACEATLAS_HOME at parse time, the data root from its Variable.
        assert task["application"] == f"/opt/fa-test/jobs/{stage}.py"
        assert task["application"].endswith(f"jobs/{stage}.py")
        assert task["conn_id"] == "spark_default"
        args = task["application_args"]
        assert args[args.index("--data") + 1] == "/data/fa"
        assert task["properties_file"] == ""
        assert task["name"] == f"faceatlas-{stage}"
        if stage != "project":
            assert task["conf"] == {}, (stage, task["conf"])
    assert tasks["ingest"]["application_args"] == [
        "/shared/yfcc100m/incoming", "--incremental", "--data", "/data/fa",
    ]  # fmt: skip
    assert tasks["fetch"]["application_args"] == ["--data", "/data/fa"]
    assert tasks["project"]["application_args"] == [
        "--generator", "dcgan64", "--steps", "200", "--data", "/data/fa",
    ]  # fmt: skip
    assert tasks["project"]["conf"] == {
        "spark.executor.resource.gpu.amount": "1",
        "spark.task.resource.gpu.amount": "1",
        "spark.executor.resource.gpu.discoveryScript": "/opt/fa-test/infra/gpu-discovery.sh",
        "spark.executor.cores": "1",
    }
    assert tasks["site"]["env"] == {
        "FACEATLAS_ROOT": "/data/fa",
        "FACEATLAS_PYTHON": "/opt/fa-test/.venv/bin/python",
        "FACEATLAS_SITE_OUT": "",
        "FACEATLAS_SITE_COPY": "/var/lib/faceatlas",
    }
    assert "-m faceatlas site" in tasks["site"]["bash_command"]


@pytest.mark.slow
def test_params_and_variables_override(loaded):
    tasks = _dag(loaded, "override")["tasks"]
    for stage in SPARK_STAGES:
        task = tasks[stage]
        assert task["application"] == f"local:///opt/faceatlas/jobs/{stage}.py"
        assert task["conn_id"] == "spark_yarn"
        assert task["properties_file"] == "/etc/spark/yarn.conf"
        assert task["conf"]["spark.archives"] == "hdfs:///apps/env.tar.gz#environment"
        assert task["conf"]["spark.pyspark.python"] == "./environment/bin/python"
        assert "spark.pyspark.driver.python" not in task["conf"]
        assert (set(task["conf"]) >= GPU_KEYS) == (stage == "project")
    assert tasks["ingest"]["application_args"] == [
        "hdfs:///yfcc/new", "--incremental", "--data", "hdfs:///faceatlas",
    ]  # fmt: skip
    assert tasks["fetch"]["application_args"] == [
        "--per-country=7", "--data", "hdfs:///faceatlas",
    ]  # fmt: skip
    assert tasks["project"]["application_args"][:2] == ["--generator", "/models/ffhq.pkl"]
    project_conf = tasks["project"]["conf"]
    assert project_conf["spark.task.resource.gpu.amount"] == "0.25"
    assert project_conf["spark.executor.resource.gpu.vendor"] == "nvidia.com"
    assert tasks["site"]["env"]["FACEATLAS_ROOT"] == "hdfs:///faceatlas"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "needle"),
    [("syntax_error", "SyntaxError"), ("missing_import", "faceatlas_no_such_module")],
)
def test_harness_reports_a_broken_dag(loaded, case, needle):
    result = loaded["results"][case]
    assert result["dags"] == {}
    assert len(result["import_errors"]) == 1
    (path, error), *_ = result["import_errors"].items()
    assert path.endswith(DAG_FILE.name)
    assert needle in error


def _fake_tools(folder: Path) -> Path:
    """A `python` that prints its arguments and an `hdfs` that logs them and makes DST/render."""
    folder.mkdir()
    (folder / "python").write_text('#!/bin/sh\necho "python $*"\n')
    (folder / "hdfs").write_text('#!/bin/sh\necho "hdfs $*"\nmkdir -p "$4/render"\n')
    for tool in ("python", "hdfs"):
        (folder / tool).chmod(0o755)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(
    ("root", "site_out", "expected"),
    [
        ("/data/fa", "", ["python -m faceatlas site --data /data/fa"]),
        (
            "file:///data/fa",
            "/srv/www",
            ["python -m faceatlas site --data /data/fa --out /srv/www"],
        ),
        (
            "hdfs:///faceatlas",
            "",
            [
                "hdfs dfs -get hdfs:///faceatlas/render COPY/",
                "python -m faceatlas site --data COPY",
            ],
        ),
    ],
)
def test_site_task_script(loaded, tmp_path, root, site_out, expected):
    script = _dag(loaded, "default")["tasks"]["site"]["bash_command"]
    tools = _fake_tools(tmp_path / "bin")
    copy = tmp_path / "copy"
    (copy / "render").mkdir(parents=True)
    (copy / "render" / "stale.png").write_bytes(b"old")
    env = {
        "PATH": f"{tools}:{os.environ['PATH']}",
        "FACEATLAS_ROOT": root,
        "FACEATLAS_PYTHON": str(tools / "python"),
        "FACEATLAS_SITE_OUT": site_out,
        "FACEATLAS_SITE_COPY": str(copy),
    }
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = [ln.replace(str(tools / "python"), "python") for ln in proc.stdout.splitlines()]
    assert lines == [e.replace("COPY", str(copy)) for e in expected]
    # A URI root is fetched afresh: the copy's old render folder is gone.
    assert (copy / "render" / "stale.png").exists() == (not root.startswith("hdfs:"))


def test_dag_file_is_plain_python():
    # Cheap guard that runs without the Airflow venv: the DAG file at least compiles.
    compile(DAG_FILE.read_text(), str(DAG_FILE), "exec")
    assert os.access(DAG_DIR / "make-venv.sh", os.X_OK)
