"""Read-only SQL over the catalog with DuckDB: one view per table over its Parquet files.

User SQL runs on a locked-down connection: only SELECT (and EXPLAIN) statements are
accepted; file access is limited to the catalog folder; configuration is locked; no
extension can be installed or loaded. The catalog is never changed by a query.

Example::

    >>> from lape_hub.catalog import Catalog
    >>> rel = run_sql(Catalog(), "SELECT count(*) AS n FROM neurons")  # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from lape_hub.catalog import DATA_FILE, Catalog
from lape_hub.errors import QueryRefusedError, SchemaError
from lape_hub.schemas import table_names, table_schema

_ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def _duck_type(t: pa.DataType) -> str:
    if pa.types.is_list(t):
        return _duck_type(t.value_type) + "[]"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    return {pa.string(): "VARCHAR", pa.int32(): "INTEGER", pa.int64(): "BIGINT",
            pa.float32(): "FLOAT", pa.float64(): "DOUBLE", pa.bool_(): "BOOLEAN"}[t]


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def connect(catalog: Catalog, *, check: bool = True) -> duckdb.DuckDBPyConnection:
    """A locked-down in-memory DuckDB connection with one view per catalog table."""
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False})
    root = catalog.root.resolve()
    for table in table_names():
        schema = table_schema(table)
        entries = catalog.entries(table)
        if check:
            for e in entries:
                schema.check_file(e.path)
        if entries:
            files = ", ".join(_sql_str(str(e.path.resolve())) for e in entries)
            src = f"read_parquet([{files}], union_by_name=true, hive_partitioning=false)"
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM {src}")
        else:
            cols = ", ".join(f"CAST(NULL AS {_duck_type(f.type)}) AS {f.name}"
                             for f in schema.arrow)
            con.execute(f"CREATE VIEW {table} AS SELECT {cols} LIMIT 0")
    con.execute(f"SET allowed_directories=[{_sql_str(str(root) + '/')}]")
    con.execute("SET enable_external_access=false")
    con.execute("SET lock_configuration=true")
    return con


def check_read_only(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Refuse anything but SELECT/EXPLAIN (INSERT, COPY, ATTACH, CREATE, SET, PRAGMA...)."""
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as e:
        raise QueryRefusedError(f"SQL error: {str(e).splitlines()[0]}") from None
    if not statements:
        raise QueryRefusedError("empty query")
    for st in statements:
        if st.type not in _ALLOWED:
            kind = str(st.type).split(".")[-1]
            raise QueryRefusedError(f"refused: {kind} statements are not allowed; the catalog "
                                    "is read-only (use SELECT)")


def run_sql(catalog: Catalog, query: str) -> duckdb.DuckDBPyRelation:
    """Run one read-only query; returns a DuckDB relation (``.arrow()``, ``.show()``)."""
    con = connect(catalog)
    check_read_only(con, query)
    try:
        statements = con.extract_statements(query)
        for st in statements[:-1]:
            con.execute(st.query)
        return con.sql(statements[-1].query)
    except duckdb.Error as e:
        msg = str(e).strip().splitlines()[0]
        if "parquet" in msg.lower() and ("corrupt" in msg.lower() or "magic" in msg.lower()):
            raise SchemaError(msg) from None
        raise QueryRefusedError(f"SQL error: {msg}") from None


def entry_file(catalog: Catalog, table: str, **key: str) -> Path:
    """The Parquet file of one entry (raises SchemaError on a bad footer)."""
    path = catalog.entry_path(table, key)
    table_schema(table).check_file(path)
    return path


__all__ = ["connect", "run_sql", "check_read_only", "entry_file", "DATA_FILE"]
