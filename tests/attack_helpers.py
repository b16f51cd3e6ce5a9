"""Shared checks for the attack tests (``tests/test_attacks_*.py``): run the real console
entry point in a subprocess, assert one clear line and an exit code, and prove that the
catalog did not change (a hash of every file before and after).

Example::

    before = tree_hashes(catalog.root)
    r = run_cli("sql", "COPY neurons TO 'x.parquet'", env={"LAPE_HUB_CATALOG": str(catalog.root)})
    assert_one_line_error(r, needle="refused")
    assert tree_hashes(catalog.root) == before
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path


def tree_hashes(root: str | os.PathLike) -> dict[str, str]:
    """sha256 of every file under ``root`` (symlinks by their target text), keyed by
    relative path; the lock file is left out (it is not data)."""
    root = Path(root)
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel.endswith(".lock"):
            continue
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out.setdefault(rel + "/", "dir")
    return out


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None,
            input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``lape-hub ARGS`` through the console entry point (its error mapping included)."""
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "lape_hub.cli", *args], capture_output=True,
                          text=True, env=e, cwd=cwd, input=input, timeout=timeout)


def assert_one_line_error(r: subprocess.CompletedProcess, *, code: int = 2,
                          needle: str | None = None) -> str:
    """Exit ``code``, exactly one line on stderr, no traceback; ``needle`` in that line
    (case-insensitive). Returns the line."""
    err = r.stderr
    assert r.returncode == code, f"exit {r.returncode}, stderr: {err!r} stdout: {r.stdout[-500:]!r}"
    assert "Traceback" not in err and "Traceback" not in r.stdout, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err!r}"
    if needle is not None:
        assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"
    return lines[0]
