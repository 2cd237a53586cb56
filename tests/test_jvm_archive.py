"""The class-data-sharing archive that shortens a local Spark session's start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from faceatlas import jvm_archive


def test_options_follow_the_setting(monkeypatch, tmp_path):
    archive = tmp_path / "classes.jsa"
    monkeypatch.setenv(jvm_archive.ENV, str(archive))
    assert jvm_archive.java_options() == []  # not built: the JVM starts as it always did
    archive.write_bytes(b"x")
    assert jvm_archive.java_options() == [
        f"-XX:SharedArchiveFile={archive}", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"
    ]  # fmt: skip
    monkeypatch.setenv(jvm_archive.ENV, "off")
    assert jvm_archive.archive_path() is None
    assert jvm_archive.java_options() == []


def test_building_beside_a_running_session_is_refused(spark):
    with pytest.raises(RuntimeError, match="own process"):
        jvm_archive.build(force=True)
    assert spark.range(3).count() == 3  # the caller's session still runs


def test_the_default_file_is_keyed_by_the_jvm(monkeypatch, tmp_path):
    monkeypatch.delenv(jvm_archive.ENV, raising=False)
    path = jvm_archive.archive_path()
    if path is None:
        pytest.skip("no Java on this machine")
    assert path.parent == Path(sys.prefix) / "share" / "faceatlas"
    key = jvm_archive.archive_key()
    assert path.name == f"spark-classes-{key}.jsa"
    other = tmp_path / "bin" / "java"
    other.parent.mkdir()
    other.write_bytes(b"#!/bin/sh\n")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    assert jvm_archive.archive_key() not in (None, key)  # another JVM, another file


@pytest.mark.slow
@pytest.mark.spark
def test_a_local_session_loads_spark_from_the_archive(tmp_path):
    """The archive `make venv` builds is one the JVM accepts with the class path PySpark's
    launcher gives it: Spark's classes come from it, not from their jars."""
    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_GATEWAY_PORT"}
    env.pop(jvm_archive.ENV, None)
    # In its own process, as make does (a no-op when make venv has built it).
    built = subprocess.run([sys.executable, "-m", "faceatlas.jvm_archive"], env=env,
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    path = jvm_archive.archive_path()
    assert path is not None and path.is_file(), built.stdout
    log = tmp_path / "classes.log"
    code = (
        "from faceatlas import jvm_archive\n"
        "from faceatlas.spark_session import spark_session\n"
        "opts = jvm_archive.java_options()\n"
        f"opts.append('-Xlog:class+load=info:file={log}')\n"
        "spark = spark_session('archive-test', master='local[1]', java_options=opts)\n"
        "assert spark.range(5).count() == 5\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in log.read_text().splitlines()
             if " org.apache.spark.SparkContext " in line]  # fmt: skip
    assert lines, "SparkContext was never loaded?"
    assert "shared objects file (top)" in lines[0], lines[0]
    shared = sum("shared objects file (top)" in line for line in log.read_text().splitlines())
    assert shared > 5000  # thousands of Spark's classes, not a handful
