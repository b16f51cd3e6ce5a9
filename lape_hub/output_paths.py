"""Checks on where a command may write: one rule for every ``-o``/output folder.

Every command that writes a user-named file or folder (``fetch -o``, ``export -o``,
``sql -o``, ``finetune -o``, ``merge``'s output, ``publish --dry-run DIR``) checks the path
here first, before any work. A path is refused (:class:`~lape_hub.errors.OutputPathError`,
one line, exit 2) when it

- lies inside the catalog folder, the cache (:func:`lape_hub.paths.cache_dir`, which holds
  the remote catalog), the registry or the schemas (symlinks followed);
- names a folder where a file is expected (or a file where a folder is expected), or a
  device, pipe or other non-regular file;
- has a missing parent folder (unless the command documents that it creates it), or a
  parent/file that is not writable;
- has a suffix that contradicts ``--format`` (``x.json --format parquet``) or tells no
  format at all.

Torch-free and cheap to import (``os`` and ``pathlib`` only).

Example::

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> path, fmt = check_output_file(os.path.join(d, "mt.json"), formats=NEURON_SET_SUFFIXES,
    ...                               catalog_root=os.path.join(d, "catalog"))
    >>> fmt
    'json'
    >>> check_output_file(os.path.join(d, "mt.json"), formats=NEURON_SET_SUFFIXES, fmt="pt",
    ...                   catalog_root=os.path.join(d, "catalog"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    lape_hub.errors.OutputPathError: ... ends in .json but --format is pt; use a .pt name or --format json
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable, Mapping

from lape_hub.errors import OutputPathError

#: suffix -> format of neuron-set files (fetch, export)
NEURON_SET_SUFFIXES: dict[str, str] = {"parquet": "parquet", "pq": "parquet", "json": "json",
                                       "pt": "pt", "pth": "pt"}
#: suffix -> format of query results (sql -o)
QUERY_SUFFIXES: dict[str, str] = {"parquet": "parquet", "pq": "parquet", "csv": "csv",
                                  "json": "json", "jsonl": "json", "ndjson": "json"}


def protected_roots(catalog_root: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """``(name, resolved folder)`` pairs no output may enter: the catalog, the cache (and
    with it the remote catalog), the registry and the schemas."""
    from lape_hub import paths

    roots = [("the catalog", Path(catalog_root) if catalog_root is not None
              else paths.default_catalog_dir())]
    try:
        roots.append(("the lape-hub cache", paths.cache_dir()))
    except Exception:  # platformdirs missing: no cache, nothing to protect
        pass
    roots += [("the registry", paths.registry_dir()), ("the schemas", paths.schemas_dir())]
    return [(name, _resolve(p)) for name, p in roots]


def _resolve(path: str | os.PathLike) -> Path:
    try:
        return Path(os.path.abspath(Path(path).expanduser())).resolve(strict=False)
    except RuntimeError:  # Python < 3.13 raises on a symlink loop even when not strict
        raise OutputPathError(f"{path}: a symlink loop; give another path") from None


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _check_not_protected(path: Path, resolved: Path, catalog_root, *, contains: bool) -> None:
    for name, root in protected_roots(catalog_root):
        if _inside(resolved, root):
            raise OutputPathError(f"{path}: refusing to write inside {name} ({root}); "
                                  "choose a path outside it")
        if contains and _inside(root, resolved):
            raise OutputPathError(f"{path}: refusing to replace a folder that holds {name} "
                                  f"({root}); choose another folder")


def _nearest_existing(path: Path) -> Path:
    p = path
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _check_parent(path: Path, resolved: Path, *, create_parent: bool) -> None:
    parent = resolved.parent
    if not parent.exists():
        if not create_parent:
            raise OutputPathError(f"{path}: folder {path.parent} does not exist; create it first")
        base = _nearest_existing(parent)
        if not base.is_dir():
            raise OutputPathError(f"{path}: {base} is not a folder")
        if not os.access(base, os.W_OK | os.X_OK):
            raise OutputPathError(f"{path}: cannot create folders under {base} (not writable)")
        return
    if not parent.is_dir():
        raise OutputPathError(f"{path}: {path.parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{path}: folder {path.parent} is not writable")


def _format_of(path: Path, formats: Mapping[str, str], fmt: str | None) -> str:
    suffix = path.suffix.lower().lstrip(".")
    from_suffix = formats.get(suffix)
    known = sorted({f".{s}" for s in formats})
    choices = sorted(set(formats.values()))
    if fmt is not None:
        if fmt not in choices:
            raise OutputPathError(f"unknown format {fmt!r}; choose from {', '.join(choices)}")
        if from_suffix is not None and from_suffix != fmt:
            raise OutputPathError(f"{path} ends in .{suffix} but --format is {fmt}; use a "
                                  f".{_suffix_for(fmt, formats)} name or --format {from_suffix}")
        if from_suffix is None and suffix:
            raise OutputPathError(f"{path}: suffix .{suffix} does not match --format {fmt}; "
                                  f"use a .{_suffix_for(fmt, formats)} name")
        return fmt
    if from_suffix is None:
        what = f"suffix .{suffix}" if suffix else "a name without a suffix"
        raise OutputPathError(f"{path}: {what} tells no format; use one of {', '.join(known)} "
                              "or --format")
    return from_suffix


def _suffix_for(fmt: str, formats: Mapping[str, str]) -> str:
    return fmt if formats.get(fmt) == fmt else next(s for s, f in formats.items() if f == fmt)


def check_output_file(path: str | os.PathLike, *, formats: Mapping[str, str] | Iterable[str]
                      | None = None, fmt: str | None = None,
                      catalog_root: str | os.PathLike | None = None,
                      create_parent: bool = False) -> tuple[Path, str | None]:
    """Check a user-named output file; return ``(path, format)``.

    Args:
        path: the file to write (it may exist: it is then replaced atomically).
        formats: suffix -> format (e.g. :data:`NEURON_SET_SUFFIXES`), or a list of formats
            whose names are their suffixes; None skips the format check (format None).
        fmt: the ``--format`` the user gave, if any; it must agree with the suffix.
        catalog_root: the catalog in use (default: :func:`lape_hub.paths.default_catalog_dir`).
        create_parent: the command documents that it creates missing parent folders.

    Raises:
        OutputPathError: see the module docstring.
    """
    given = os.fspath(path)
    path = Path(path).expanduser()
    if str(path) in ("", "."):
        raise OutputPathError("empty output path")
    resolved = _resolve(path)
    if resolved.is_dir():
        raise OutputPathError(f"{path} is a folder; give a file name")
    if given.endswith(("/", os.sep)):
        raise OutputPathError(f"{given} names a folder (trailing '/'); give a file name")
    _check_not_protected(path, resolved, catalog_root, contains=False)
    if os.path.lexists(resolved):
        mode = os.stat(resolved).st_mode if resolved.exists() else 0
        if resolved.exists() and not stat.S_ISREG(mode):
            raise OutputPathError(f"{path} is not a regular file (device, pipe or socket)")
        if resolved.exists() and not os.access(resolved, os.W_OK):
            raise OutputPathError(f"{path} is not writable")
    _check_parent(path, resolved, create_parent=create_parent)
    if formats is None:
        return path, fmt
    if not isinstance(formats, Mapping):
        formats = {f: f for f in formats}
    return path, _format_of(path, formats, fmt)


def check_output_dir(path: str | os.PathLike, *, create: bool = False, replaces: bool = False,
                     marker: str | None = None,
                     catalog_root: str | os.PathLike | None = None) -> Path:
    """Check a user-named output folder; return it as a Path (nothing is created here).

    Args:
        path: the folder to write into.
        create: the command documents that it creates the folder (and its parents) when
            missing; otherwise a missing folder is refused.
        replaces: the command replaces the whole folder (``atomic_dir``): it then also must
            not hold the catalog, the cache, the registry or the schemas.
        marker: with ``replaces``, an existing non-empty folder is accepted only when it
            holds this regular file (e.g. ``config.json`` of a model folder written
            before): a folder of other files is never deleted.
        catalog_root: the catalog in use (default: :func:`lape_hub.paths.default_catalog_dir`).

    Example::

        >>> import tempfile
        >>> check_output_dir(tempfile.mkdtemp() + "/adapter", create=True).name
        'adapter'
    """
    if os.fspath(path) == "":  # Path("") is ".": test the name as given
        raise OutputPathError("empty output folder")
    path = Path(path).expanduser()
    resolved = _resolve(path)
    _check_not_protected(path, resolved, catalog_root, contains=replaces)
    if resolved.exists():
        if not resolved.is_dir():
            raise OutputPathError(f"{path} is a file; give a folder")
        if not os.access(resolved, os.W_OK | os.X_OK):
            raise OutputPathError(f"folder {path} is not writable")
        if replaces and marker is not None and any(resolved.iterdir()):
            m = resolved / marker
            if m.is_symlink() or not m.is_file():
                raise OutputPathError(f"folder {path} is not empty and has no {marker}: it is "
                                      "not a folder this command wrote; it would be replaced, "
                                      "so give an empty or new folder")
        return path
    if os.path.lexists(resolved):
        raise OutputPathError(f"{path} is a broken symlink; give a folder")
    if not create:
        raise OutputPathError(f"folder {path} does not exist; create it first")
    base = _nearest_existing(resolved.parent)
    if not base.is_dir():
        raise OutputPathError(f"{path}: {base} is not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputPathError(f"{path}: cannot create folders under {base} (not writable)")
    return path
