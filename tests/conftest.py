"""Shared fixtures. Spark tests share one local[2] session per test run."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


@pytest.fixture(scope="session")
def spark():
    from faceatlas.spark_session import spark_session

    session = spark_session("faceatlas-tests", master="local[2]")
    yield session
    session.stop()
