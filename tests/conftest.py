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


# The small demo world every whole-chain test starts from: 3 countries, 8 photos each.
SMALL_WORLD = ["--countries", "3", "--photos-per-country", "8", "--steps", "30",
               "--min-count", "2"]  # fmt: skip


@pytest.fixture(scope="session")
def small_world(tmp_path_factory, spark):
    """The small demo world run once through every stage in local mode: (root, stdout).

    Tests that change the root work on a copy (shutil.copytree), so the others see the
    tables exactly as the local-mode run wrote them."""
    import contextlib
    import io

    from faceatlas.cli import main

    root = tmp_path_factory.mktemp("small-world") / "root"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["demo", "--data", str(root), *SMALL_WORLD, "--master", "local[2]"])
    assert rc == 0, out.getvalue()
    return root, out.getvalue()
