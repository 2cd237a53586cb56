"""A class-data-sharing archive of Spark's classes, so a local session starts in half the time.

A local Spark driver loads some 15,000 classes from about 250 jars before it runs its first
job: on the machines we measured that is 6-12 s of a command's start. The JVM (JDK 13+) can
write the classes a run loaded into an archive at exit (-XX:ArchiveClassesAtExit) and map
it into later runs (-XX:SharedArchiveFile). Measured here (three runs each, alternating): a
local session in 5.7-7.7 s instead of 9.7-12.0 s, and the first job in 4.3-5.1 s instead
of 6.9-7.9 s.

`make venv` builds the archive once, by running a small workload that touches what the
stages use (Parquet, SQL functions, joins, windows, shuffles, Arrow batches to Python
workers). spark_session adds the archive to a local driver's options when it exists. The
JVM checks that the archive belongs to the same JVM and class path and silently ignores it
otherwise, so a stale archive costs nothing but the time it would have saved; the file name
also carries a key of the JVM, the PySpark version and its jars, so an upgrade builds a new
one. Under spark-submit the driver JVM is already running and nothing changes.

    python -m faceatlas.jvm_archive [--force]

FACEATLAS_JVM_ARCHIVE=PATH uses another file; FACEATLAS_JVM_ARCHIVE=off disables it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ENV = "FACEATLAS_JVM_ARCHIVE"
# Without these, a JVM that refuses the archive (another class path) prints a warning on
# every start; refusing is harmless, so it stays quiet.
QUIET = ("-Xlog:cds=off", "-Xlog:cds+dynamic=off")


def _java() -> Path | None:
    home = os.environ.get("JAVA_HOME")
    found = Path(home, "bin", "java") if home else None
    if found is None or not found.exists():
        which = shutil.which("java")
        found = Path(which) if which else None
    return found.resolve() if found is not None else None


def archive_key() -> str | None:
    """A short hash of the JVM binary, the PySpark version and its jars; None without Java."""
    import pyspark

    java = _java()
    if java is None:
        return None
    jars = Path(pyspark.__file__).parent / "jars"
    names = sorted(p.name for p in jars.glob("*.jar")) if jars.is_dir() else []
    st = java.stat()
    text = "\n".join([str(java), str(st.st_size), str(int(st.st_mtime)), pyspark.__version__,
                      *names])  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def archive_path() -> Path | None:
    """Where this environment's archive lives (whether or not it exists); None when off."""
    configured = os.environ.get(ENV, "").strip()
    if configured.lower() in ("off", "0", "no", "false"):
        return None
    if configured:
        return Path(configured)
    key = archive_key()
    if key is None:
        return None
    return Path(sys.prefix) / "share" / "faceatlas" / f"spark-classes-{key}.jsa"


def java_options() -> list[str]:
    """Driver JVM options that map the archive in, or [] when there is none."""
    path = archive_path()
    if path is None or not path.is_file():
        return []
    return [f"-XX:SharedArchiveFile={path}", *QUIET]


def _workload(spark, folder: str) -> None:
    """Touch the classes the stages load: Parquet with partitions, SQL functions, window,
    join, range and hash shuffles, aggregation, and Arrow batches through Python workers."""
    import pyarrow as pa
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    countries = F.array(*[F.lit(c) for c in ("NL", "DE", "US", "JP")])
    df = spark.range(2000).select(
        F.col("id").alias("photo_id"),
        F.element_at(countries, (F.col("id") % 4 + 1).cast("int")).alias("country"),
        (F.col("id") / 7.0).alias("x"),
    )
    df = df.withColumn("_key", F.substring(F.sha2(F.col("photo_id").cast("string"), 256), 1, 16))
    df.write.mode("overwrite").partitionBy("country").parquet(f"{folder}/t")
    back = spark.read.parquet(f"{folder}/t")
    w = Window.partitionBy("country").orderBy("_key")
    ranked = back.withColumn("_rank", F.row_number().over(w)).where(F.col("_rank") <= 100)
    joined = ranked.join(back.select("photo_id", F.lit(True).alias("_done")), "photo_id", "left")
    joined.agg(F.count("*"), F.count("_done")).collect()

    def double(batches):
        for b in batches:
            yield pa.RecordBatch.from_pydict({"n": [b.num_rows]})

    slot = (F.col("photo_id") % 2).cast("int")
    for parts in (joined.repartitionById(2, slot), joined.repartition(2)):
        parts.mapInArrow(double, "n long").collect()
    back.groupBy("country").agg(F.avg("x"), F.count("*")).toPandas()


def build(force: bool = False) -> Path | None:
    """Write the archive for this environment (a no-op when it exists); returns its path, or
    None when there is nothing to build (disabled, no Java, or the JVM could not write it)."""
    path = archive_path()
    if path is None:
        print("jvm archive: off (no Java found, or FACEATLAS_JVM_ARCHIVE=off)")
        return None
    if path.is_file() and not force:
        return path
    from pyspark import SparkContext

    if SparkContext._active_spark_context is not None:
        # Its JVM is already running without the dump option, and stopping it would stop
        # the caller's session.
        raise RuntimeError("build the archive in its own process: python -m faceatlas.jvm_archive")
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob("spark-classes-*.jsa"):  # those of earlier JVMs/PySparks
        if old != path:
            old.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    t0 = time.time()
    from faceatlas.spark_session import spark_session

    try:
        spark = spark_session(
            "faceatlas-jvm-archive", master="local[2]",
            java_options=[f"-XX:ArchiveClassesAtExit={tmp}", *QUIET],
        )  # fmt: skip
        gateway = spark.sparkContext._gateway
        with tempfile.TemporaryDirectory(prefix="faceatlas-jvm-archive-") as folder:
            _workload(spark, folder)
            spark.stop()
        # The JVM writes the archive as it exits, which it does when its stdin closes.
        proc = getattr(gateway, "proc", None)
        gateway.shutdown()
        if proc is not None:
            proc.stdin.close()
            proc.wait(timeout=300)
    finally:
        SparkContext._gateway = SparkContext._jvm = None
    if not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        print("jvm archive: this JVM wrote none; local sessions start without it")
        return None
    os.replace(tmp, path)
    size = path.stat().st_size / 2**20
    print(f"jvm archive: {path} ({size:.0f} MiB) in {time.time() - t0:.0f} s")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--force", action="store_true", help="rebuild even if it exists")
    args = ap.parse_args(argv)
    try:
        build(force=args.force)
    except Exception as e:  # an optimisation: never fail the install for it
        print(f"jvm archive: not built ({type(e).__name__}: {e}); sessions start without it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
