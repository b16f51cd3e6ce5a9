"""Table schemas (``schemas/<table>.json``): columns, types, primary key, partitioning.

Every write is validated (names, types, nulls, primary-key uniqueness) and every read
checks a file's Parquet footer against its schema.

Example::

    >>> from lape_hub.schemas import table_schema
    >>> s = table_schema("neurons")
    >>> s.partition_by, s.primary_key[-2:]
    (('model', 'refset', 'selection'), ('layer', 'neuron'))
"""
from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pyarrow as pa

from lape_hub.errors import SchemaError
from lape_hub.paths import schemas_dir

SCHEMA_VERSION = 1

_SCALARS = {
    "string": pa.string(), "bool": pa.bool_(), "int32": pa.int32(), "int64": pa.int64(),
    "float32": pa.float32(), "float64": pa.float64(),
    "timestamp[us, tz=UTC]": pa.timestamp("us", tz="UTC"),
}


def arrow_type(name: str) -> pa.DataType:
    """``"list<int64>"`` -> ``pa.list_(pa.int64())``."""
    if name.startswith("list<") and name.endswith(">"):
        return pa.list_(arrow_type(name[5:-1]))
    try:
        return _SCALARS[name]
    except KeyError:
        raise SchemaError(f"unknown column type {name!r}") from None


@dataclass(frozen=True)
class TableSchema:
    table: str
    version: int
    description: str
    partition_by: tuple[str, ...]
    primary_key: tuple[str, ...]
    arrow: pa.Schema

    @property
    def columns(self) -> list[str]:
        return self.arrow.names

    def validate(self, data: pa.Table) -> pa.Table:
        """Return ``data`` in schema order and types, or raise SchemaError saying why."""
        names = set(data.column_names)
        missing = [c for c in self.columns if c not in names]
        extra = sorted(names - set(self.columns))
        if missing or extra:
            raise SchemaError(f"{self.table}: missing columns {missing}, unexpected {extra}")
        for field in self.arrow:
            if not field.nullable and data.column(field.name).null_count:
                raise SchemaError(f"{self.table}: column {field.name!r} has nulls")
        try:
            out = data.select(self.columns).cast(self.arrow, safe=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ValueError) as e:
            raise SchemaError(f"{self.table}: column types do not fit the schema ({e})") from None
        if out.num_rows:
            keys = out.group_by(list(self.primary_key)).aggregate([([], "count_all")])
            if keys.num_rows != out.num_rows:
                raise SchemaError(f"{self.table}: duplicate primary key {list(self.primary_key)}")
        return out

    def check_file(self, path: Path) -> None:
        """A Parquet file's footer must parse and match the schema (one-line error naming it)."""
        import pyarrow.parquet as pq

        try:
            if not stat.S_ISREG(os.stat(path).st_mode):   # a pipe would block the reader
                raise SchemaError(f"corrupt Parquet file {path}: not a regular file")
            found = pq.read_schema(path)
        except (pa.ArrowException, OSError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise SchemaError(f"corrupt Parquet file {path}: {first}") from None
        self.check_arrow_schema(found, path)

    def check_arrow_schema(self, found: pa.Schema, path: Path) -> None:
        """``found`` (a file's schema) must match this schema; the error names ``path``."""
        want = {f.name: f.type for f in self.arrow}
        got = {f.name: f.type.value_type if pa.types.is_dictionary(f.type) else f.type
               for f in found}
        if want != got:
            # by ==, not by hash: list<item: T> (Arrow) and list<element: T> (a Parquet
            # footer) are the same type but hash differently
            diff = sorted({(n, t) for n, t in want.items() if got.get(n) != t}
                          | {(n, t) for n, t in got.items() if want.get(n) != t}, key=str)[:3]
            raise SchemaError(f"{path} does not match schema {self.table!r} v{self.version} "
                              f"(differs in {', '.join(f'{n}:{t}' for n, t in diff)})")


@lru_cache(maxsize=None)
def table_schema(table: str) -> TableSchema:
    path = schemas_dir() / f"{table}.json"
    try:
        doc = json.loads(path.read_text())
        fields = [pa.field(c["name"], arrow_type(c["type"]), nullable=c.get("nullable", True),
                           metadata={"description": c.get("description", "")})
                  for c in doc["columns"]]
        schema = TableSchema(doc["table"], int(doc["schema_version"]), doc.get("description", ""),
                             tuple(doc["partition_by"]), tuple(doc["primary_key"]),
                             pa.schema(fields))
    except FileNotFoundError:
        raise SchemaError(f"no schema for table {table!r} (looked for {path})") from None
    except (KeyError, ValueError, TypeError) as e:
        raise SchemaError(f"{path}: malformed schema ({e})") from None
    if schema.table != table:
        raise SchemaError(f"{path}: declares table {schema.table!r}, expected {table!r}")
    for col in schema.partition_by + schema.primary_key:
        if col not in schema.columns:
            raise SchemaError(f"{path}: key column {col!r} is not a column")
    return schema


def table_names() -> list[str]:
    """Every table that has a schema file."""
    return sorted(p.stem for p in schemas_dir().glob("*.json"))
