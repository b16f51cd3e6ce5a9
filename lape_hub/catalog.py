"""The catalog: Parquet tables on disk, one file per entry, queried with DuckDB.

Layout (hive-style folders, so DuckDB and the Hub's dataset viewer read it directly)::

    catalog/
      CATALOG.json                                   # format + schema version
      activation_counts/model=gemma-3-270m/revision=.../corpus=.../lang=npi_Deva/data.parquet
      lape/model=gemma-3-270m/refset=paper-12/selection=top0.05-f0.95-b0.95/data.parquet
      neurons/model=gemma-3-270m/refset=paper-12/selection=top0.05-f0.95-b0.95/data.parquet

Adding one language to one model writes one activation-counts file and rewrites that
model's LAPE and neuron files for the reference set: never the whole catalog. Writes are
atomic (temp file + rename) under a file lock, so a crash leaves the previous state.

Example::

    >>> cat = Catalog()                                           # the embedded catalog/
    >>> ns = cat.neuron_set("llama-3.1-8b", "ne", refset="paper-12")   # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from lape_hub.atomic import atomic_path, atomic_write_bytes
from lape_hub.errors import CatalogBusyError, NotInCatalogError, SchemaError
from lape_hub.paths import default_catalog_dir
from lape_hub.schemas import SCHEMA_VERSION, TableSchema, table_names, table_schema

MANIFEST = "CATALOG.json"
DATA_FILE = "data.parquet"
DEFAULT_SELECTION = "top0.05-f0.95-b0.95"
LOCK_TIMEOUT_S = float(os.environ.get("LAPE_HUB_LOCK_TIMEOUT", 600))


def _quote(value: str) -> str:
    """Partition values become folder names: keep them readable and safe."""
    bad = set('/\\:*?"<>|=') | {"\0"}
    out = "".join(f"%{ord(c):02X}" if c in bad or c == "%" else c for c in str(value))
    if out in ("", ".", ".."):
        raise SchemaError(f"invalid partition value {value!r}")
    return out


def _unquote(value: str) -> str:
    from urllib.parse import unquote

    return unquote(value)


def parse_entry_path(path: str) -> tuple[str, dict[str, str]] | None:
    """``(table, partition key)`` of a catalog file path relative to the catalog root
    (``neurons/model=m/refset=r/selection=s/data.parquet``); None for any other path.

    >>> parse_entry_path("neurons/model=gemma-3-270m/refset=paper-12/selection=x/data.parquet")
    ('neurons', {'model': 'gemma-3-270m', 'refset': 'paper-12', 'selection': 'x'})
    >>> parse_entry_path("README.md") is None
    True
    """
    parts = path.split("/")
    if len(parts) < 3 or parts[0] not in table_names() or parts[-1] != DATA_FILE:
        return None
    # strict: exactly the table's partition columns, in order, each value as _quote writes
    # it (so no "..", "/", "\\" or empty value); anything else is not a catalog file
    expected = table_schema(parts[0]).partition_by
    if len(parts) - 2 != len(expected):
        return None
    key = {}
    for part, col in zip(parts[1:-1], expected):
        name, sep, raw = part.partition("=")
        if not sep or name != col or not raw:
            return None
        value = _unquote(raw)
        try:
            if _quote(value) != raw:
                return None
        except SchemaError:
            return None
        key[col] = value
    return parts[0], key


@dataclass(frozen=True)
class Entry:
    """One catalog file: a table and its partition key."""

    table: str
    key: dict[str, str]
    path: Path

    @property
    def size(self) -> int:
        return self.path.stat().st_size


class Catalog:
    """A local catalog folder. ``Catalog()`` is the embedded default (or $LAPE_HUB_CATALOG)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_catalog_dir()
        self._lock = None
        self._check_manifest()

    def __repr__(self) -> str:
        return f"Catalog({str(self.root)!r})"

    # -- manifest ------------------------------------------------------------------
    def _check_manifest(self) -> None:
        if (self.root / MANIFEST).exists():
            check_manifest(self.root / MANIFEST, f"catalog {self.root}")

    def _write_manifest(self) -> None:
        path = self.root / MANIFEST
        if not path.exists():
            doc = {"format": "lape-hub-catalog", "schema_version": SCHEMA_VERSION,
                   "tables": table_names()}
            atomic_write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode())

    # -- paths -----------------------------------------------------------------------
    def entry_path(self, table: str, key: dict[str, str]) -> Path:
        schema = table_schema(table)
        missing = [k for k in schema.partition_by if k not in key]
        if missing:
            raise SchemaError(f"{table}: partition key lacks {missing}")
        parts = [f"{k}={_quote(key[k])}" for k in schema.partition_by]
        return self.root.joinpath(table, *parts, DATA_FILE)

    def entries(self, table: str, **where: str) -> list[Entry]:
        """Files of ``table``, optionally filtered on partition columns (no file is opened)."""
        schema = table_schema(table)
        base = self.root / table
        if not base.is_dir():
            return []
        pattern = "/".join(f"{k}={_quote(where[k])}" if k in where else f"{k}=*"
                           for k in schema.partition_by)
        out = []
        for path in sorted(base.glob(f"{pattern}/{DATA_FILE}")):
            parsed = parse_entry_path(path.relative_to(self.root).as_posix())
            if parsed is None:
                raise SchemaError(f"{path}: not a catalog file name lape-hub writes (partition "
                                  "folders must be the table's key, values as lape-hub quotes "
                                  "them)")
            out.append(Entry(table, parsed[1], path))
        return out

    # -- writing -----------------------------------------------------------------------
    def write(self, table: str, data: pa.Table, key: dict[str, str] | None = None) -> Path:
        """Validate ``data`` against the table's schema and write it as one entry.

        ``key`` defaults to the partition columns' single value in ``data``. The file is
        written to a temp name and renamed into place under the catalog's lock.
        """
        schema = table_schema(table)
        data = schema.validate(data)
        key = dict(key or {})
        for col in schema.partition_by:
            values = set(data.column(col).unique().to_pylist()) if data.num_rows else set()
            if col not in key:
                if len(values) != 1:
                    raise SchemaError(f"{table}: rows span several values of {col!r}")
                key[col] = str(values.pop())
            elif values and values != {key[col]}:
                raise SchemaError(f"{table}: rows disagree with the partition key {col}={key[col]}")
        path = self.entry_path(table, key)
        with self.lock():
            self._write_manifest()
            with atomic_path(path) as tmp:
                pq.write_table(data, tmp, compression="zstd", compression_level=9,
                               use_dictionary=True, write_statistics=True)
        return path

    def lock(self):
        """The catalog's write lock (a file lock next to CATALOG.json; re-entrant)."""
        if self._lock is None:
            from filelock import FileLock

            self.root.mkdir(parents=True, exist_ok=True)
            self._lock = FileLock(str(self.root / ".lock"), timeout=LOCK_TIMEOUT_S)
        return _LockGuard(self._lock, self.root)

    # -- reading ------------------------------------------------------------------------
    def read(self, table: str, columns: list[str] | None = None,
             rows: dict[str, str] | None = None, **where: str) -> pa.Table:
        """Read the entries of ``table`` matching ``where`` (partition columns) as one table.

        ``rows`` keeps only rows whose columns equal the given values (e.g. ``{"lang": ...}``).
        """
        schema = table_schema(table)
        parts = []
        for entry in self.entries(table, **where):
            parts.append(self._read_file(schema, entry.path, columns, rows))
        if not parts:
            cols = columns or schema.columns
            return schema.arrow.empty_table().select(cols)
        return pa.concat_tables(parts)

    @staticmethod
    def _read_file(schema: TableSchema, path: Path, columns: list[str] | None,
                   rows: dict[str, str] | None = None) -> pa.Table:
        """Read one file (footer checked first). Row filtering uses numpy, not
        pyarrow.dataset, which would import pandas (~1 s) on every CLI call."""
        schema.check_file(path)
        try:
            pf = pq.ParquetFile(path)
            cols = list(columns or schema.columns)
            need = cols + [c for c in (rows or {}) if c not in cols]
            table = pf.read(columns=need)
        except (pa.ArrowException, OSError) as e:
            raise SchemaError(f"corrupt Parquet file {path}: {_first_line(e)}") from None
        if rows:
            import numpy as np

            mask = np.ones(table.num_rows, dtype=bool)
            for col, value in rows.items():
                mask &= np.array(table.column(col).to_pylist(), dtype=object) == value
            idx = np.flatnonzero(mask)
            if idx.size == 0 or idx[-1] - idx[0] + 1 == idx.size:  # contiguous: no compute
                table = table.slice(int(idx[0]) if idx.size else 0, int(idx.size))
            else:  # pyarrow.compute (and through it pandas) only when rows are scattered
                table = table.take(pa.array(idx))
        return table.select(cols)

    def check(self) -> list[Path]:
        """Check every file against its schema; return the files checked."""
        seen = []
        for table in table_names():
            schema = table_schema(table)
            for entry in self.entries(table):
                schema.check_file(entry.path)
                seen.append(entry.path)
        return seen

    # -- domain reads ----------------------------------------------------------------------
    def neuron_sets_available(self, model: str) -> dict[tuple[str, str], list[str]]:
        """{(refset, selection): [langs]} of ``model``'s neuron sets."""
        out: dict[tuple[str, str], list[str]] = {}
        for entry in self.entries("neurons", model=model):
            out[(entry.key["refset"], entry.key["selection"])] = sorted(_distinct(entry.path, "lang"))
        return out

    def neuron_set(self, model: str, lang: str, refset: str | None = None,
                   selection: str | None = None):
        """The neuron set of ``lang`` for ``model`` (any accepted spelling of both).

        With ``refset`` unset, ``paper-12`` is preferred, then the first reference set
        (alphabetically) that holds the language.
        """
        from lape_hub.languages import resolve_language
        from lape_hub.neuron_set import NeuronSet
        from lape_hub.registry import resolve_model

        spec = resolve_model(model)
        code = resolve_language(lang).code
        if refset is not None:
            refset = self.refset_name(spec.alias, refset)
        entries = [e for e in self.entries("neurons", model=spec.alias)
                   if (refset is None or e.key["refset"] == refset)
                   and (selection is None or e.key["selection"] == selection)]
        entries.sort(key=lambda e: (e.key["refset"] != "paper-12", e.key["refset"],
                                    e.key["selection"] != DEFAULT_SELECTION, e.key["selection"]))
        schema = table_schema("neurons")
        for entry in entries:
            t = self._read_file(schema, entry.path, None, {"lang": code})
            if t.num_rows == 0:
                # a language of the entry whose set came out empty is an empty set, not a
                # missing one: the entry's params list every language it was selected over
                row = first_row(entry.path)
                if row is None or code not in json.loads(row["params"]).get("langs", []):
                    continue
            else:
                row = t.slice(0, 1).to_pylist()[0]
            meta = {k: row[k] for k in ("signature", "lape_hub_version", "created_at",
                                        "revision", "selection")}
            meta["params"] = json.loads(row["params"])
            ns = NeuronSet.from_pairs(
                spec.alias, code, t.column("layer").to_numpy(), t.column("neuron").to_numpy(),
                n_layers=spec.n_layers, d_model=spec.d_model, d_ffn=spec.d_ffn,
                refset=entry.key["refset"], total_params=spec.total_params, metadata=meta)
            return ns
        where = f" refset {refset}" if refset else ""
        from lape_hub.builder import build_hint  # the stored counts decide the command

        raise NotInCatalogError(
            f"no neuron set for {spec.alias} · {code}{where} in catalog {self.root}; build it "
            f"with: {build_hint(self, spec.alias, code, refset)}")

    def refset_name(self, model: str, refset: str) -> str:
        """A registry reference set, or a custom one the catalog holds for ``model``."""
        from lape_hub.errors import UnknownRefsetError
        from lape_hub.registry import resolve_refset

        try:
            return resolve_refset(refset).name
        except UnknownRefsetError:
            if self.entries("neurons", model=model, refset=refset.lower()):
                return refset.lower()
            raise

    def summary(self) -> list[dict[str, Any]]:
        """One row per (table, model, refset/corpus): languages, files and bytes."""
        rows: dict[tuple, dict[str, Any]] = {}
        for table in table_names():
            for entry in self.entries(table):
                group = entry.key.get("refset") or entry.key.get("corpus") or \
                    entry.key.get("method") or ""
                k = (table, entry.key.get("model", ""), group, entry.key.get("selection", ""))
                row = rows.setdefault(k, {"table": table, "model": k[1], "set": group,
                                          "selection": k[3], "langs": set(), "files": 0,
                                          "bytes": 0})
                row["files"] += 1
                row["bytes"] += entry.size
                # every file's footer is checked: `list` names a damaged or foreign file
                table_schema(table).check_file(entry.path)
                if "lang" in entry.key:
                    row["langs"].add(entry.key["lang"])
                else:
                    row["langs"].update(file_langs(entry.path, table) or ())
        out = []
        for row in rows.values():
            row["langs"] = len(row["langs"])
            out.append(row)
        return out

    def iter_files(self) -> Iterator[Path]:
        """Every file of the catalog (manifest and Parquet), for publishing."""
        if (self.root / MANIFEST).exists():
            yield self.root / MANIFEST
        for table in table_names():
            for entry in self.entries(table):
                yield entry.path


def check_manifest(path: Path, where: str, *, action: str = "") -> int:
    """The schema version of a ``CATALOG.json``; refuses a malformed one or a newer version.

    ``where`` names the catalog in messages (a folder, or ``dataset repo owner/name@sha``);
    ``action`` is what to do before upgrading is possible (e.g. "before publishing to it").
    """
    try:
        doc = json.loads(_read_small(path, 1 << 20).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        raise SchemaError(f"{where}: {MANIFEST} is not a lape-hub catalog manifest "
                          "(unreadable, not a small regular file, or not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format", "lape-hub-catalog") != "lape-hub-catalog":
        raise SchemaError(f"{where}: {MANIFEST} is not a lape-hub catalog manifest")
    version = doc.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        shown = json.dumps(version)[:40]
        raise SchemaError(f"{where}: {MANIFEST} has schema_version {shown}, not a positive "
                          "integer: not a lape-hub catalog manifest")
    if version > SCHEMA_VERSION:
        raise SchemaError(f"{where} has schema version {version}, newer than this lape-hub's "
                          f"{SCHEMA_VERSION}: upgrade lape-hub" + (f" {action}" if action else ""))
    return version


def _read_small(path: Path, limit: int) -> bytes:
    """A small regular file's bytes; a pipe, device or folder (which could block or never
    end) or a file over ``limit`` bytes raises ValueError (OSError when unreadable)."""
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path} is not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path} is over {limit} bytes")
    return data


def file_langs(path: Path, table: str) -> set[str] | None:
    """Languages a catalog file covers: its ``lang`` column, else the ``langs`` of its
    ``params`` (e.g. ``lape``); None if the file does not say."""
    cols = table_schema(table).columns
    if "lang" in cols:
        return _distinct(path, "lang")
    if "params" not in cols:
        return None
    first = first_row(path, ["params"])
    if first is None:
        return None
    try:
        langs = json.loads(first["params"]).get("langs")
    except (ValueError, AttributeError):
        return None
    return {str(x) for x in langs} if isinstance(langs, list) else None


def first_row(path: Path, columns: list[str] | None = None) -> dict[str, Any] | None:
    """The first row of a catalog file (entry-wide values such as ``params`` repeat on every
    row), reading one batch, not whole columns; None for an empty file."""
    try:
        batch = next(pq.ParquetFile(path).iter_batches(batch_size=1, columns=columns), None)
    except (pa.ArrowException, OSError, KeyError) as e:
        raise SchemaError(f"corrupt Parquet file {path}: {_first_line(e)}") from None
    return batch.to_pylist()[0] if batch is not None and batch.num_rows else None


def _distinct(path: Path, column: str) -> set:
    """Distinct values of one column (ParquetFile, not pyarrow.dataset: no pandas import)."""
    try:
        return set(pq.ParquetFile(path).read(columns=[column]).column(column).to_pylist())
    except (pa.ArrowException, OSError, KeyError) as e:
        raise SchemaError(f"corrupt Parquet file {path}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    """The first line of an error's message (pyarrow's can span several)."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


class _LockGuard:
    """Context manager turning a lock timeout into one clear line."""

    def __init__(self, lock, root: Path):
        self._inner, self._root = lock, root

    def __enter__(self):
        from filelock import Timeout

        try:
            self._inner.acquire()
        except Timeout:
            raise CatalogBusyError(f"catalog {self._root} is locked by another writer "
                                   f"(waited {LOCK_TIMEOUT_S} s)") from None
        return self

    def __exit__(self, *exc) -> None:
        self._inner.release()
