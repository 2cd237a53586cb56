"""The data root: table paths, atomic table replacement and small JSON files.

A data root can be a local folder, HDFS or an object store, so file operations go through
Hadoop's FileSystem API in the driver's JVM, the same code Spark itself writes with.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

STATS_DIR = "_stats"
# Suffixes of the siblings a table has while it is written (_TMP) or replaced (_OLD).
_TMP, _OLD = ".__tmp_", ".__old_"


def parse_size(value: str) -> int:
    """Byte sizes as Spark writes them and users type them: 134217728, 128m, 32MB, 1g."""
    v = value.strip().lower().removesuffix("b")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    if v and v[-1] in units:
        return int(float(v[:-1]) * units[v[-1]])
    return int(v)


def table_path(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def normalize_root(root: str) -> str:
    """Absolute local paths for plain folders; URIs (hdfs://, s3a://, file:) as given."""
    if "://" in root or root.startswith("file:"):
        return root.rstrip("/")
    return os.path.abspath(root)


class HadoopFS:
    """A few FileSystem calls through py4j, for the paths of one Spark session."""

    def __init__(self, spark) -> None:
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _fs(self, path: str):
        p = self._jvm.org.apache.hadoop.fs.Path(path)
        return p.getFileSystem(self._conf), p

    def exists(self, path: str) -> bool:
        fs, p = self._fs(path)
        return bool(fs.exists(p))

    def delete(self, path: str) -> None:
        fs, p = self._fs(path)
        if fs.exists(p):
            fs.delete(p, True)

    def rename(self, src: str, dst: str) -> None:
        fs, p = self._fs(src)
        parent = self._jvm.org.apache.hadoop.fs.Path(dst).getParent()
        fs.mkdirs(parent)
        if not fs.rename(p, self._jvm.org.apache.hadoop.fs.Path(dst)):
            raise OSError(f"could not rename {src} to {dst}")

    def write_text(self, path: str, text: str) -> None:
        fs, p = self._fs(path)
        out = fs.create(p, True)
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()

    def read_text(self, path: str) -> str:
        fs, p = self._fs(path)
        stream = fs.open(p)
        try:
            reader = self._jvm.java.io.BufferedReader(
                self._jvm.java.io.InputStreamReader(stream, "UTF-8")
            )
            lines = []
            while (line := reader.readLine()) is not None:
                lines.append(line)
            return "\n".join(lines)
        finally:
            stream.close()

    def clean_temp_siblings(self, path: str) -> None:
        """Remove what an interrupted run left beside `path` (see temp_sibling, replace)."""
        fs, p = self._fs(path)
        parent = p.getParent()
        if not fs.exists(parent):
            return
        for status in fs.listStatus(parent):
            name = status.getPath().getName()
            if name.startswith((p.getName() + _TMP, p.getName() + _OLD)):
                fs.delete(status.getPath(), True)

    def temp_sibling(self, path: str) -> str:
        """A fresh path beside `path`, for writing a table before it replaces `path`."""
        return f"{path}{_TMP}{uuid.uuid4().hex[:8]}"

    def replace(self, tmp: str, final: str) -> None:
        """Move a finished table into place; the old one goes only once the new one is there."""
        old = None
        if self.exists(final):
            old = f"{final}{_OLD}{uuid.uuid4().hex[:8]}"
            self.rename(final, old)
        self.rename(tmp, final)
        if old:
            self.delete(old)


def write_stats(fs: HadoopFS, root: str, stage: str, stats: dict[str, Any]) -> str:
    path = table_path(root, STATS_DIR, f"{stage}.json")
    fs.write_text(path, json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return path


def read_stats(fs: HadoopFS, root: str, stage: str) -> dict[str, Any] | None:
    path = table_path(root, STATS_DIR, f"{stage}.json")
    if not fs.exists(path):
        return None
    return json.loads(fs.read_text(path))
