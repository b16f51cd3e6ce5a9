"""The builder's catalog side: counts entries, LAPE from stored counts, plan staleness."""
import itertools
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from lape_hub.builder import corpus_id, plan, read_counts, update_lape, write_counts
from lape_hub.lape import select_lape


def test_lape_from_stored_counts_matches_pure_selection(catalog, synthetic_counts):
    langs, n_tokens, over_zero = synthetic_counts
    stored = read_counts(catalog, "gemma-3-270m", langs, revision="test", corpus="synthetic")
    assert (stored.over_zero == over_zero).all() and (stored.n_tokens == n_tokens).all()
    expected = select_lape(over_zero, n_tokens)
    for k, lang in enumerate(langs):
        ns = catalog.neuron_set("gemma-3-270m", lang, refset="test-4")
        want = expected.neurons(k)
        got = [(layer, int(n)) for layer, idx in enumerate(ns.layers) for n in idx]
        assert got == want
    lape = catalog.read("lape", model="gemma-3-270m", refset="test-4")
    assert lape.num_rows == 18 * 2048
    info = json.loads(lape.column("params")[0].as_py())
    assert info["langs"] == langs and info["tau_filter"] == pytest.approx(expected.tau_filter)
    assert lape.column("signature")[0].as_py().startswith("model:gemma-3-270m@test|refset:test-4")
    probs = np.array(lape.column("probs").to_pylist(), dtype=np.float32)
    assert np.allclose(probs.reshape(18, 2048, 4), expected.probs)


def test_counts_validation(tmp_path):
    from lape_hub.catalog import Catalog

    cat = Catalog(tmp_path)
    with pytest.raises(ValueError, match="shape"):
        write_counts(cat, "gemma-3-270m", "mt", np.zeros((2, 3), int), 10, revision="r", corpus="c")
    with pytest.raises(ValueError, match="n_tokens"):
        write_counts(cat, "gemma-3-270m", "mt", np.full((18, 2048), 11), 10, revision="r", corpus="c")


def test_plan_reports_missing_and_stale(tmp_path, synthetic_counts, monkeypatch):
    from lape_hub.catalog import Catalog
    import lape_hub.builder as b

    monkeypatch.setattr(b, "model_revision", lambda spec: "test")
    cat = Catalog(tmp_path)
    langs, n_tokens, over_zero = synthetic_counts
    p = plan(cat, "gemma-3-270m", "paper-12", corpus="synthetic")
    assert len(p.missing_counts) == 12 and p.lape_status == "missing"
    paper = list(p.langs)
    rng = np.random.default_rng(1)
    for lang in paper:
        write_counts(cat, "gemma-3-270m", lang, over_zero[:, :, rng.integers(4)], 6000,
                     revision="test", corpus="synthetic")
    p = plan(cat, "gemma-3-270m", "paper-12", corpus="synthetic")
    assert p.missing_counts == [] and p.lape_status == "missing"
    update_lape(cat, "gemma-3-270m", "paper-12", corpus="synthetic", revision="test")
    assert plan(cat, "gemma-3-270m", "paper-12", corpus="synthetic").up_to_date
    write_counts(cat, "gemma-3-270m", "mt", over_zero[:, :, 0] // 2, 6000, revision="test",
                 corpus="synthetic")
    p = plan(cat, "gemma-3-270m", "paper-12", corpus="synthetic")
    assert p.lape_status == "stale" and "mlt_Latn" in p.reason
    assert "stale" in p.describe()


def test_corpus_id(tmp_path):
    assert corpus_id(tmp_path / "sib200", "train") == "sib200:train"
    assert corpus_id(str(tmp_path / "sib200") + "/", "train") == "sib200:train"
    assert corpus_id("sib200", "train", 16384) == "sib200:train@16384"
    assert corpus_id("sib200", "dev", 16384, dtype="bfloat16") == "sib200:dev@16384+bf16"
    assert corpus_id("x.jsonl", "train", dtype="float32", bos="skip") == "x:train+nobos"
    with pytest.raises(ValueError):
        corpus_id("sib200", bos="sometimes")


def test_corpus_id_round_trips_and_legacy_ids_read_as_float32_bos_counted():
    from lape_hub.builder import CorpusKey, parse_corpus_id

    for name, split, tok, dtype, bos in itertools.product(["sib200", "glot"], ["train", "dev"],
                                                          [None, 7, 16384], ["float32", "bfloat16"],
                                                          ["count", "skip"]):
        key = CorpusKey(name, split, tok, dtype, bos)
        assert parse_corpus_id(key.id) == key
    legacy = parse_corpus_id("sib200:train@16384")  # every entry written before the tags
    assert (legacy.dtype, legacy.bos, legacy.max_tokens) == ("float32", "count", 16384)
    assert parse_corpus_id("synthetic") is None and parse_corpus_id("a:b+fp8") is None


def test_counting_dtype_follows_the_device(monkeypatch):
    import lape_hub.builder as b

    monkeypatch.setattr(b, "_cpu_has_bf16", lambda: False)
    assert b.resolve_counting_dtype("auto", "cpu") == "float32"
    assert b.resolve_counting_dtype("auto", "cuda:1") == "bfloat16"
    monkeypatch.setattr(b, "_cpu_has_bf16", lambda: True)
    assert b.resolve_counting_dtype("auto", "cpu") == "bfloat16"
    assert b.resolve_counting_dtype("bf16", "cpu") == "bfloat16"
    assert b.resolve_counting_dtype("float32", "cuda") == "float32"
    with pytest.raises(ValueError):
        b.resolve_counting_dtype("float16", "cpu")


def test_a_short_corpus_entry_completes_larger_budgets_only(tmp_path, synthetic_counts):
    """Counts of a corpus that ran out at N tokens stand for any budget above N (the same
    tokens would be counted), never for a smaller budget, another dtype or BOS rule."""
    from lape_hub.builder import counted_langs, counts_index
    from lape_hub.catalog import Catalog

    cat = Catalog(tmp_path)
    _, _, over_zero = synthetic_counts
    small = np.minimum(over_zero[:, :, 0], 900)
    write_counts(cat, "gemma-3-270m", "mt", small, 900, revision="r",
                 corpus="sib200:train@900+bf16", params={"corpus_exhausted": True})
    write_counts(cat, "gemma-3-270m", "ne", small, 900, revision="r",
                 corpus="sib200:train@900+bf16", params={"corpus_exhausted": False})
    write_counts(cat, "gemma-3-270m", "mk", small, 900, revision="r", corpus="sib200:train@16384+bf16")
    index = counts_index(cat, "gemma-3-270m", revision="r", corpus="sib200:train@16384+bf16")
    assert index == {"mlt_Latn": "sib200:train@900+bf16", "mkd_Cyrl": "sib200:train@16384+bf16"}
    assert counted_langs(cat, "gemma-3-270m", revision="r", corpus="sib200:train@800+bf16") == set()
    assert counted_langs(cat, "gemma-3-270m", revision="r", corpus="sib200:train@16384") == set()
    assert counted_langs(cat, "gemma-3-270m", revision="r",
                         corpus="sib200:train@16384+bf16+nobos") == set()
    stored = read_counts(cat, "gemma-3-270m", ["mlt_Latn", "mkd_Cyrl"], revision="r",
                         corpus="sib200:train@16384+bf16")
    assert stored.n_tokens.tolist() == [900, 900]


def test_signature_records_how_tokens_were_counted(tmp_path, synthetic_counts):
    from lape_hub.catalog import Catalog

    cat = Catalog(tmp_path)
    _, _, over_zero = synthetic_counts
    for cid in ("c:train@6000", "c:train@6000+bf16+nobos"):
        write_counts(cat, "gemma-3-270m", "mt", over_zero[:, :, 0], 6000, revision="r", corpus=cid)
    sigs = {cid: cat.read("activation_counts", corpus=cid).column("signature")[0].as_py()
            for cid in ("c:train@6000", "c:train@6000+bf16+nobos")}
    assert "|tok:6k|dtype:float32|bos:count|" in sigs["c:train@6000"]
    assert "|tok:6k|dtype:bfloat16|bos:skip|" in sigs["c:train@6000+bf16+nobos"]
