"""Read-only SQL over the catalog with DuckDB: one view per table, nothing else.

User SQL meets two independent lines of defence:

1. **The statement guard** (:func:`check_read_only`). DuckDB's own parser splits the text;
   exactly one statement is accepted, and only if DuckDB would just read: a ``SELECT``
   (``DESCRIBE``, ``SUMMARIZE``, ``SHOW``, ``PIVOT … IN (…)`` and ``FROM t`` parse as
   SELECTs) or an ``EXPLAIN [ANALYZE]`` whose wrapped statement passes the same check.
   Everything else (``COPY``, ``EXPORT``, ``ATTACH``, ``CREATE``, ``INSERT``, ``SET``,
   ``PRAGMA``, ``CALL``, ``INSTALL``/``LOAD``, ``PREPARE``/``EXECUTE`` …) is refused.
2. **The connection itself** (:func:`connect`) can open no file at all: the catalog's
   Parquet files are handed to DuckDB as Arrow datasets (read by pyarrow, in Python), so
   DuckDB runs with ``enable_external_access=false`` and an empty ``allowed_directories``,
   no temp directory to spill into, no extension loading, no Python replacement scans,
   and ``lock_configuration=true`` so no statement can loosen any of that. A statement the
   guard missed still cannot create, change or delete a file, nor read one.

Each query runs under :class:`~lape_hub.config.SqlLimits`: a wall-clock timeout (the
query is interrupted) and DuckDB's ``memory_limit``. Errors DuckDB raises while the
result is computed (casts, ``error()``, interrupts, out of memory) surface as one-line
:class:`~lape_hub.errors.QueryError` before anything is printed: results are fetched
whole, then rendered.

Example::

    >>> from lape_hub.catalog import Catalog
    >>> run_sql(Catalog(), "SELECT count(*) AS n FROM neurons").fetchall()  # doctest: +SKIP
    [(2654208,)]
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import time
from pathlib import Path
from typing import IO, Callable, TypeVar

import duckdb
import pyarrow as pa

from lape_hub.catalog import DATA_FILE, Catalog
from lape_hub.config import SqlLimits, config_path
from lape_hub.errors import QueryError, QueryRefusedError, SchemaError
from lape_hub.schemas import table_names, table_schema

T = TypeVar("T")

#: output formats of query results
FORMATS = ("table", "csv", "json", "parquet")
_GRACE_S = 10.0  # how long an interrupted query may take to stop

_ST = duckdb.StatementType
_WHY = {  # what a refused statement would have done
    _ST.COPY: "writes or reads files", _ST.COPY_DATABASE: "writes a database",
    _ST.EXPORT: "writes files", _ST.ATTACH: "opens a database file",
    _ST.DETACH: "detaches a database", _ST.CREATE: "creates objects",
    _ST.CREATE_FUNC: "creates functions", _ST.INSERT: "changes data",
    _ST.UPDATE: "changes data", _ST.DELETE: "changes data", _ST.MERGE_INTO: "changes data",
    _ST.DROP: "drops objects", _ST.ALTER: "changes objects",
    _ST.SET: "changes settings", _ST.VARIABLE_SET: "sets variables",
    _ST.PRAGMA: "changes settings or runs a procedure", _ST.LOAD: "installs or loads extensions",
    _ST.EXTENSION: "installs or loads extensions", _ST.CALL: "runs a procedure",
    _ST.TRANSACTION: "controls transactions", _ST.VACUUM: "rewrites storage",
    _ST.ANALYZE: "rewrites statistics",
}


def _type(st: duckdb.Statement) -> duckdb.StatementType | None:
    """The statement's type; None for one the Python binding cannot name (e.g. DuckDB 1.4's
    ``UPDATE EXTENSIONS`` raises ValueError on ``.type``)."""
    try:
        return st.type
    except ValueError:
        return None


def _kind(st: duckdb.Statement) -> str:
    t = _type(st)
    return str(t).split(".")[-1] if t is not None else (st.query.split() or ["?"])[0].upper()


def connect(catalog: Catalog, *, limits: SqlLimits | None = None,
            check: bool = True) -> duckdb.DuckDBPyConnection:
    """A locked-down in-memory DuckDB connection with one view per catalog table.

    The views scan the catalog's Parquet files through pyarrow; DuckDB itself can open no
    file (see the module docstring). ``check`` validates every file's footer against its
    table's schema first (one-line :class:`~lape_hub.errors.SchemaError` naming the file).
    """
    import pyarrow.dataset as ds

    limits = limits or SqlLimits()
    sources: dict[str, object] = {}
    for table in table_names():
        schema = table_schema(table)
        entries = catalog.entries(table)
        if check:
            for e in entries:
                schema.check_file(e.path)
        files = [str(e.path) for e in entries]
        sources[table] = (ds.dataset(files, schema=schema.arrow, format="parquet") if files
                          else schema.arrow.empty_table())
    try:
        con = duckdb.connect(":memory:", config={
            "enable_external_access": False,     # no file, no network: not even the catalog's
            # allowed_directories / allowed_paths stay empty (their default)
            "temp_directory": "",                # never spill to disk
            "memory_limit": limits.memory_limit,
            "autoinstall_known_extensions": False, "autoload_known_extensions": False,
            "allow_community_extensions": False, "allow_unsigned_extensions": False,
            "python_enable_replacements": False,  # no scans of Python variables
            "lock_configuration": True,          # no SET/PRAGMA/RESET can undo the above
        })
    except duckdb.Error as e:
        raise QueryError(f"cannot open DuckDB (memory limit {limits.memory_limit!r}): "
                         f"{_first_line(e)}") from None
    for table, source in sources.items():
        con.register(table, source)
    return con


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _explained(text: str) -> str:
    """The statement an ``EXPLAIN [ANALYZE] [(options)] stmt`` wraps (its text)."""
    every = duckdb.tokenize(text)
    ends = [p for p, _ in every[1:]] + [len(text)]
    kept = [(pos, kind, text[pos:end].strip()) for (pos, kind), end in zip(every, ends)
            if kind != duckdb.token_type.comment]
    tokens = [(pos, kind) for pos, kind, _ in kept]
    words = [word for _, _, word in kept]
    if not words or words[0].upper() != "EXPLAIN":
        raise QueryRefusedError("refused: cannot tell what this EXPLAIN wraps; EXPLAIN a "
                                "SELECT")
    i = 1
    if i < len(words) and words[i].upper() in ("ANALYZE", "ANALYSE"):
        i += 1
    if i < len(words) and words[i].startswith("("):
        depth = 0
        while i < len(words):
            if tokens[i][1] == duckdb.token_type.operator:
                depth += words[i].count("(") - words[i].count(")")
            i += 1
            if depth <= 0:
                break
    return text[tokens[i][0]:] if i < len(tokens) else ""


def check_read_only(con: duckdb.DuckDBPyConnection, query: str, *, _wrapper: str = "") -> None:
    """Refuse ``query`` unless it is exactly one statement that DuckDB would only read with.

    Decided by DuckDB's parser: one SELECT, or EXPLAIN [ANALYZE] of something this
    function accepts. Raises :class:`~lape_hub.errors.QueryRefusedError` (one line).

    >>> con = duckdb.connect()
    >>> check_read_only(con, "SELECT 42")
    >>> check_read_only(con, "EXPLAIN ANALYZE COPY (SELECT 1) TO 'x.csv'")
    Traceback (most recent call last):
    ...
    lape_hub.errors.QueryRefusedError: refused: EXPLAIN wraps a COPY statement, which writes or reads files; lape-hub sql only reads the catalog (use SELECT)
    """
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as e:
        raise QueryRefusedError(f"SQL error: {_first_line(e)}") from None
    where = f"{_wrapper} wraps " if _wrapper else ""
    if not statements:
        raise QueryRefusedError(f"refused: {where}no statement; give one SELECT")
    if len(statements) > 1:
        kinds = ", ".join(_kind(s) for s in statements[:4])
        raise QueryRefusedError(f"refused: {where}{len(statements)} statements ({kinds}); "
                                "lape-hub sql runs exactly one statement per call")
    st = statements[0]
    st_type = _type(st)
    if st_type == _ST.SELECT:
        return
    if st_type == _ST.EXPLAIN:
        if _wrapper:
            raise QueryRefusedError("refused: EXPLAIN inside EXPLAIN")
        check_read_only(con, _explained(st.query), _wrapper="EXPLAIN")
        return
    kind = _kind(st)
    if st_type in (_ST.PREPARE, _ST.EXECUTE):
        raise QueryRefusedError(f"refused: {where}{kind}: one statement runs per call, so "
                                "nothing can be prepared and then executed; run the SELECT "
                                "itself")
    if st_type == _ST.MULTI:
        raise QueryRefusedError(f"refused: {where}this statement expands into several (a "
                                "PIVOT without an IN list creates a type first); list the "
                                "values: PIVOT t ON col IN (...)")
    why = _WHY.get(st_type, "is not a read")
    hint = " (for table functions use SELECT * FROM fn(...))" if st_type == _ST.CALL else ""
    raise QueryRefusedError(f"refused: {where}a {kind} statement, which {why}; lape-hub sql "
                            f"only reads the catalog (use SELECT){hint}")


def _limited(con: duckdb.DuckDBPyConnection, limits: SqlLimits, work: Callable[[], T]) -> T:
    """``work()`` in a worker thread under the time limit, then ``con`` is closed.

    The main thread waits, so Ctrl-C reaches it at once: the query is interrupted and
    KeyboardInterrupt raised (DuckDB alone would not see the signal until it finished).
    DuckDB errors become one-line QueryErrors.
    """
    box: dict[str, object] = {}
    done = threading.Event()  # not Thread.join: a Ctrl-C inside join() can leave the
    # thread marked finished while it still runs (CPython gh-90882)

    def target() -> None:
        try:
            box["value"] = work()
        except BaseException as e:  # handed to the main thread below
            box["error"] = e
        finally:
            done.set()

    worker = threading.Thread(target=target, name="lape-hub-sql", daemon=True)
    deadline = time.monotonic() + limits.timeout_s
    stopped = None
    worker.start()
    try:
        while not done.wait(min(max(deadline - time.monotonic(), 0), 0.1)):
            if time.monotonic() >= deadline:
                stopped = "timeout"
                con.interrupt()
                break
    except KeyboardInterrupt:
        stopped = "interrupt"
        con.interrupt()
    if not done.wait(_GRACE_S if stopped else None):
        # stuck outside DuckDB (e.g. converting a huge result): leave the thread behind
        if stopped == "interrupt":
            raise KeyboardInterrupt
        raise QueryError(f"query stopped after {limits.timeout_s:g} s, the time limit (raise "
                         f"it with --timeout SECONDS or [sql] timeout in {config_path()})")
    with contextlib.suppress(duckdb.Error):  # "busy" for a moment after an interrupt
        con.close()
    if "error" not in box:
        return box["value"]  # type: ignore[return-value]
    err = box["error"]
    if stopped == "interrupt" or isinstance(err, KeyboardInterrupt):
        raise KeyboardInterrupt
    if stopped == "timeout" or isinstance(err, duckdb.InterruptException):
        raise QueryError(f"query stopped after {limits.timeout_s:g} s, the time limit (raise "
                         f"it with --timeout SECONDS or [sql] timeout in {config_path()})")
    if isinstance(err, duckdb.OutOfMemoryException):
        raise QueryError(f"query stopped: it needs more than the memory limit "
                         f"{limits.memory_limit} ({_first_line(err)}); raise it with "
                         f"--memory-limit or [sql] memory_limit in {config_path()}")
    if isinstance(err, duckdb.PermissionException):
        raise QueryRefusedError(f"refused: {_first_line(err)}; lape-hub sql reads only the "
                                f"catalog's tables ({', '.join(table_names())})")
    if isinstance(err, duckdb.Error):
        msg = _first_line(err)
        if "parquet" in msg.lower() and ("corrupt" in msg.lower() or "magic" in msg.lower()):
            raise SchemaError(msg)
        raise QueryError(f"SQL error: {msg}")
    if isinstance(err, (pa.ArrowException, OSError)):  # a catalog file failing while scanned
        raise QueryError(f"reading the catalog failed: {_first_line(err)}")
    if isinstance(err, MemoryError):
        raise QueryError(f"out of memory while fetching the result (memory limit "
                         f"{limits.memory_limit})")
    raise err  # type: ignore[misc]  # QueryRefusedError from the guard, or a bug


def _relation(con: duckdb.DuckDBPyConnection, query: str) -> duckdb.DuckDBPyRelation:
    check_read_only(con, query)
    return con.sql(query)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# DuckDB type ids (DuckDBPyType.id) that each file format holds as they are; the others
# are converted in DuckDB: nested values to JSON text, the rest to DuckDB's text form.
_NESTED = {"list", "struct", "map", "array", "union"}
_CSV_NATIVE = {"boolean", "tinyint", "smallint", "integer", "bigint", "hugeint", "utinyint",
               "usmallint", "uinteger", "ubigint", "uhugeint", "float", "double", "decimal",
               "varchar", "date", "time", "time_ns", "timestamp", "timestamp_s", "timestamp_ms",
               "timestamp_ns", "timestamp with time zone", "uuid", "enum"}
_PARQUET_TEXT = {"interval", "union", "bignum", "varint", "bit", "time with time zone"}


def _for_format(rel: duckdb.DuckDBPyRelation, fmt: str) -> duckdb.DuckDBPyRelation:
    """``rel`` with its columns in forms ``fmt`` can hold (json: one column of JSON rows)."""
    if fmt == "json":
        return rel.set_alias("__lape_row").project('to_json(__lape_row)::VARCHAR AS "json"')
    names = list(rel.columns)
    if fmt == "parquet":  # Parquet readers choke on repeated names: a, a_1 (as in json)
        taken = set(names)
        for i, name in enumerate(names):
            if name in names[:i]:
                k = 1
                while f"{name}_{k}" in taken:
                    k += 1
                names[i] = f"{name}_{k}"
                taken.add(names[i])
    exprs, changed = [], names != list(rel.columns)
    for i, (name, typ) in enumerate(zip(names, rel.types), start=1):
        col, kind = f"#{i}", typ.id  # by position: names may repeat (SELECT a.lang, b.lang)
        if fmt == "csv" and kind not in _CSV_NATIVE:
            expr = f"to_json({col})::VARCHAR" if kind in _NESTED else f"CAST({col} AS VARCHAR)"
            changed = True
        elif fmt == "parquet" and kind in _PARQUET_TEXT:
            expr = f"CAST({col} AS VARCHAR)"
            changed = True
        else:
            expr = col
        exprs.append(f"{expr} AS {_ident(name)}")
    return rel.project(", ".join(exprs)) if changed else rel


def result_table(catalog: Catalog, query: str, fmt: str | None = None, *,
                 limits: SqlLimits | None = None) -> pa.Table:
    """Run one read-only statement and return its whole result as an Arrow table.

    ``fmt`` (``csv``, ``json`` or ``parquet``) converts the columns that format cannot hold
    (nested values become JSON text in CSV; intervals, unions, bit strings become text in
    Parquet; ``json`` gives one column of JSON objects, one per row). None keeps DuckDB's
    Arrow types.
    """
    limits = limits or SqlLimits()
    con = connect(catalog, limits=limits)
    return _limited(con, limits, lambda: (
        _for_format(_relation(con, query), fmt) if fmt else _relation(con, query)
    ).to_arrow_table())


def render_table(catalog: Catalog, query: str, *, limits: SqlLimits | None = None,
                 max_rows: int = 40, max_width: int = 200) -> str:
    """Run one read-only statement; its result as DuckDB's text table (``max_rows`` shown)."""
    limits = limits or SqlLimits()
    con = connect(catalog, limits=limits)
    buf = io.StringIO()

    def show() -> None:
        rel = _relation(con, query)
        if rel.columns == ["explain_key", "explain_value"]:  # a plan: print it as drawn
            buf.write("\n".join(value for _, value in rel.fetchall()) + "\n")
            return
        with contextlib.redirect_stdout(buf):
            rel.show(max_rows=max_rows, max_width=max_width)

    _limited(con, limits, show)
    return buf.getvalue()


def run_sql(catalog: Catalog, query: str, *,
            limits: SqlLimits | None = None) -> duckdb.DuckDBPyRelation:
    """Run one read-only query; its result, already fetched, as a DuckDB relation
    (``.fetchall()``, ``.show()``, ``.to_arrow_table()``) on a connection that can open no
    file."""
    table = result_table(catalog, query, limits=limits)
    return duckdb.connect(":memory:", config={"enable_external_access": False,
                                              "lock_configuration": True}).from_arrow(table)


def _json_lines(table: pa.Table) -> str:
    lines = table.column("json").to_pylist() if table.num_rows else []
    out = []
    for line in lines:
        if "NaN" in line or "Infinity" in line:  # DuckDB writes bare NaN/Infinity: not JSON
            line = json.dumps(json.loads(line, parse_constant=str), ensure_ascii=False,
                              separators=(",", ":"))
        out.append(line + "\n")
    return "".join(out)


def write_result(table: pa.Table, fmt: str, out: str | os.PathLike | IO[bytes]) -> int:
    """Write ``table`` (from :func:`result_table` with the same ``fmt``) to a file path,
    atomically, or to a binary stream; returns the number of rows.

    Raises :class:`~lape_hub.errors.QueryError` (one line) when the format cannot hold a
    column or the file cannot be written.
    """
    from lape_hub.atomic import atomic_path

    def dump(sink: str | os.PathLike | IO[bytes]) -> None:
        if fmt == "csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, sink)
        elif fmt == "json":
            data = _json_lines(table).encode()
            if isinstance(sink, (str, os.PathLike)):
                Path(sink).write_bytes(data)
            else:
                sink.write(data)
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, sink)
        else:
            raise QueryError(f"unknown result format {fmt!r}; choose from csv, json, parquet")

    try:
        if isinstance(out, (str, os.PathLike)):
            with atomic_path(out) as tmp:
                dump(tmp)
        else:
            dump(out)
            out.flush()
    except (pa.ArrowException, ValueError, TypeError) as e:
        raise QueryError(f"cannot write the result as {fmt}: {_first_line(e)}") from None
    except BrokenPipeError:
        raise
    except OSError as e:
        where = out if isinstance(out, (str, os.PathLike)) else "the output"
        raise QueryError(f"cannot write {where}: {e.strerror or _first_line(e)}") from None
    return table.num_rows


def entry_file(catalog: Catalog, table: str, **key: str) -> Path:
    """The Parquet file of one entry (raises SchemaError on a bad footer)."""
    path = catalog.entry_path(table, key)
    table_schema(table).check_file(path)
    return path


__all__ = ["FORMATS", "connect", "check_read_only", "result_table", "render_table", "run_sql",
           "write_result", "entry_file", "DATA_FILE"]
