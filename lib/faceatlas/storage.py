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

    def list_files(self, pattern: str) -> list[tuple[str, int, float]]:
        """(path, size, mtime seconds) of every file a path, folder or glob names, folders
        walked; names starting with "." or "_" (markers, hidden files) left out."""
        fs, p = self._fs(pattern)
        out: list[tuple[str, int, float]] = []
        for status in fs.globStatus(p) or []:
            if status.isFile():
                found = [status]
            else:
                found, it = [], fs.listFiles(status.getPath(), True)
                while it.hasNext():
                    found.append(it.next())
            for st in found:
                path = st.getPath()
                if not path.getName().startswith((".", "_")):
                    out.append((path.toString(), int(st.getLen()),
                                st.getModificationTime() / 1000.0))  # fmt: skip
        return sorted(out)

    def move_files(self, src_dir: str, dst_dir: str) -> int:
        """Move every file under src_dir to the same relative place under dst_dir (a table's
        new part files into the table); returns how many moved."""
        fs, p = self._fs(src_dir)
        prefix = fs.makeQualified(p).toString().rstrip("/") + "/"
        moved = 0
        for path, _, _ in self.list_files(src_dir):
            rel = path[len(prefix) :] if path.startswith(prefix) else None
            if rel is None:
                raise OSError(f"{path} is not under {prefix}")
            self.rename(path, f"{dst_dir.rstrip('/')}/{rel}")
            moved += 1
        return moved

    def write_text_atomic(self, path: str, text: str) -> None:
        """Write a small file so that a reader sees the old text or the new, never half:
        the new text goes to a sibling first and replaces the old as a table would."""
        tmp = self.temp_sibling(path)
        self.write_text(tmp, text)
        self.replace(tmp, path)

    def read_text_atomic(self, path: str) -> str | None:
        """What write_text_atomic last finished writing, or None. A write cut off between the
        two renames of `replace` leaves only the older text beside the path: that one is read."""
        if self.exists(path):
            return self.read_text(path)
        fs, p = self._fs(path)
        parent = p.getParent()
        olds = sorted(
            (st.getModificationTime(), st.getPath().toString())
            for st in (fs.listStatus(parent) if fs.exists(parent) else [])
            if st.getPath().getName().startswith(p.getName() + _OLD)
        )
        return self.read_text(olds[-1][1]) if olds else None

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
