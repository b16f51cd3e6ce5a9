"""Partition values become folder names: any text stays one folder inside its table, and
the path parses back to exactly the key (hypothesis-generated values: '/', '\\\\', '..',
'%', '=', control and non-ASCII characters)."""
from __future__ import annotations

import string

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lape_hub.catalog import Catalog, parse_entry_path
from lape_hub.errors import SchemaError

NASTY = st.sampled_from(["/", "\\", "..", ".", "%", "%2F", "=", ":", "*", "\0", "\n", " ",
                         "../..", "C:\\x", "a/../b", "ħ", "日本"])
VALUES = st.lists(st.one_of(NASTY, st.text(string.printable, max_size=4),
                            st.text(max_size=3)), min_size=1, max_size=4).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model=VALUES, refset=VALUES, selection=VALUES)
def test_any_partition_value_is_one_folder_and_parses_back(tmp_path, model, refset, selection):
    cat = Catalog(tmp_path / "cat")
    key = {"model": model, "refset": refset, "selection": selection}
    if any(v in ("", ".", "..") for v in key.values()):
        with pytest.raises(SchemaError, match="invalid partition value"):
            cat.entry_path("neurons", key)
        return
    path = cat.entry_path("neurons", key)
    rel = path.relative_to(cat.root)                 # no escape: still under the root
    assert rel.parts[0] == "neurons" and len(rel.parts) == 5 and rel.name == "data.parquet"
    for part, col in zip(rel.parts[1:4], ("model", "refset", "selection")):
        assert part.startswith(col + "=") and "/" not in part and "\\" not in part
        assert part.split("=", 1)[1] not in ("", ".", "..")
    assert parse_entry_path(rel.as_posix()) == ("neurons", key)


@pytest.mark.parametrize("value", ["a/b", "..\\..\\etc", "x=y", "50%", "ħ/日本"])
def test_written_entries_round_trip_through_the_filesystem(tmp_path, value):
    from lape_hub.schemas import table_schema

    cat = Catalog(tmp_path / "cat")
    schema = table_schema("neurons").arrow
    key = {"model": value, "refset": "r", "selection": "s"}
    path = cat.entry_path("neurons", key)
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([], schema=schema), path)
    assert [e.key for e in cat.entries("neurons")] == [key]
    assert [e.key for e in cat.entries("neurons", model=value)] == [key]
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and tmp_path / "cat" not in p.parents]
    assert outside == [] and path.parent.parent.parent.parent == cat.root / "neurons"


@pytest.mark.parametrize("rel", [
    "neurons/model=a/refset=b/data.parquet",                      # a partition missing
    "neurons/model=a/refset=b/selection=../data.parquet",         # '..' value
    "neurons/model=a%2Fb/refset=..%2F/selection=s/data.parquet",  # quoted '/': one folder each
    "neurons/model=a/b/refset=r/selection=s/data.parquet",        # a '/' in a value, unquoted
    "neurons/refset=r/model=a/selection=s/data.parquet",          # wrong order
    "neurons/model=a/refset=r/selection=s/other.parquet",
    "neurons/model=A%2f/refset=r/selection=s/data.parquet",       # lower-case escape: not ours
])
def test_only_paths_the_catalog_writes_parse(rel):
    if rel.startswith("neurons/model=a%2Fb/refset=..%2F"):
        assert parse_entry_path(rel) == ("neurons", {"model": "a/b", "refset": "../", "selection": "s"})
    else:
        assert parse_entry_path(rel) is None
