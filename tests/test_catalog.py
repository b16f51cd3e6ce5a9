"""Catalog: schema enforcement, atomic writes, corrupt files, locking, layout."""
import json
import multiprocessing as mp
import os
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lape_hub.catalog import Catalog
from lape_hub.errors import CatalogBusyError, NotInCatalogError, SchemaError
from lape_hub.formats import neurons_entry
from lape_hub.neuron_set import NeuronSet

KEY = {"model": "gemma-3-270m", "refset": "paper-12", "selection": "top0.05-f0.95-b0.95"}


def small_entry(lang="mlt_Latn", neurons=(1, 2, 3)):
    layers = [np.array(neurons)] + [np.array([], np.int64)] * 17
    ns = NeuronSet("gemma-3-270m", lang, layers, d_model=640, d_ffn=2048, refset="paper-12")
    return neurons_entry([ns], revision="r1", selection=KEY["selection"], signature="sig",
                         params={"x": 1})


def test_write_read_roundtrip_and_layout(tmp_path):
    cat = Catalog(tmp_path)
    path = cat.write("neurons", small_entry())
    assert path == tmp_path / "neurons/model=gemma-3-270m/refset=paper-12/selection=top0.05-f0.95-b0.95/data.parquet"
    assert json.loads((tmp_path / "CATALOG.json").read_text())["schema_version"] == 1
    ns = cat.neuron_set("gemma-3-270m", "mt", refset="paper-12")
    assert ns.layers[0].tolist() == [1, 2, 3] and ns.n_neurons == 3
    assert ns.metadata["signature"] == "sig"
    assert not list(tmp_path.rglob(".tmp-*"))  # no temp files left


@pytest.mark.parametrize("mutate,match", [
    (lambda t: t.drop_columns(["signature"]), "missing columns"),
    (lambda t: t.append_column("extra", pa.array([1] * t.num_rows)), "unexpected"),
    (lambda t: t.set_column(t.schema.get_field_index("layer"), "layer",
                            pa.array(["x"] * t.num_rows)), "types"),
    (lambda t: t.set_column(t.schema.get_field_index("lang"), "lang",
                            pa.nulls(t.num_rows, pa.string())), "nulls|several"),
    (lambda t: pa.concat_tables([t, t]), "duplicate primary key"),
])
def test_schema_enforced_on_write(tmp_path, mutate, match):
    cat = Catalog(tmp_path)
    with pytest.raises(SchemaError, match=match):
        cat.write("neurons", mutate(small_entry()))
    assert not list(tmp_path.rglob("*.parquet"))


def test_corrupt_and_mismatched_files_name_the_file(tmp_path):
    cat = Catalog(tmp_path)
    path = cat.write("neurons", small_entry())
    path.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(SchemaError, match=str(path)):
        cat.neuron_set("gemma-3-270m", "mt")
    pq.write_table(pa.table({"model": ["gemma-3-270m"], "lang": ["x"]}), path)
    with pytest.raises(SchemaError, match="does not match schema"):
        cat.read("neurons")


def _crash_during_write(root):
    import lape_hub.catalog as c

    def boom(*a, **k):
        raise KeyboardInterrupt  # dies half-way: after the temp file, before the rename

    cat = c.Catalog(root)
    c.os.replace = boom
    try:
        cat.write("neurons", small_entry(neurons=(7, 8)))
    except KeyboardInterrupt:
        os._exit(3)


def test_crash_mid_write_keeps_previous_state(tmp_path):
    cat = Catalog(tmp_path)
    cat.write("neurons", small_entry(neurons=(1, 2, 3)))
    p = mp.get_context("fork").Process(target=_crash_during_write, args=(str(tmp_path),))
    p.start()
    p.join()
    assert p.exitcode == 3
    assert cat.neuron_set("gemma-3-270m", "mt").layers[0].tolist() == [1, 2, 3]
    assert not list(tmp_path.rglob(".tmp-*"))


def test_lock_timeout_is_one_line(tmp_path, monkeypatch):
    import lape_hub.catalog as c
    from filelock import FileLock

    monkeypatch.setattr(c, "LOCK_TIMEOUT_S", 0.2)
    held = FileLock(str(tmp_path / ".lock"))
    held.acquire()
    try:
        def other():
            try:
                c.Catalog(tmp_path).write("neurons", small_entry())
            except CatalogBusyError:
                os._exit(4)
            os._exit(0)
        p = mp.get_context("fork").Process(target=other)
        p.start()
        p.join()
        assert p.exitcode == 4
    finally:
        held.release()


def test_newer_schema_version_refused(tmp_path):
    (tmp_path / "CATALOG.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(SchemaError, match="newer"):
        Catalog(tmp_path)


def test_missing_entry_says_how_to_build(tmp_path):
    with pytest.raises(NotInCatalogError, match="lape-hub build --model gemma-3-270m"):
        Catalog(tmp_path).neuron_set("gemma-3-270m", "ne")


def test_adding_a_language_touches_only_its_files(catalog, synthetic_counts):
    from lape_hub.builder import update_lape, write_counts

    langs, n_tokens, over_zero = synthetic_counts
    before = {p: p.stat().st_mtime_ns for p in catalog.root.rglob("*.parquet")}
    new = write_counts(catalog, "gemma-3-270m", "eng_Latn", over_zero[:, :, 0] // 2, 4000,
                       revision="test", corpus="synthetic")
    after = {p: p.stat().st_mtime_ns for p in catalog.root.rglob("*.parquet")}
    assert set(after) - set(before) == {new}
    assert all(after[p] == before[p] for p in before)
    update_lape(catalog, "gemma-3-270m", "test-5", langs=langs + ["eng_Latn"], revision="test",
                corpus="synthetic")
    counts_files = [p for p in catalog.root.rglob("*.parquet") if "activation_counts" in str(p)]
    assert all(after[p] == before[p] for p in counts_files if p in before)


def test_summary(catalog):
    rows = {(r["table"], r["set"]): r for r in catalog.summary()}
    assert rows[("activation_counts", "synthetic")]["langs"] == 4
    assert rows[("neurons", "test-4")]["langs"] == 4
