"""Catalog edge cases found by mutation testing (issue 14): row filters over scattered rows,
which neuron set wins when several entries hold a language, empty sets, custom reference
sets, the manifest checks, summary counts and small helpers. Each test checks what the code
does against values computed here, not against the code itself."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lape_hub.catalog as c
from lape_hub.catalog import Catalog, check_manifest, file_langs, first_row
from lape_hub.errors import NotInCatalogError, SchemaError, UnknownRefsetError
from lape_hub.formats import neurons_entry
from lape_hub.neuron_set import NeuronSet
from lape_hub.schemas import SCHEMA_VERSION, table_schema

SEL = "top0.05-f0.95-b0.95"


def _ns(lang, neurons, refset="paper-12"):
    layers = [np.array(neurons, np.int64)] + [np.array([], np.int64)] * 17
    return NeuronSet("gemma-3-270m", lang, layers, d_model=640, d_ffn=2048, refset=refset)


def _entry(sets, selection=SEL, langs=None, signature="sig"):
    params = {"langs": langs} if langs is not None else {"x": 1}
    return neurons_entry(sets, revision="r1", selection=selection, signature=signature,
                         params=params)


def test_row_filter_keeps_scattered_and_contiguous_rows(tmp_path):
    cat = Catalog(tmp_path)
    t = _entry([_ns("mlt_Latn", [1, 2, 5]), _ns("npi_Deva", [3])])
    scattered = t.take(pa.array([0, 3, 1, 2]))  # mlt, npi, mlt, mlt
    cat.write("neurons", scattered)
    got = cat.read("neurons", columns=["lang", "neuron"], rows={"lang": "mlt_Latn"})
    assert got.column_names == ["lang", "neuron"]
    assert got.column("neuron").to_pylist() == [1, 2, 5]
    got = cat.read("neurons", columns=["neuron"], rows={"lang": "npi_Deva"})
    assert got.column("neuron").to_pylist() == [3]
    assert cat.read("neurons", rows={"lang": "eng_Latn"}).num_rows == 0
    # two columns must both match
    both = cat.read("neurons", columns=["neuron"], rows={"lang": "mlt_Latn", "layer": 0})
    assert both.column("neuron").to_pylist() == [1, 2, 5]
    assert cat.read("neurons", rows={"lang": "mlt_Latn", "model": "other"}).num_rows == 0


def test_read_without_entries_is_empty_with_the_asked_columns(tmp_path):
    cat = Catalog(tmp_path)
    assert cat.read("neurons").column_names == list(table_schema("neurons").columns)
    assert cat.read("neurons", columns=["lang", "layer"]).column_names == ["lang", "layer"]
    cat.write("neurons", _entry([_ns("mlt_Latn", [1])]))
    assert cat.read("neurons", model="other").num_rows == 0
    assert cat.read("neurons", model="gemma-3-270m").num_rows == 1


def test_paper_refset_and_default_selection_win(tmp_path):
    cat = Catalog(tmp_path)
    cat.write("neurons", _entry([_ns("mlt_Latn", [9], refset="aaa")]))
    cat.write("neurons", _entry([_ns("mlt_Latn", [7])], selection="aaa-selection"))
    cat.write("neurons", _entry([_ns("mlt_Latn", [1])], selection="zzz-selection"))
    # paper-12 before "aaa" (alphabetically first); within paper-12 the default selection
    # is not there, so the alphabetically first selection
    assert cat.neuron_set("gemma-3-270m", "mt").layers[0].tolist() == [7]
    cat.write("neurons", _entry([_ns("mlt_Latn", [4])]))
    ns = cat.neuron_set("gemma-3-270m", "mt")
    assert ns.layers[0].tolist() == [4] and ns.refset == "paper-12"
    assert ns.metadata["selection"] == SEL and ns.metadata["params"] == {"x": 1}
    assert cat.neuron_set("gemma-3-270m", "mt", selection="zzz-selection").layers[0].tolist() == [1]
    # a custom reference set is found by name, in any case
    ns = cat.neuron_set("gemma-3-270m", "mt", refset="AAA")
    assert ns.layers[0].tolist() == [9] and ns.refset == "aaa"
    assert cat.refset_name("gemma-3-270m", "AaA") == "aaa"
    with pytest.raises(UnknownRefsetError):
        cat.refset_name("gemma-3-270m", "bbb")
    with pytest.raises(NotInCatalogError, match="refset paper-12"):
        cat.neuron_set("gemma-3-270m", "ne", refset="paper-12")
    avail = cat.neuron_sets_available("gemma-3-270m")
    assert avail == {("aaa", SEL): ["mlt_Latn"], ("paper-12", SEL): ["mlt_Latn"],
                     ("paper-12", "aaa-selection"): ["mlt_Latn"],
                     ("paper-12", "zzz-selection"): ["mlt_Latn"]}


def test_a_listed_language_with_no_neurons_is_an_empty_set(tmp_path):
    cat = Catalog(tmp_path)
    cat.write("neurons", _entry([_ns("mlt_Latn", [1, 2]), _ns("npi_Deva", [])],
                                langs=["mlt_Latn", "npi_Deva"], signature="s2"))
    ns = cat.neuron_set("gemma-3-270m", "npi_Deva")
    assert ns.n_neurons == 0 and ns.lang == "npi_Deva"
    assert ns.metadata["signature"] == "s2"
    assert ns.metadata["params"] == {"langs": ["mlt_Latn", "npi_Deva"]}
    with pytest.raises(NotInCatalogError):  # not among the entry's languages
        cat.neuron_set("gemma-3-270m", "eng_Latn")


def test_write_key_must_agree_with_the_rows(tmp_path):
    cat = Catalog(tmp_path)
    t = _entry([_ns("mlt_Latn", [1])])
    with pytest.raises(SchemaError, match="disagree"):
        cat.write("neurons", t, key={"refset": "other"})
    p = cat.write("neurons", t, key={"refset": "paper-12"})  # agreeing key is fine
    assert p.parent.name == f"selection={SEL}" and p.parent.parent.name == "refset=paper-12"
    a = _entry([_ns("mlt_Latn", [1])])
    b = _entry([_ns("mlt_Latn", [2], refset="other")])
    with pytest.raises(SchemaError, match="several values of 'refset'"):
        cat.write("neurons", pa.concat_tables([a, b]))
    with pytest.raises(SchemaError, match="lacks"):
        cat.entry_path("neurons", {"model": "m"})


def test_entries_filter_and_foreign_folders(tmp_path):
    cat = Catalog(tmp_path)
    assert cat.entries("neurons") == []
    cat.write("neurons", _entry([_ns("mlt_Latn", [1])]))
    cat.write("neurons", _entry([_ns("mlt_Latn", [1], refset="aaa")]))
    assert [e.key["refset"] for e in cat.entries("neurons")] == ["aaa", "paper-12"]
    (e,) = cat.entries("neurons", refset="aaa")
    assert e.table == "neurons" and e.key == {"model": "gemma-3-270m", "refset": "aaa",
                                              "selection": SEL}
    assert e.size == e.path.stat().st_size > 0
    assert cat.check() == [x.path for x in cat.entries("neurons")]
    files = list(cat.iter_files())
    assert files[0] == tmp_path / "CATALOG.json" and files[1:] == cat.check()
    bad = tmp_path / "neurons/model=a/refset=%2f/selection=s/data.parquet"  # lower-case quote
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"")
    with pytest.raises(SchemaError, match=r"data.parquet: not a catalog file name lape-hub writes \(partition folders "
                       r"must be the table's key, values as lape-hub quotes them\)$"):
        cat.entries("neurons")


def test_manifest_written_once_and_checked(tmp_path):
    cat = Catalog(tmp_path)
    assert repr(cat) == f"Catalog({str(tmp_path)!r})"
    cat.write("neurons", _entry([_ns("mlt_Latn", [1])]))
    doc = json.loads((tmp_path / "CATALOG.json").read_text())
    assert doc["format"] == "lape-hub-catalog" and doc["schema_version"] == SCHEMA_VERSION
    assert "neurons" in doc["tables"]
    (tmp_path / "CATALOG.json").write_text(json.dumps({"schema_version": 1, "mine": True}))
    cat.write("neurons", _entry([_ns("mlt_Latn", [2])]))
    assert json.loads((tmp_path / "CATALOG.json").read_text())["mine"] is True  # not rewritten
    assert check_manifest(tmp_path / "CATALOG.json", "here") == 1


@pytest.mark.parametrize("doc,match", [
    ({"schema_version": True}, "schema_version true"),
    ({"schema_version": 0}, "schema_version 0,"),
    ({"schema_version": "1"}, 'schema_version "1"'),
    ({}, "schema_version null"),
    ([1], "is not a lape-hub catalog manifest$"),
    ({"format": "other", "schema_version": 1}, "is not a lape-hub catalog manifest$"),
])
def test_bad_manifests_are_refused(tmp_path, doc, match):
    p = tmp_path / "CATALOG.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(SchemaError, match=match):
        check_manifest(p, "here")
    with pytest.raises(SchemaError):
        Catalog(tmp_path)


def test_manifest_size_limit_and_newer_version_action(tmp_path):
    p = tmp_path / "CATALOG.json"
    body = json.dumps({"schema_version": 1}).encode()
    p.write_bytes(body + b" " * ((1 << 20) - len(body)))  # exactly the limit: accepted
    assert check_manifest(p, "here") == 1
    p.write_bytes(body + b" " * ((1 << 20) - len(body) + 1))
    with pytest.raises(SchemaError, match="not a small regular file"):
        check_manifest(p, "here")
    assert c._read_small(p, 1 << 21)[:len(body)] == body
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opened without blocking, refused before any read
    with pytest.raises(ValueError, match="not a regular file"):
        c._read_small(fifo, 10)
    p.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(SchemaError, match="upgrade lape-hub before publishing$"):
        check_manifest(p, "repo", action="before publishing")
    with pytest.raises(SchemaError, match="upgrade lape-hub$"):
        check_manifest(p, "repo")
    p.write_text(json.dumps({"format": "lape-hub-catalog", "schema_version": SCHEMA_VERSION}))
    assert check_manifest(p, "here") == SCHEMA_VERSION


def test_file_langs_and_first_row(tmp_path):
    cat = Catalog(tmp_path)
    p = cat.write("neurons", _entry([_ns("mlt_Latn", [1]), _ns("npi_Deva", [2])]))
    assert file_langs(p, "neurons") == {"mlt_Latn", "npi_Deva"}
    assert first_row(p, ["lang", "neuron"]) == {"lang": "mlt_Latn", "neuron": 1}
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"params": pa.array([], pa.string())}), empty)
    assert first_row(empty) is None
    assert file_langs(empty, "lape") is None
    for params, want in [({"langs": ["a", 3]}, {"a", "3"}), ({"langs": "a"}, None),
                         ({"x": 1}, None)]:
        f = tmp_path / "lape.parquet"
        pq.write_table(pa.table({"params": [json.dumps(params), "{}"]}), f)
        assert file_langs(f, "lape") == want
    pq.write_table(pa.table({"params": ["not json"]}), f)
    assert file_langs(f, "lape") is None
    pq.write_table(pa.table({"params": ["[1]"]}), f)
    assert file_langs(f, "lape") is None
    (tmp_path / "junk.parquet").write_bytes(b"junk")
    with pytest.raises(SchemaError, match="corrupt Parquet file .*junk"):
        first_row(tmp_path / "junk.parquet")


def test_first_line_of_an_error():
    assert c._first_line(ValueError("  one\ntwo  ")) == "one"
    assert c._first_line(KeyError()) == "KeyError"
    assert c._first_line(OSError("\n")) == "OSError"


def test_summary_counts_files_bytes_and_langs(tmp_path):
    cat = Catalog(tmp_path)
    p1 = cat.write("neurons", _entry([_ns("mlt_Latn", [1]), _ns("npi_Deva", [2])]))
    p2 = cat.write("neurons", _entry([_ns("eng_Latn", [1])], selection="other"))
    p3 = cat.write("neurons", _entry([_ns("eng_Latn", [1])], selection="other2"))
    rows = {(r["table"], r["selection"]): r for r in cat.summary()}
    assert set(rows) == {("neurons", SEL), ("neurons", "other"), ("neurons", "other2")}
    r = rows[("neurons", SEL)]
    assert r == {"table": "neurons", "model": "gemma-3-270m", "set": "paper-12",
                 "selection": SEL, "langs": 2, "files": 1, "bytes": p1.stat().st_size}
    assert rows[("neurons", "other")]["bytes"] == p2.stat().st_size
    assert rows[("neurons", "other2")]["langs"] == 1 and p3.exists()


def test_lock_is_reentrant_and_released(tmp_path):
    from filelock import FileLock

    cat = Catalog(tmp_path)
    with cat.lock():
        with cat.lock():
            cat.write("neurons", _entry([_ns("mlt_Latn", [1])]))
    other = FileLock(str(tmp_path / ".lock"), timeout=0)
    other.acquire()  # released after the writes: another process-level lock gets it
    other.release()
    assert os.path.exists(tmp_path / ".lock")


def test_default_root_quoting_and_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("LAPE_HUB_CATALOG", str(tmp_path / "env-cat"))
    assert Catalog().root == tmp_path / "env-cat"
    cat = Catalog(tmp_path / "a" / "b")  # the lock creates missing parent folders
    cat.write("neurons", _entry([_ns("mlt_Latn", [1])]))
    assert (tmp_path / "a/b/.lock").exists()
    p = cat.entry_path("neurons", {"model": "X\0Y", "refset": "r%", "selection": "s"})
    assert p.parts[-4:-1] == ("model=X%00Y", "refset=r%25", "selection=s")
    with pytest.raises(SchemaError, match=r"neurons: partition key lacks \['refset', 'selection'\]"):
        cat.entry_path("neurons", {"model": "m"})
    (tmp_path / "m").mkdir()
    (tmp_path / "m/CATALOG.json").write_text("{")
    with pytest.raises(SchemaError, match=f"^catalog {tmp_path / 'm'}: CATALOG.json is not"):
        Catalog(tmp_path / "m")


def test_busy_message_names_the_catalog_and_the_wait(tmp_path, monkeypatch):
    from filelock import Timeout

    from lape_hub.errors import CatalogBusyError

    class Held:
        def acquire(self):
            raise Timeout("x")

    monkeypatch.setattr(c, "LOCK_TIMEOUT_S", 0.25)
    with pytest.raises(CatalogBusyError, match=f"catalog {tmp_path} is locked .*0.25 s"):
        with c._LockGuard(Held(), tmp_path):
            pass
    cat = Catalog(tmp_path)
    cat.lock()
    assert cat._lock.timeout == 0.25


def test_summary_of_counts_sums_every_file(catalog):
    files = sorted(catalog.root.glob("activation_counts/**/data.parquet"))
    assert len(files) == 4
    (row,) = [r for r in catalog.summary() if r["table"] == "activation_counts"]
    assert row["files"] == 4 and row["langs"] == 4 and row["selection"] == ""
    assert row["bytes"] == sum(p.stat().st_size for p in files)
    assert row["set"] == "synthetic" and row["model"] == "gemma-3-270m"


def test_other_models_and_skipped_entries_do_not_leak(tmp_path):
    cat = Catalog(tmp_path)
    other = NeuronSet("other-model", "mlt_Latn", [np.array([8], np.int64)] + [np.array([], np.int64)] * 17,
                      d_model=640, d_ffn=2048, refset="paper-12")
    cat.write("neurons", _entry([other]))
    cat.write("neurons", _entry([NeuronSet("other-model", "npi_Deva", other.layers, d_model=640,
                                           d_ffn=2048, refset="only-other")]))
    assert cat.neuron_sets_available("gemma-3-270m") == {}
    with pytest.raises(NotInCatalogError):
        cat.neuron_set("gemma-3-270m", "mt")
    with pytest.raises(UnknownRefsetError):  # a custom set of another model is not ours
        cat.refset_name("gemma-3-270m", "only-other")
    cat.write("neurons", _entry([_ns("mlt_Latn", [5], refset="zzz")]))
    assert cat.neuron_set("gemma-3-270m", "mt").layers[0].tolist() == [5]
    # the preferred entry (paper-12) does not list npi_Deva: skip it, keep looking
    cat.write("neurons", _entry([_ns("mlt_Latn", [1])], langs=["mlt_Latn"]))
    cat.write("neurons", _entry([_ns("npi_Deva", [6], refset="zzz")], selection="s2"))
    assert cat.neuron_set("gemma-3-270m", "npi_Deva").layers[0].tolist() == [6]


def test_corrupt_file_messages_carry_pyarrow_first_line(tmp_path):
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 not parquet at all PAR1")
    for fn in (lambda: c._distinct(junk, "lang"), lambda: first_row(junk)):
        with pytest.raises(SchemaError) as e:
            fn()
        msg = str(e.value)
        assert msg.startswith(f"corrupt Parquet file {junk}: ") and not msg.endswith(": None")
        assert "\n" not in msg
    small = tmp_path / "small"
    small.write_bytes(b"x" * 11)
    with pytest.raises(ValueError, match=f"^{small} is over 10 bytes$"):
        c._read_small(small, 10)


@pytest.mark.parametrize("doc,match", [
    ("{", r"manifest \(unreadable, not a small regular file, or not JSON\)$"),
    (json.dumps({"schema_version": "x" * 100}),
     r'^here: CATALOG.json has schema_version "x{39}, not a positive integer: not a lape-hub '
     r"catalog manifest$"),
])
def test_manifest_messages_are_exact(tmp_path, doc, match):
    (tmp_path / "CATALOG.json").write_text(doc)
    with pytest.raises(SchemaError, match=match):
        check_manifest(tmp_path / "CATALOG.json", "here")


def test_rows_split_by_others_and_the_registry_shape(tmp_path):
    from lape_hub.registry import resolve_model

    cat = Catalog(tmp_path)
    t = _entry([_ns("mlt_Latn", [1, 2]), _ns("npi_Deva", [3, 4])])
    cat.write("neurons", t.take(pa.array([0, 2, 3, 1])))  # mlt at rows 0 and 3
    got = cat.read("neurons", columns=["neuron"], rows={"lang": "mlt_Latn"})
    assert got.column("neuron").to_pylist() == [1, 2]
    ns = cat.neuron_set("gemma-3-270m", "mt")
    spec = resolve_model("gemma-3-270m")
    assert ns.layers[0].tolist() == [1, 2] and ns.model == spec.alias
    assert (ns.d_model, ns.d_ffn, ns.total_params) == (spec.d_model, spec.d_ffn, spec.total_params)


def test_missing_set_message_names_only_a_given_refset(tmp_path):
    cat = Catalog(tmp_path)
    with pytest.raises(NotInCatalogError, match=f"gemma-3-270m · npi_Deva in catalog {tmp_path};"):
        cat.neuron_set("gemma-3-270m", "ne")
    cat.write("neurons", _entry([_ns("mlt_Latn", [1], refset="zzz")]))
    with pytest.raises(NotInCatalogError, match="npi_Deva refset zzz in catalog .*--refset zzz"):
        cat.neuron_set("gemma-3-270m", "ne", refset="zzz")


def test_data_pages_corrupt_behind_a_good_footer(tmp_path):
    cat = Catalog(tmp_path)
    p = cat.write("neurons", _entry([_ns("mlt_Latn", list(range(200)))]))
    raw = bytearray(p.read_bytes())
    raw[4:len(raw) // 3] = b"\xff" * (len(raw) // 3 - 4)  # pages gone, footer intact
    p.write_bytes(bytes(raw))
    with pytest.raises(SchemaError) as e:
        cat.read("neurons")
    msg = str(e.value)
    assert msg.startswith(f"corrupt Parquet file {p}: ") and not msg.endswith(": None")


def test_files_are_written_compressed_with_statistics_and_dictionaries(tmp_path):
    cat = Catalog(tmp_path)
    p = cat.write("neurons", _entry([_ns("mlt_Latn", [1, 2, 3])]))
    meta = pq.ParquetFile(p).metadata
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    col = meta.row_group(0).column(names.index("lang"))
    assert col.compression == "ZSTD" and col.statistics is not None and col.statistics.has_min_max
    assert any("DICTIONARY" in enc for enc in col.encodings)
    text = (tmp_path / "CATALOG.json").read_text()
    assert text == json.dumps(json.loads(text), indent=2) + "\n"
