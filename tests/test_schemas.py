"""Table schemas: type names, write validation, footer checks, malformed schema files.

A tiny schema folder (``LAPE_HUB_SCHEMAS``) keeps each case independent of the real
tables; one test reads the shipped schemas to pin the documented layout.
"""
from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lape_hub import schemas
from lape_hub.errors import SchemaError
from lape_hub.schemas import arrow_type, table_names, table_schema

TOY = {
    "table": "toy", "schema_version": 3, "description": "a toy table",
    "partition_by": ["model"], "primary_key": ["model", "layer"],
    "columns": [
        {"name": "model", "type": "string", "nullable": False, "description": "alias"},
        {"name": "layer", "type": "int32", "nullable": False},
        {"name": "score", "type": "float32"},
        {"name": "ids", "type": "list<int64>"},
    ],
}


@pytest.fixture
def schema_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LAPE_HUB_SCHEMAS", str(tmp_path))
    table_schema.cache_clear()
    (tmp_path / "toy.json").write_text(json.dumps(TOY))
    yield tmp_path
    table_schema.cache_clear()


def toy_rows(**over):
    cols = {"model": ["a", "a", "b"], "layer": [0, 1, 0], "score": [0.5, None, 1.5],
            "ids": [[1], [], None]}
    cols.update(over)
    return pa.table(cols)


@pytest.mark.parametrize("name, want", [
    ("string", pa.string()), ("bool", pa.bool_()), ("int32", pa.int32()),
    ("int64", pa.int64()), ("float32", pa.float32()), ("float64", pa.float64()),
    ("timestamp[us, tz=UTC]", pa.timestamp("us", tz="UTC")),
    ("list<int32>", pa.list_(pa.int32())),
    ("list<list<string>>", pa.list_(pa.list_(pa.string()))),
])
def test_arrow_type_names(name, want):
    assert arrow_type(name) == want


@pytest.mark.parametrize("name", ["list<int32", "int16", "List<int32>", "list<>", ""])
def test_arrow_type_unknown(name):
    with pytest.raises(SchemaError, match="unknown column type"):
        arrow_type(name)


def test_table_schema_reads_every_field(schema_dir):
    s = table_schema("toy")
    assert (s.table, s.version, s.description) == ("toy", 3, "a toy table")
    assert s.partition_by == ("model",) and s.primary_key == ("model", "layer")
    assert s.columns == ["model", "layer", "score", "ids"]
    assert [f.nullable for f in s.arrow] == [False, False, True, True]
    assert s.arrow.field("ids").type == pa.list_(pa.int64())
    assert s.arrow.field("model").metadata == {b"description": b"alias"}
    assert s.arrow.field("layer").metadata == {b"description": b""}
    assert table_names() == ["toy"]


def test_shipped_schemas_layout():
    table_schema.cache_clear()
    assert {"neurons", "lape", "activation_counts"} <= set(table_names())
    s = table_schema("neurons")
    assert s.partition_by == ("model", "refset", "selection")
    assert s.primary_key[-2:] == ("layer", "neuron")


def test_description_defaults_to_empty(schema_dir):
    doc = dict(TOY)
    del doc["description"]
    (schema_dir / "toy.json").write_text(json.dumps(doc))
    assert table_schema("toy").description == ""


@pytest.mark.parametrize("change, match", [
    (lambda d: d.pop("primary_key"), "malformed schema"),
    (lambda d: d.update(schema_version="three"), "malformed schema"),
    (lambda d: d.update(columns=[{"name": "model", "type": "int16"}]), "unknown column type"),
    (lambda d: d.update(table="other"), "declares table 'other', expected 'toy'"),
    (lambda d: d.update(partition_by=["lang"]), "key column 'lang' is not a column"),
    (lambda d: d.update(primary_key=["model", "neuron"]), "key column 'neuron' is not a column"),
])
def test_malformed_schema_files(schema_dir, change, match):
    doc = json.loads(json.dumps(TOY))
    change(doc)
    (schema_dir / "toy.json").write_text(json.dumps(doc))
    with pytest.raises(SchemaError, match=match) as info:
        table_schema("toy")
    assert "\n" not in str(info.value)


def test_missing_schema(schema_dir):
    with pytest.raises(SchemaError, match="no schema for table 'nope'"):
        table_schema("nope")


def test_invalid_json(schema_dir):
    (schema_dir / "toy.json").write_text("{not json")
    with pytest.raises(SchemaError, match="malformed schema"):
        table_schema("toy")


def test_validate_orders_and_casts(schema_dir):
    s = table_schema("toy")
    rows = toy_rows().select(["ids", "score", "layer", "model"])
    out = s.validate(rows)
    assert out.schema.equals(s.arrow)  # order, types and nullability of the schema
    assert out.column("layer").to_pylist() == [0, 1, 0]
    assert out.column("score").to_pylist() == [0.5, None, 1.5]


def test_validate_missing_and_extra(schema_dir):
    s = table_schema("toy")
    with pytest.raises(SchemaError, match=r"missing columns \['score'\], unexpected \[\]"):
        s.validate(toy_rows().drop_columns(["score"]))
    with pytest.raises(SchemaError, match=r"missing columns \[\], unexpected \['x', 'z'\]"):
        s.validate(toy_rows().append_column("z", pa.array([1, 2, 3]))
                   .append_column("x", pa.array([1, 2, 3])))


def test_validate_nulls_only_where_forbidden(schema_dir):
    s = table_schema("toy")
    assert s.validate(toy_rows()).column("score").null_count == 1  # nullable: fine
    with pytest.raises(SchemaError, match="column 'layer' has nulls"):
        s.validate(toy_rows(layer=[0, None, 2]))


def test_validate_unsafe_cast(schema_dir):
    s = table_schema("toy")
    with pytest.raises(SchemaError, match="column types do not fit"):
        s.validate(toy_rows(layer=[0, 1, 2**40]))  # does not fit int32
    with pytest.raises(SchemaError, match="column types do not fit"):
        s.validate(toy_rows(layer=["0", "x", "2"]))


def test_validate_primary_key(schema_dir):
    s = table_schema("toy")
    with pytest.raises(SchemaError, match=r"duplicate primary key \['model', 'layer'\]"):
        s.validate(toy_rows(layer=[0, 0, 0]))
    # same layer in two models is not a duplicate; same model, two layers neither
    assert s.validate(toy_rows(model=["a", "b", "c"], layer=[0, 0, 0])).num_rows == 3
    assert s.validate(toy_rows().slice(0, 0)).num_rows == 0


def test_check_file(schema_dir, tmp_path):
    s = table_schema("toy")
    good = tmp_path / "good.parquet"
    pq.write_table(s.validate(toy_rows()), good)
    s.check_file(good)
    # dictionary-encoded strings read back as their value type: still the schema
    dict_file = tmp_path / "dict.parquet"
    t = s.validate(toy_rows())
    t = t.set_column(0, pa.field("model", pa.dictionary(pa.int32(), pa.string()), False),
                     t.column("model").dictionary_encode())
    s.check_arrow_schema(t.schema, dict_file)

    other = tmp_path / "other.parquet"
    pq.write_table(s.validate(toy_rows()).cast(pa.schema(
        [pa.field(f.name, pa.int64() if f.name == "layer" else f.type) for f in s.arrow])),
        other)
    with pytest.raises(SchemaError) as info:
        s.check_file(other)
    msg = str(info.value)
    assert msg.startswith(f"{other} does not match schema 'toy' v3 (differs in ")
    assert msg.endswith("(differs in layer:int32, layer:int64)")  # only what differs

    with pytest.raises(SchemaError, match=r"differs in .*extra:int64"):
        s.check_arrow_schema(s.arrow.append(pa.field("extra", pa.int64())), other)


def test_check_file_diff_names_at_most_three(schema_dir, tmp_path):
    s = table_schema("toy")
    found = pa.schema([pa.field(f"c{i}", pa.int8()) for i in range(5)])
    with pytest.raises(SchemaError) as info:
        s.check_arrow_schema(found, tmp_path / "x")
    assert str(info.value).count(":") == 3  # three name:type pairs


def test_check_file_corrupt(schema_dir, tmp_path):
    s = table_schema("toy")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(SchemaError, match=f"corrupt Parquet file {bad}: ") as info:
        s.check_file(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(SchemaError, match="corrupt Parquet file .*missing") as info:
        s.check_file(tmp_path / "missing.parquet")
    assert "No such file or directory" in str(info.value)  # the error's own first line


def test_check_file_error_without_message(schema_dir, tmp_path, monkeypatch):
    good = tmp_path / "good.parquet"
    pq.write_table(table_schema("toy").validate(toy_rows()), good)

    def fail(path):
        raise OSError()

    monkeypatch.setattr(pq, "read_schema", fail)
    with pytest.raises(SchemaError, match=f"^corrupt Parquet file {good}: OSError$"):
        table_schema("toy").check_file(good)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_check_file_refuses_a_pipe(schema_dir, tmp_path):
    pipe = tmp_path / "pipe.parquet"
    os.mkfifo(pipe)
    with pytest.raises(SchemaError, match="not a regular file"):
        table_schema("toy").check_file(pipe)  # would block forever if opened


def test_schema_version_constant():
    assert schemas.SCHEMA_VERSION == 1
