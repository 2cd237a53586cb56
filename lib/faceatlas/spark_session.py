"""The one way every job gets its SparkSession.

Local mode by default (tests, laptops, `python -m faceatlas`): `local[*]`, bound to
127.0.0.1, Python workers on this very interpreter (so they see this environment's
packages), UTC session time, quiet logs. Under `spark-submit` the master and every setting
come from spark-submit and its spark-defaults.conf: nothing is hard-coded here then.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib import resources

from faceatlas import jvm_archive

log = logging.getLogger(__name__)

# Settings for a local session only; a cluster's own come from spark-submit.
LOCAL_DEFAULTS: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "false",
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "10000",
    # A bzip2 file is split at these boundaries; small splits keep every core busy.
    "spark.sql.files.maxPartitionBytes": "32m",
}


def under_spark_submit() -> bool:
    """True when this Python process was started by spark-submit (its JVM already runs)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def _log4j_config() -> str:
    return str(resources.files("faceatlas").joinpath("log4j2.properties"))


def spark_session(
    app_name: str = "faceatlas",
    master: str | None = None,
    conf: dict[str, str] | None = None,
    java_options: list[str] | None = None,
):
    """Return the active SparkSession, creating it if needed.

    `master` and `conf` apply to a local session; under spark-submit, `master` must be None
    (spark-submit's --master rules) and `conf` holds only what the job itself asks for.
    `java_options` are extra options of a local driver JVM; by default, the class archive
    of jvm_archive when it has been built.
    """
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if under_spark_submit():
        if master:
            raise ValueError("under spark-submit, give the master to spark-submit (--master)")
    else:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        master = master or os.environ.get("FACEATLAS_SPARK_MASTER", "local[*]")
        builder = builder.master(master)
        settings = dict(LOCAL_DEFAULTS)
        settings["spark.driver.memory"] = os.environ.get("FACEATLAS_DRIVER_MEMORY", "2g")
        log4j = f"-Dlog4j2.configurationFile=file:{_log4j_config()}"
        if java_options is None:
            java_options = jvm_archive.java_options()
        # Local mode runs its executor inside the driver JVM: only the driver needs these.
        settings["spark.driver.extraJavaOptions"] = " ".join([log4j, *java_options])
        settings["spark.executor.extraJavaOptions"] = log4j
        for key, value in settings.items():
            builder = builder.config(key, value)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if not under_spark_submit():
        spark.sparkContext.setLogLevel("WARN")
    log.info("Spark %s, master %s", spark.version, spark.sparkContext.master)
    return spark
