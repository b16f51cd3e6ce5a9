"""Content digests of files and artifact folders (torch-free, so read-only and publishing
code can use them).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "a.txt").write_text("x")
    >>> file_sha256(d / "a.txt")[:12], len(artifact_sha256(d))
    ('2d711642b726', 64)
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["artifact_sha256", "file_sha256"]

CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of one file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def artifact_sha256(folder: str | os.PathLike) -> str:
    """sha256 over an artifact folder: sorted ``relative path \\0 file sha256 \\n`` lines.

    Temp files of unfinished atomic writes (``.tmp-*``) are skipped. This is the
    ``adapters`` table's ``artifact_sha256``.
    """
    folder = Path(folder)
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")):
        h.update(f"{path.relative_to(folder).as_posix()}\0{file_sha256(path)}\n".encode())
    return h.hexdigest()
