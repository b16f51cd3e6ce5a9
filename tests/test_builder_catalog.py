"""The builder's catalog side: counts entries, LAPE from stored counts, plan staleness."""
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
    assert corpus_id("sib200", "train", 16384) == "sib200:train@16384"
