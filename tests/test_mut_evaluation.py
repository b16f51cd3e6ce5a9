"""Evaluation statistics and scoring against independent references (issue 14's mutation
survivors): bootstraps recomputed with numpy, corpus scores and p-values from sacrebleu called
directly, accuracies counted by hand, the evals table read back row by row. In process, tiny
models only."""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

FIX = Path(__file__).parent / "fixtures" / "eval"
DATA = FIX / "sib200"

REFS = ["the cat sat on the mat today", "a dog ran in the park", "birds sing in the morning",
        "the cow eats green grass", "a red fox jumps high", "the old owl sleeps all day",
        "rain falls on the roof", "children play with a ball"]
HYP_A = ["the cat sat on a mat", "dog ran park", "birds sing in morning", "cow eats grass",
         "a fox jumps", "owl sleeps", "rain on the roof", "children play ball"]
HYP_B = ["the cat sat on the mat", "a dog ran in the park", "birds sing the morning",
         "the cow eats green grass", "a red fox jumps", "the owl sleeps all day",
         "rain falls on the roof", "children play with ball"]


# ------------------------------------------------------------------------------ significance
def _numpy_paired_bootstrap(a, b, n, seed):
    """The documented procedure, written out: same resampled examples for both systems."""
    x, y = np.array(a, dtype=float), np.array(b, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n, len(x)))
    deltas = np.array([y[ix].mean() - x[ix].mean() for ix in idx])
    return deltas


def test_paired_bootstrap_mean_matches_numpy_by_hand():
    from lape_hub.evaluation.significance import SEED, paired_bootstrap_mean

    assert SEED == 12345                                     # sacrebleu's default seed
    a = [0.1, 0.5, 0.2, 0.9, 0.3, 0.0, 0.4, 0.6, 0.2, 0.3]
    b = [0.3, 0.4, 0.6, 0.8, 0.5, 0.1, 0.4, 0.9, 0.1, 0.7]
    d, (lo, hi), p = paired_bootstrap_mean(a, b, n=300)
    deltas = _numpy_paired_bootstrap(a, b, 300, 12345)
    assert d == pytest.approx(np.mean(b) - np.mean(a))
    assert (lo, hi) == pytest.approx((np.percentile(deltas, 2.5), np.percentile(deltas, 97.5)))
    assert p == pytest.approx(np.count_nonzero(deltas <= 0) / 300)
    assert 0 < p < 0.5 and lo < d < hi
    # B worse than A: the p-value counts resamples where B is not worse
    d2, (lo2, hi2), p2 = paired_bootstrap_mean(b, a, n=300, seed=7)
    deltas2 = _numpy_paired_bootstrap(b, a, 300, 7)
    assert d2 == pytest.approx(-d) and d2 < 0
    assert (lo2, hi2) == pytest.approx((np.percentile(deltas2, 2.5), np.percentile(deltas2, 97.5)))
    assert p2 == pytest.approx(np.count_nonzero(deltas2 >= 0) / 300)
    # the default number of resamples is 1000
    _, ci_default, _ = paired_bootstrap_mean(a, b)
    deltas3 = _numpy_paired_bootstrap(a, b, 1000, 12345)
    assert ci_default == pytest.approx((np.percentile(deltas3, 2.5), np.percentile(deltas3, 97.5)))


def test_paired_bootstrap_p_value_with_ties_in_the_resamples():
    from lape_hub.evaluation.significance import paired_bootstrap_mean

    # two examples differ, in B's favour once and against it once, of six: many resamples tie
    a = [1, 0, 1, 1, 0, 1]
    b = [1, 1, 0, 1, 0, 1]
    d, _, p = paired_bootstrap_mean(a, b, n=200)
    assert d == 0 and p == 1.0                               # no observed difference
    a2, b2 = [1, 0, 0, 1, 0, 1], [1, 1, 0, 1, 0, 1]
    d2, _, p2 = paired_bootstrap_mean(a2, b2, n=200)
    deltas = _numpy_paired_bootstrap(a2, b2, 200, 12345)
    assert d2 == pytest.approx(1 / 6)
    assert p2 == pytest.approx(np.count_nonzero(deltas <= 0) / 200)   # ties count against B
    assert np.count_nonzero(deltas == 0) > 0                 # the case is really exercised


def test_paired_bootstrap_refuses_unpaired_or_empty_input():
    from lape_hub.errors import LapeHubError
    from lape_hub.evaluation.significance import paired_bootstrap_mean

    with pytest.raises(LapeHubError, match="^paired bootstrap needs the same, non-empty "
                       "examples for both systems$"):
        paired_bootstrap_mean([1, 0], [1, 0, 1])
    with pytest.raises(LapeHubError, match="^paired bootstrap needs the same, non-empty "
                       "examples for both systems$"):
        paired_bootstrap_mean([], [])


def test_corpus_scores_and_interval_equal_sacrebleu_on_resampled_sentences():
    from sacrebleu.metrics import BLEU, CHRF

    from lape_hub.evaluation.significance import corpus_interval, corpus_scores

    samples = np.array([[0, 0, 1, 2, 3, 4, 5, 6], [7, 6, 5, 4, 3, 2, 1, 0], [2, 2, 2, 3, 3, 5, 7, 7]])
    for make in (BLEU, lambda: CHRF(word_order=2)):
        got = corpus_scores(make(), HYP_A, REFS, samples)
        want = [make().corpus_score([HYP_A[i] for i in ix], [[REFS[i] for i in ix]]).score
                for ix in samples]
        assert got == pytest.approx(want)
        lo, hi = corpus_interval(make(), HYP_A, REFS, n=60, seed=3)
        idx = np.random.default_rng(3).integers(0, len(REFS), size=(60, len(REFS)))
        scores = [make().corpus_score([HYP_A[i] for i in ix], [[REFS[i] for i in ix]]).score
                  for ix in idx]
        assert (lo, hi) == pytest.approx((np.percentile(scores, 2.5), np.percentile(scores, 97.5)))
    # defaults: 1000 resamples, seed 12345
    lo, hi = corpus_interval(BLEU(), HYP_A, REFS)
    idx = np.random.default_rng(12345).integers(0, len(REFS), size=(1000, len(REFS)))
    scores = corpus_scores(BLEU(), HYP_A, REFS, idx)
    assert (lo, hi) == pytest.approx((np.percentile(scores, 2.5), np.percentile(scores, 97.5)))


def _trow(metric, hyps, run_id="r", **items):
    return {"task": "translation", "direction": "x->y", "metric": metric, "run_id": run_id,
            "items": {"ids": list(range(len(REFS))), "hyp": hyps, "ref": REFS, **items}}


def test_compare_rows_corpus_metrics_against_sacrebleu_directly():
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    from lape_hub.evaluation.significance import compare_rows

    for metric, make in (("bleu", BLEU), ("chrf++", lambda: CHRF(word_order=2))):
        c = compare_rows(_trow(metric, HYP_A), _trow(metric, HYP_B), n=100)
        a = make().corpus_score(HYP_A, [REFS]).score
        b = make().corpus_score(HYP_B, [REFS]).score
        assert (c.metric, c.a, c.b, c.n, c.method) == (metric, pytest.approx(a), pytest.approx(b),
                                                       len(REFS), "sacrebleu-paired-bs")
        assert c.delta == pytest.approx(b - a) and c.delta > 0
        _, stats = PairedTest([("a", HYP_A), ("b", HYP_B)], {metric: make()}, [REFS],
                              test_type="bs", n_samples=100)()
        key = next(k for k in stats if k != "System")
        assert c.p_value == pytest.approx(stats[key][1].p_value)
        idx = np.random.default_rng(12345).integers(0, len(REFS), size=(100, len(REFS)))
        deltas = [make().corpus_score([HYP_B[i] for i in ix], [[REFS[i] for i in ix]]).score
                  - make().corpus_score([HYP_A[i] for i in ix], [[REFS[i] for i in ix]]).score
                  for ix in idx]
        assert c.ci == pytest.approx((np.percentile(deltas, 2.5), np.percentile(deltas, 97.5)))
        # close systems (two sentences better): the bootstrap p-value, not the floor 1/(n+1)
        close = list(HYP_A)
        close[1], close[4] = HYP_B[1], HYP_B[4]
        c2 = compare_rows(_trow(metric, HYP_A), _trow(metric, close), n=100)
        _, stats = PairedTest([("a", HYP_A), ("b", close)], {metric: make()}, [REFS],
                              test_type="bs", n_samples=100)()
        assert c2.p_value == pytest.approx(stats[key][1].p_value) and c2.p_value > 0.05
        d = c.to_dict()
        assert d == {"metric": metric, "a": c.a, "b": c.b, "delta": c.delta, "ci_low": c.ci[0],
                     "ci_high": c.ci[1], "p_value": c.p_value, "n": len(REFS),
                     "test": "sacrebleu-paired-bs"}


def test_compare_rows_sentence_bleu_and_accuracy_by_hand():
    from sacrebleu.metrics import BLEU

    from lape_hub.evaluation.significance import compare_rows

    bleu = BLEU(effective_order=True)
    sa = [bleu.sentence_score(h, [r]).score for h, r in zip(HYP_A, REFS)]
    sb = [bleu.sentence_score(h, [r]).score for h, r in zip(HYP_B, REFS)]
    c = compare_rows(_trow("bleu_sent", HYP_A), _trow("bleu_sent", HYP_B), n=150)
    deltas = _numpy_paired_bootstrap(sa, sb, 150, 12345)
    assert (c.a, c.b) == (pytest.approx(sum(sa) / 8), pytest.approx(sum(sb) / 8))
    assert c.delta == pytest.approx(c.b - c.a)
    assert c.ci == pytest.approx((np.percentile(deltas, 2.5), np.percentile(deltas, 97.5)))
    assert c.p_value == pytest.approx(np.count_nonzero(deltas <= 0) / 150)
    assert (c.n, c.method) == (8, "paired-bs-sentences")

    ca, cb = [1, 0, 0, 1, 0, 1, 0, 0], [1, 1, 0, 1, 1, 1, 0, 1]     # 3/8 vs 6/8 correct
    row = lambda correct: {"task": "topic", "direction": "x", "metric": "acc_ll", "run_id": "r",
                           "items": {"ids": list(range(8)), "correct": correct}}
    c = compare_rows(row(ca), row(cb), n=150)
    deltas = _numpy_paired_bootstrap(ca, cb, 150, 12345)
    assert (c.a, c.b, c.delta) == (pytest.approx(37.5), pytest.approx(75.0), pytest.approx(37.5))
    assert c.ci == pytest.approx((100 * np.percentile(deltas, 2.5), 100 * np.percentile(deltas, 97.5)))
    assert c.p_value == pytest.approx(np.count_nonzero(deltas <= 0) / 150)
    assert (c.n, c.method, c.metric) == (8, "paired-bs-examples", "acc_ll")


def test_compare_rows_refusals_name_the_problem():
    from lape_hub.errors import LapeHubError
    from lape_hub.evaluation.significance import compare_rows

    for key, value in (("task", "topic"), ("direction", "y->x"), ("metric", "chrf++")):
        with pytest.raises(LapeHubError, match="^compare rows of the same task, direction and metric$"):
            compare_rows(_trow("bleu", HYP_A), {**_trow("bleu", HYP_B), key: value})
    empty = {**_trow("bleu", HYP_A, run_id="abc"), "items": None}
    with pytest.raises(LapeHubError, match="translation bleu of abc has no per-example data"):
        compare_rows(empty, _trow("bleu", HYP_B))
    with pytest.raises(LapeHubError, match=r"^the two systems were evaluated on different examples "
                       r"\(8 vs 3\); rerun both with the same --split and --limit$"):
        other = _trow("bleu", HYP_B)
        other["items"]["ids"] = [0, 1, 2]
        compare_rows(_trow("bleu", HYP_A), other)
    with pytest.raises(LapeHubError, match=r"different examples \(0 vs 8\)"):
        compare_rows({**_trow("bleu", HYP_A), "items": {"hyp": HYP_A}}, _trow("bleu", HYP_B))
    no_out = lambda: {"task": "t", "direction": "d", "metric": "ppl", "run_id": "r",
                      "items": {"ids": [1], "nll": 2.0}}
    with pytest.raises(LapeHubError, match="ppl has no per-example outputs"):
        compare_rows(no_out(), no_out())
    with pytest.raises(LapeHubError, match="no paired test for metric 'ter'"):
        compare_rows(_trow("ter", HYP_A), _trow("ter", HYP_B))


def _full(rows):
    from lape_hub.schemas import table_schema

    out = []
    for r in rows:
        row = {c: None for c in table_schema("evals").columns}
        row.update(model="tiny", lang="mlt_Latn", split="test", method="lora", revision="r",
                   n_examples=8, dataset="d", seconds=0.0, signature="s", lape_hub_version="0",
                   params="{}", metric_signature="m", created_at=datetime.now(timezone.utc))
        row.update(r)
        out.append(row)
    return out


def _eval_rows(run_id, hyps, correct, split="test", lang="mlt_Latn"):
    items_t = json.dumps({"ids": list(range(8)), "hyp": hyps, "ref": REFS})
    items_c = json.dumps({"ids": list(range(8)), "correct": correct})
    return _full([
        {"run_id": run_id, "lang": lang, "split": split, "task": "translation",
         "direction": "mlt_Latn->eng_Latn", "metric": m, "value": 1.0, "items": items_t}
        for m in ("bleu", "bleu_sent")] + [
        {"run_id": run_id, "lang": lang, "split": split, "task": "topic", "direction": "mlt_Latn",
         "metric": "acc_ll", "value": 1.0, "items": items_c},
        {"run_id": run_id, "lang": lang, "split": split, "task": "perplexity",
         "direction": "mlt_Latn", "metric": "ppl", "value": 30.0,
         "items": json.dumps({"nll": 3.4, "tokens": 99})},
        {"run_id": run_id, "lang": lang, "split": split, "task": "general",
         "direction": "arc", "metric": "acc", "value": 30.0, "items": None}])


def test_compare_systems_pairs_the_rows_of_both_runs(tmp_path):
    from lape_hub.catalog import Catalog
    from lape_hub.evaluation.results import record_evals
    from lape_hub.evaluation.significance import compare_rows, compare_systems

    cat = Catalog(tmp_path / "cat")
    ca, cb = [1, 0, 0, 1, 0, 1, 0, 0], [1, 1, 0, 1, 1, 1, 0, 1]
    record_evals(_eval_rows("base", HYP_A, ca) + _eval_rows("run1", HYP_B, cb)
                 + _eval_rows("run1", HYP_A, ca, split="dev")        # another split: not mixed in
                 + _eval_rows("run1", HYP_A, ca, lang="fra_Latn")
                 + _eval_rows("run2", HYP_A, cb), cat)
    out = compare_systems(cat, model="tiny", lang="mlt_Latn", run_a="base", run_b="run1", n=80)
    keys = [(o["task"], o["direction"], o["test"] if "test" in o else None, o["metric"]) for o in out]
    assert [(k[0], k[3]) for k in keys] == [("topic", "acc_ll"), ("translation", "bleu"),
                                          ("translation", "bleu_sent")]    # sorted, ppl/general out
    topic = out[0]
    want = compare_rows({"task": "topic", "direction": "mlt_Latn", "metric": "acc_ll", "run_id": "a",
                         "items": {"ids": list(range(8)), "correct": ca}},
                        {"task": "topic", "direction": "mlt_Latn", "metric": "acc_ll", "run_id": "b",
                         "items": {"ids": list(range(8)), "correct": cb}}, n=80)
    assert topic == {"task": "topic", "direction": "mlt_Latn", **want.to_dict()}
    assert (topic["a"], topic["b"]) == (pytest.approx(37.5), pytest.approx(75.0))
    bleu = out[1]
    assert bleu["b"] > bleu["a"] and bleu["direction"] == "mlt_Latn->eng_Latn"
    only = compare_systems(cat, model="tiny", lang="mlt_Latn", run_a="base", run_b="run1",
                           task="translation", n=80)
    assert [o["metric"] for o in only] == ["bleu", "bleu_sent"]
    dev = compare_systems(cat, model="tiny", lang="mlt_Latn", run_a="run1", run_b="run1",
                          split="dev", n=80)
    assert len(dev) == 3 and all(o["delta"] == 0 for o in dev)
    assert compare_systems(cat, model="tiny", lang="mlt_Latn", run_a="base", run_b="nope") == []
    # run1 has rows of another split and language with the same keys: only its test rows count
    back = compare_systems(cat, model="tiny", lang="mlt_Latn", run_a="run1", run_b="base",
                           task="topic", n=80)[0]
    assert (back["a"], back["b"]) == (pytest.approx(75.0), pytest.approx(37.5))
    default_n = compare_systems(cat, model="tiny", lang="mlt_Latn", run_a="base", run_b="run2",
                                task="topic")[0]
    deltas = _numpy_paired_bootstrap(ca, cb, 1000, 12345)
    assert default_n["ci_low"] == pytest.approx(100 * np.percentile(deltas, 2.5))


# ------------------------------------------------------------------------------ results
def test_record_evals_merges_by_primary_key_and_read_evals_filters(tmp_path):
    import pyarrow.parquet as pq

    from lape_hub.catalog import Catalog
    from lape_hub.evaluation.results import read_evals, record_evals

    cat = Catalog(tmp_path / "cat")
    first = _eval_rows("run1", HYP_A, [1] * 8) + _eval_rows("base", HYP_A, [0] * 8)
    paths = record_evals(first, cat)
    # one file per (model, lang, run_id, task): run1 and base x translation/topic/perplexity/general
    assert len(paths) == 8 and len(set(paths)) == 8
    assert all(p.is_file() and "model=tiny" in str(p) and "lang=mlt_Latn" in str(p) for p in paths)
    by_file = {p: pq.read_table(p).num_rows for p in paths}
    assert sorted(by_file.values()) == [1, 1, 1, 1, 1, 1, 2, 2]
    assert len(read_evals(cat)) == 10
    # a rerun of one metric replaces that row, the rest of the entry stays
    new = _full([{"run_id": "run1", "task": "translation", "direction": "mlt_Latn->eng_Latn",
                  "metric": "bleu", "value": 42.0}])
    again = record_evals(new, cat)
    assert len(again) == 1
    rows = read_evals(cat, run_id="run1", task="translation")
    assert sorted((r["metric"], r["value"]) for r in rows) == [("bleu", 42.0), ("bleu_sent", 1.0)]
    assert len(read_evals(cat)) == 10
    # a row of another split is a new row, not a replacement
    record_evals(_full([{**new[0], "split": "dev", "value": 7.0}]), cat)
    assert len(read_evals(cat)) == 11
    assert [r["value"] for r in read_evals(cat, split="dev")] == [7.0]
    # filters on partition and other columns, values compared as text
    assert {r["metric"] for r in read_evals(cat, run_id="base", task="topic")} == {"acc_ll"}
    assert [r["value"] for r in read_evals(cat, metric="ppl", run_id="base")] == [30.0]
    assert len(read_evals(cat, n_examples="8")) == 11
    assert read_evals(cat, metric="nope") == []
    # items: left out unless asked for, parsed from JSON when asked for; null stays None
    assert all("items" not in r for r in read_evals(cat))
    with_items = {r["metric"]: r["items"] for r in read_evals(cat, items=True, run_id="base")}
    assert with_items["acc_ll"] == {"ids": list(range(8)), "correct": [0] * 8}
    assert with_items["bleu"]["hyp"] == HYP_A and with_items["acc"] is None


def test_adapter_run_id_sources_in_order(tmp_path):
    from lape_hub.catalog import Catalog
    from lape_hub.digest import artifact_sha256
    from lape_hub.evaluation.results import adapter_run_id

    run = tmp_path / "run"
    folder = run / "adapter"
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"w" * 10)
    (folder / "lape_adapter.json").write_text(json.dumps({"signature": "sig-1"}))
    digest = artifact_sha256(folder)
    assert adapter_run_id(folder) == digest[:12]
    (run / "run.json").write_text(json.dumps({"run_id": "fromrunjson"}))
    assert adapter_run_id(folder) == "fromrunjson"
    for bad in ("not json", "[1, 2]", json.dumps({"run_id": ""}), json.dumps({"other": 1})):
        (run / "run.json").write_text(bad)              # unusable run.json: the digest
        assert adapter_run_id(folder) == digest[:12]
    (run / "run.json").unlink()
    assert adapter_run_id(folder, Catalog(tmp_path / "cat")) == digest[:12]   # no adapters table


def _adapter_setup(tmp_path):
    from lape_hub.digest import artifact_sha256
    from lape_hub.schemas import table_schema

    folder = tmp_path / "run" / "adapter"
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"w" * 10)
    (folder / "lape_adapter.json").write_text(json.dumps({"signature": "sig-1"}))
    digest = artifact_sha256(folder)
    import pyarrow as pa

    schema = table_schema("adapters")

    def adapters(rows):
        full = []
        for r in rows:
            row = {c: None for c in schema.columns}
            row.update(r)
            full.append(row)
        return full

    t = lambda h: datetime(2026, 1, 1, h, tzinfo=timezone.utc)
    base = {"model": "tiny", "lang": "mlt_Latn", "method": "lora"}
    rows = [{**base, "run_id": "older0", "artifact_sha256": "0" * 64, "signature": "sig-1",
             "created_at": t(1)},
            {**base, "run_id": "newer0", "artifact_sha256": "1" * 64, "signature": "sig-1",
             "created_at": t(3)},
            {**base, "run_id": "middle", "artifact_sha256": "2" * 64, "signature": "sig-1",
             "created_at": t(2)},
            {**base, "run_id": "othersig", "artifact_sha256": "3" * 64, "signature": "sig-2",
             "created_at": t(9)}]
    return folder, digest, adapters, rows, pa


def test_adapter_run_id_from_the_catalog(tmp_path, monkeypatch):
    from lape_hub.evaluation.results import adapter_run_id

    folder, digest, adapters, rows, pa = _adapter_setup(tmp_path)

    class FakeCatalog:        # the adapters table as `Catalog.read` returns it
        def __init__(self, rows):
            self.rows = rows

        def read(self, table, columns=None, **where):
            assert table == "adapters"
            return pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in adapters(self.rows)])

    # same signature, no same files: the newest such run
    assert adapter_run_id(folder, FakeCatalog(rows)) == "newer0"
    # the same files win over any signature
    same = {**rows[0], "run_id": "samefiles", "artifact_sha256": digest, "signature": "zzz",
            "created_at": datetime(2020, 1, 1, tzinfo=timezone.utc)}
    assert adapter_run_id(folder, FakeCatalog(rows + [same])) == "samefiles"
    assert adapter_run_id(folder, FakeCatalog([rows[3]])) == digest[:12]
    # no signature in the folder: a row whose signature is empty/None does not match it
    (folder / "lape_adapter.json").write_text(json.dumps({"format": "x"}))
    nosig = [{**rows[0], "signature": None}]
    from lape_hub.digest import artifact_sha256

    assert adapter_run_id(folder, FakeCatalog(nosig)) == artifact_sha256(folder)[:12]
    (folder / "lape_adapter.json").write_text("not json")
    assert adapter_run_id(folder, FakeCatalog(rows)) == artifact_sha256(folder)[:12]


def test_adapter_eval_rows_adds_the_english_rows_of_the_same_systems(tmp_path):
    from lape_hub.catalog import Catalog
    from lape_hub.evaluation.results import adapter_eval_rows, adapter_run_id, record_evals

    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"x")
    cat = Catalog(tmp_path / "cat")
    assert adapter_eval_rows(folder, "tiny", "mlt_Latn", None) == (adapter_run_id(folder), [])
    assert adapter_eval_rows(folder, "tiny", "mlt_Latn", cat) == (adapter_run_id(folder), [])
    record_evals(_eval_rows("run1", HYP_A, [1] * 8) + _eval_rows("run1", HYP_A, [1] * 8,
                                                                   lang="eng_Latn")
                 + _eval_rows("other", HYP_A, [1] * 8, lang="eng_Latn"), cat)
    rid, rows = adapter_eval_rows(folder, "tiny", "mlt_Latn", cat)
    assert rid == adapter_run_id(folder)
    own = [r for r in rows if r["lang"] == "mlt_Latn"]
    eng = [r for r in rows if r["lang"] == "eng_Latn"]
    assert len(own) == 5 and {r["run_id"] for r in eng} == {"run1"}
    assert sorted(r["task"] for r in eng) == ["general", "perplexity", "topic"]   # no translation
    _, only_eng = adapter_eval_rows(folder, "tiny", "eng_Latn", cat)
    assert len(only_eng) == 10                         # English itself: not doubled
    _, none = adapter_eval_rows(folder, "tiny", "fra_Latn", cat)
    assert none == []                                  # nothing of fra: no English rows either


def test_format_rows_by_hand():
    from lape_hub.evaluation.results import format_rows

    rows = [{"run_id": "base", "method": "base", "task": "topic", "direction": "mlt_Latn",
             "metric": "acc_ll", "split": "test", "n_examples": 8, "value": 37.5,
             "ci_low": 12.345, "ci_high": 62.5, "tokens_per_s": None},
            {"run_id": "abc", "method": "lora", "task": "perplexity", "direction": "eng_Latn",
             "metric": "ppl", "split": "dev", "n_examples": 3, "value": 123456.0,
             "ci_low": None, "ci_high": 1.0, "tokens_per_s": 99999.994},
            {"run_id": "def", "method": "ffn", "task": "general", "direction": "arc",
             "metric": "acc", "split": "test", "n_examples": 5, "value": 1e5, "ci_low": 1.0,
             "ci_high": None}]
    assert format_rows(rows) == [
        {"system": "base", "task": "topic", "direction": "mlt_Latn", "metric": "acc_ll",
         "split": "test", "n": "8", "value": "37.50", "95% CI": "[12.35, 62.50]", "tok/s": ""},
        {"system": "lora:abc", "task": "perplexity", "direction": "eng_Latn", "metric": "ppl",
         "split": "dev", "n": "3", "value": "1.23e+05", "95% CI": "", "tok/s": "99999.99"},
        {"system": "ffn:def", "task": "general", "direction": "arc", "metric": "acc",
         "split": "test", "n": "5", "value": "1e+05", "95% CI": "", "tok/s": ""}]
    assert format_rows([{**rows[0], "value": -123456.0, "tokens_per_s": 7}])[0]["value"] == "-1.23e+05"
    assert format_rows([{**rows[0], "tokens_per_s": 7}])[0]["tok/s"] == "7"


# ------------------------------------------------------------------------------ translation
def _fake_generate(calls, answer):
    from lape_hub.evaluation.generation import GenerationOutput

    def generate(model, tokenizer, prompts, settings):
        calls.append((list(prompts), settings))
        return GenerationOutput([answer(p) for p in prompts], new_tokens=10 * len(prompts),
                                seconds=2.0)
    return generate


def _ctx(lang, **kw):
    from lape_hub.evaluation.tasks import EvalContext

    return EvalContext(model=object(), tokenizer=object(), lang=lang, data_dir=DATA, **kw)


def _tsv(path):
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return {int(i): (c, t) for i, c, t in (line.split("\t") for line in lines)}


def test_translation_prompt_and_directions():
    from lape_hub.evaluation.translation import PROMPT_HASH, directions, prompt
    import hashlib

    assert prompt("mlt_Latn", "eng_Latn", "Il-qattus.") == (
        "Translate the following sentence from Maltese to English.\nMaltese: Il-qattus.\nEnglish:")
    assert prompt("xyz_Abcd", "eng_Latn", "t") == (
        "Translate the following sentence from xyz_Abcd to English.\nxyz_Abcd: t\nEnglish:")
    template = "Translate the following sentence from {src} to {tgt}.\n{src}: {text}\n{tgt}:"
    assert PROMPT_HASH == "p:" + hashlib.sha256(template.encode()).hexdigest()[:8]
    assert directions("mlt_Latn") == [("mlt_Latn", "eng_Latn"), ("eng_Latn", "mlt_Latn")]
    assert directions("mlt_Latn", which="from-en") == [("eng_Latn", "mlt_Latn")]
    assert directions("mlt_Latn", which="to-en") == [("mlt_Latn", "eng_Latn")]
    assert directions("fra_Latn", english="mlt_Latn") == [("fra_Latn", "mlt_Latn"),
                                                          ("mlt_Latn", "fra_Latn")]
    assert directions("eng_Latn") == []
    with pytest.raises(ValueError, match="'sideways' is not both, to-en or from-en"):
        directions("mlt_Latn", which="sideways")


def test_translation_score_signatures_and_intervals_against_sacrebleu():
    import sacrebleu
    from sacrebleu.metrics import BLEU, CHRF

    from lape_hub.evaluation.translation import score

    s = score(iter(HYP_A), iter(REFS))                       # any iterables
    sent = [sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(HYP_A, REFS)]
    assert s["bleu_sent"]["value"] == pytest.approx(sum(sent) / len(sent))
    sent_bleu = BLEU(effective_order=True)
    sent_bleu.sentence_score(HYP_A[0], [REFS[0]])
    assert s["bleu_sent"]["signature"] == str(sent_bleu.get_signature()) + "|avg:sentence"
    for name, metric in (("bleu", BLEU()), ("chrf++", CHRF(word_order=2))):
        metric.corpus_score(HYP_A, [REFS])
        assert s[name]["signature"] == str(metric.get_signature())
    # sentence BLEU: a bootstrap of the mean (seed 0, 1000 resamples), by numpy
    idx = np.random.default_rng(0).integers(0, len(sent), size=(1000, len(sent)))
    means = np.asarray(sent)[idx].mean(axis=1)
    assert s["bleu_sent"]["ci"] == pytest.approx((np.percentile(means, 2.5), np.percentile(means, 97.5)))
    # corpus metrics: sacrebleu re-scored on 1000 resampled sentence sets (seed 12345)
    idx = np.random.default_rng(12345).integers(0, len(REFS), size=(1000, len(REFS)))
    for name, make in (("bleu", BLEU), ("chrf++", lambda: CHRF(word_order=2))):
        assert s[name]["value"] == pytest.approx(make().corpus_score(HYP_A, [REFS]).score)
        m = make()
        scores = [m.corpus_score([HYP_A[i] for i in ix], [[REFS[i] for i in ix]]).score
                  for ix in idx]
        lo, hi = s[name]["ci"]
        assert lo <= s[name]["value"] <= hi
        assert (lo, hi) == pytest.approx((np.percentile(scores, 2.5), np.percentile(scores, 97.5)))
    two = score(HYP_A[:2], REFS[:2])                       # two sentences: an interval
    idx = np.random.default_rng(12345).integers(0, 2, size=(1000, 2))
    scores = [BLEU().corpus_score([HYP_A[i] for i in ix], [[REFS[i] for i in ix]]).score for ix in idx]
    assert two["bleu"]["ci"] == pytest.approx((np.percentile(scores, 2.5), np.percentile(scores, 97.5)))
    assert two["chrf++"]["ci"] is not None
    one = score(["a cat"], ["a cat sat"])
    assert one["bleu"]["ci"] is None and one["chrf++"]["ci"] is None
    assert one["bleu_sent"]["ci"] == pytest.approx((one["bleu_sent"]["value"],) * 2)


def test_translation_run_rows_by_hand(monkeypatch):
    from sacrebleu.metrics import BLEU, CHRF

    from lape_hub.evaluation import translation
    from lape_hub.evaluation.generation import GenerationSettings
    from lape_hub.evaluation.tasks import TaskSkipped

    calls = []
    # the "model" answers with the line's last word, padded with spaces
    monkeypatch.setattr(translation, "generate",
                        _fake_generate(calls, lambda p: "  " + p.split("\n")[1].split()[-1] + " \n"))
    settings = GenerationSettings(max_new_tokens=7, batch_size=2)
    ctx = _ctx("fra_Latn", limit=4, generation=settings)
    rows = translation.run(ctx)
    fra, eng = _tsv(DATA / "fra_Latn" / "test.tsv"), _tsv(DATA / "eng_Latn" / "test.tsv")
    ids = sorted(set(fra) & set(eng))[:4]
    assert [len(p) for p, _ in calls] == [4, 4] and all(s is settings for _, s in calls)
    assert calls[0][0][0] == (f"Translate the following sentence from French to English.\n"
                              f"French: {fra[ids[0]][1]}\nEnglish:")
    assert calls[1][0][0].startswith("Translate the following sentence from English to French.\n"
                                      f"English: {eng[ids[0]][1]}\nFrench:")
    assert [(r.direction, r.metric) for r in rows] == [
        (d, m) for d in ("fra_Latn->eng_Latn", "eng_Latn->fra_Latn")
        for m in ("bleu_sent", "bleu", "chrf++")]
    for r in rows:
        src, tgt = (fra, eng) if r.direction.startswith("fra") else (eng, fra)
        hyps = [src[i][1].split()[-1] for i in ids]
        refs = [tgt[i][1] for i in ids]
        assert r.items == {"ids": ids, "hyp": hyps, "ref": refs}
        want = {"bleu": BLEU().corpus_score(hyps, [refs]).score,
                "chrf++": CHRF(word_order=2).corpus_score(hyps, [refs]).score,
                "bleu_sent": np.mean([BLEU(effective_order=True).sentence_score(h, [x]).score
                                      for h, x in zip(hyps, refs)])}[r.metric]
        assert r.value == pytest.approx(want)
        assert (r.task, r.n, r.split, r.dataset) == ("translation", 4, "test", "Davlan/sib200")
        assert r.dataset_config == r.direction.replace("->", "-")
        assert r.prompt_hash == translation.PROMPT_HASH
        assert r.generation == settings.to_dict() and r.generation["max_new_tokens"] == 7
        assert r.metric_signature.startswith("nrefs:1") and r.ci[0] <= r.value <= r.ci[1]
        assert (r.seconds, r.tokens_per_s) == (2.0, 20.0)
    ctx = _ctx("mlt_Latn", split="dev", directions="from-en")
    rows = translation.run(ctx)
    assert {r.direction for r in rows} == {"eng_Latn->mlt_Latn"} and rows[0].split == "dev"
    assert rows[0].n == len(set(_tsv(DATA / "mlt_Latn" / "dev.tsv")) & set(_tsv(DATA / "eng_Latn" / "dev.tsv")))
    with pytest.raises(TaskSkipped, match="translation needs a language other than eng_Latn"):
        translation.run(_ctx("eng_Latn"))


# ------------------------------------------------------------------------------ topic
def test_parse_topic_takes_the_first_named_topic():
    from lape_hub.evaluation.topic import parse_topic

    assert parse_topic("  HEALTH and travel") == "health"
    assert parse_topic("travel, or maybe health") == "travel"
    assert parse_topic("It is about geography; not politics") == "geography"
    assert parse_topic("technology") == "science/technology"
    assert parse_topic("science/technology") == "science/technology"
    assert parse_topic("the entertainment of sports fans") == "entertainment"
    assert parse_topic("sportsmanship and healthy travels") is None     # whole words only
    assert parse_topic("") is None


def test_topic_loglik_predictions_pair_every_text_with_every_topic(monkeypatch):
    from lape_hub.evaluation import topic

    seen = {}

    def fake(model, tokenizer, pairs, batch_size):
        seen["pairs"], seen["batch_size"] = list(pairs), batch_size
        # text i prefers topic (i + 2) mod 7; text 3 ties travel/politics (the first wins)
        out = []
        for ctx, cont in pairs:
            i = int(ctx.split("Sentence: t")[1].split("\n")[0])
            j = topic.TOPICS.index(cont[1:])
            out.append(1.0 if (i < 3 and j == (i + 2) % 7) or (i == 3 and j in (1, 2)) else -j)
        return out

    monkeypatch.setattr(topic, "sequence_logprobs", fake)
    preds = topic.loglik_predictions(_ctx("eng_Latn", batch_size=5), ["t0", "t1", "t2", "t3"])
    assert preds == ["politics", "sports", "health", "travel"]
    assert seen["batch_size"] == 5 and len(seen["pairs"]) == 4 * 7
    assert seen["pairs"][8] == (
        "Classify the topic of the following sentence as one of: science/technology, travel, "
        "politics, sports, health, entertainment, geography.\nSentence: t1\nTopic:", " travel")


def test_topic_run_accuracies_counted_by_hand(monkeypatch):
    from lape_hub.evaluation import topic
    from lape_hub.evaluation.generation import GenerationSettings

    gold = {i: c for i, (c, _) in _tsv(DATA / "eng_Latn" / "test.tsv").items()}
    ids = sorted(gold)[:5]
    text_to_id = {t: i for i, (_, t) in _tsv(DATA / "eng_Latn" / "test.tsv").items()}
    gen_answers = {ids[0]: f" {gold[ids[0]].title()}.\nmore", ids[1]: " no idea",
                   ids[2]: " geography" if gold[ids[2]] != "geography" else " travel",
                   ids[3]: f"{gold[ids[3]]}", ids[4]: " science"}
    # gen: right on 0 and 3 (and on 4 when its gold is science/technology)
    want_gen = [1.0, 0.0, 0.0, 1.0, float(gold[ids[4]] == "science/technology")]

    def text_of(prompt):
        return prompt.split("Sentence: ")[1].split("\nTopic:")[0]

    calls = []
    monkeypatch.setattr(topic, "generate",
                        _fake_generate(calls, lambda p: gen_answers[text_to_id[text_of(p)]]))
    ll_answer = {ids[0]: "travel", ids[1]: gold[ids[1]], ids[2]: gold[ids[2]], ids[3]: "health",
                 ids[4]: gold[ids[4]]}
    want_ll = [float(gold[ids[0]] == "travel"), 1.0, 1.0, float(gold[ids[3]] == "health"), 1.0]
    monkeypatch.setattr(topic, "sequence_logprobs", lambda m, t, pairs, batch_size: [
        0.0 if ll_answer[text_to_id[text_of(c)]] == o.strip() else -1.0 for c, o in pairs])
    settings = GenerationSettings(max_new_tokens=99, batch_size=3)
    rows = topic.run(_ctx("eng_Latn", limit=5, generation=settings))
    assert [len(p) for p, _ in calls] == [5]
    assert calls[0][1].max_new_tokens == 16 and calls[0][1].batch_size == 3
    gen, ll = rows
    for r, want, metric in ((gen, want_gen, "acc_gen"), (ll, want_ll, "acc_ll")):
        assert r.metric == metric and r.task == "topic" and r.direction == "eng_Latn"
        assert r.value == pytest.approx(100 * sum(want) / 5) and r.n == 5
        assert r.items["ids"] == ids and r.items["correct"] == want
        means = np.asarray(want)[np.random.default_rng(0).integers(0, 5, size=(1000, 5))].mean(axis=1)
        assert r.ci == pytest.approx((100 * np.percentile(means, 2.5), 100 * np.percentile(means, 97.5)))
        assert (r.split, r.dataset, r.dataset_config) == ("test", "Davlan/sib200", "eng_Latn")
        assert r.prompt_hash == topic.PROMPT_HASH
    assert gen.items["pred"][:2] == [gold[ids[0]], ""]
    assert gen.metric_signature == "acc|topics:7|parse:first-topic"
    assert ll.metric_signature == "acc|topics:7|ll:sum"
    assert gen.generation == {**settings.to_dict(), "max_new_tokens": 16}
    assert (gen.seconds, gen.tokens_per_s) == (2.0, 25.0)
    assert ll.generation is None and ll.seconds == 0.0 and ll.tokens_per_s is None
    assert ll.items["pred"] == [ll_answer[i] for i in ids]
    rows = topic.run(_ctx("eng_Latn", limit=5, generation=GenerationSettings(max_new_tokens=3)))
    assert calls[-1][1].max_new_tokens == 3


# ------------------------------------------------------------------------------ perplexity
def test_perplexity_languages_and_rows(monkeypatch):
    from _tiny_models import tiny_tokenizer

    from lape_hub import verify
    from lape_hub.corpus import tokenize_and_pack
    from lape_hub.errors import LapeHubError
    from lape_hub.evaluation import perplexity
    from lape_hub.evaluation.tasks import EvalContext, TaskSkipped

    tok = tiny_tokenizer()
    ctx = EvalContext(object(), tok, "mlt_Latn", data_dir=DATA, batch_size=9, limit=3,
                      perplexity_langs=["fra_Latn", "eng_Latn", "xho_Latn", "mlt_Latn"])
    assert perplexity.languages(ctx) == ["mlt_Latn", "eng_Latn", "fra_Latn", "xho_Latn"]
    seen = []

    def fake_ppl(model, packed, *, batch_size):
        seen.append((model, int(packed.attention_mask.sum()), batch_size))
        return 10.0 + len(seen)

    monkeypatch.setattr(verify, "perplexity", fake_ppl)
    rows = perplexity.run(ctx)
    assert [r.direction for r in rows] == ["mlt_Latn", "eng_Latn", "fra_Latn"]
    assert ctx.notes == [f"perplexity: skipped no {DATA / 'xho_Latn' / 'test.tsv'}"]
    for k, r in enumerate(rows):
        texts = [t for _, (_, t) in sorted(_tsv(DATA / r.direction / "test.tsv").items())][:3]
        tokens = int(tokenize_and_pack(texts, tok, 512, min_tokens=2).attention_mask.sum())
        assert seen[k] == (ctx.model, tokens, 2)            # batch size 9 // 4
        assert r.value == 11.0 + k and r.items == {"nll": pytest.approx(math.log(11.0 + k)),
                                                    "tokens": tokens}
        assert r.metric_signature == f"ppl|seq:512|packed|bos:doc|tokens:{tokens}"
        assert (r.task, r.metric, r.n, r.split, r.dataset, r.dataset_config) == (
            "perplexity", "ppl", 3, "test", "Davlan/sib200", r.direction)
        assert r.seconds >= 0
    ctx = EvalContext(object(), tok, "mlt_Latn", data_dir=DATA, batch_size=2)
    perplexity.run(ctx)
    assert seen[-1][2] == 1 and ctx.notes == []             # at least 1; nothing skipped
    # text too short to pack: skipped with the corpus' reason, the others still run
    short = DATA.parent / "short"
    ctx = EvalContext(object(), tok, "xho_Latn", data_dir=DATA, english="fra_Latn")
    with pytest.raises(TaskSkipped, match=r"^perplexity: no .*xho_Latn.*; no .*fra_Latn"):
        perplexity.run(EvalContext(object(), tok, "xho_Latn", data_dir=DATA, split="nope",
                                   english="fra_Latn"))
    rows = perplexity.run(ctx)
    assert [r.direction for r in rows] == ["fra_Latn"] and len(ctx.notes) == 1
    assert not short.exists()


def test_perplexity_skips_text_too_short_to_pack(monkeypatch, tmp_path):
    from _tiny_models import tiny_tokenizer

    from lape_hub import verify
    from lape_hub.evaluation import perplexity
    from lape_hub.evaluation.tasks import EvalContext, TaskSkipped

    monkeypatch.setattr(verify, "perplexity", lambda model, packed, *, batch_size: 5.0)
    for lang, text in (("mlt_Latn", ""), ("eng_Latn", "a few words of English here")):
        (tmp_path / lang).mkdir()
        (tmp_path / lang / "test.tsv").write_text(f"index_id\tcategory\ttext\n1\thealth\t{text}\n")
    ctx = EvalContext(object(), tiny_tokenizer(), "mlt_Latn", data_dir=tmp_path)
    rows = perplexity.run(ctx)
    assert [r.direction for r in rows] == ["eng_Latn"]
    assert len(ctx.notes) == 1 and ctx.notes[0].startswith("perplexity: skipped ")
    assert "mlt_Latn" in ctx.notes[0]
    (tmp_path / "eng_Latn" / "test.tsv").write_text("index_id\tcategory\ttext\n1\thealth\t\n")
    with pytest.raises(TaskSkipped, match="^perplexity: .*mlt_Latn.*; .*eng_Latn"):
        perplexity.run(EvalContext(object(), tiny_tokenizer(), "mlt_Latn", data_dir=tmp_path))


# ------------------------------------------------------------------------------ tasks
def test_template_hash_data_dir_and_context_defaults(monkeypatch, tmp_path):
    import hashlib

    from lape_hub.evaluation.generation import GenerationSettings
    from lape_hub.evaluation.tasks import EvalContext, default_data_dir, template_hash
    from lape_hub.paths import ROOT

    assert template_hash("Topic: {text}") == "p:" + hashlib.sha256(b"Topic: {text}").hexdigest()[:8]
    assert template_hash("\u00e9") == "p:" + hashlib.sha256("\u00e9".encode("utf-8")).hexdigest()[:8]
    monkeypatch.setenv("LAPE_HUB_EVAL_DATA", str(tmp_path / "d"))
    assert default_data_dir() == tmp_path / "d"
    ctx = EvalContext(object(), object(), "mlt_Latn")
    assert ctx.data_dir == tmp_path / "d"
    monkeypatch.setenv("LAPE_HUB_EVAL_DATA", "")
    assert default_data_dir() == ROOT.parent / "shared" / "data" / "sib200"
    monkeypatch.delenv("LAPE_HUB_EVAL_DATA")
    assert default_data_dir() == ROOT.parent / "shared" / "data" / "sib200"
    ctx = EvalContext(object(), object(), "mlt_Latn", data_dir=str(tmp_path))
    assert isinstance(ctx.data_dir, Path) and ctx.data_dir == tmp_path
    assert ctx.generation == GenerationSettings() and ctx.notes == [] and ctx.split == "test"
    assert (ctx.batch_size, ctx.english, ctx.directions, ctx.limit) == (8, "eng_Latn", "both", None)
    mine = GenerationSettings(max_new_tokens=3)
    assert EvalContext(object(), object(), "x", generation=mine).generation is mine
    assert EvalContext(object(), object(), "x").notes is not EvalContext(object(), object(), "x").notes


def test_read_split_sorted_stripped_and_refusals(tmp_path):
    from lape_hub.evaluation.tasks import Example, TaskSkipped, parallel_examples, read_split

    (tmp_path / "aaa_Latn").mkdir()
    f = tmp_path / "aaa_Latn" / "dev.tsv"
    f.write_text('index_id\tcategory\ttext\n7\t health \t  "quoted" text  \n2\ttravel\tb\n'
                 '10\tsports\t"Yes," he said.\n', encoding="utf-8")
    # quotes are text (FLORES sentences start with them), never CSV quoting
    assert read_split(tmp_path, "aaa_Latn", "dev") == [
        Example(2, "travel", "b"), Example(7, "health", '"quoted" text'),
        Example(10, "sports", '"Yes," he said.')]
    for bad in ("index_id\tcategory\ttext\nx\thealth\tt\n", "index_id\ttext\n1\tt\n",
                "id\tcategory\ttext\n1\thealth\tt\n", "index_id\tcategory\ttext\n1\thealth\n"):
        f.write_text(bad, encoding="utf-8")
        with pytest.raises(TaskSkipped, match=r"aaa_Latn/dev\.tsv: needs columns index_id, category, text"):
            read_split(tmp_path, "aaa_Latn", "dev")
    with pytest.raises(TaskSkipped, match=r"^no .*aaa_Latn/test\.tsv$"):
        read_split(tmp_path, "aaa_Latn", "test")
    (tmp_path / "aaa_Latn" / "test.tsv").mkdir()                   # a folder is not the file
    with pytest.raises(TaskSkipped, match="^no "):
        read_split(tmp_path, "aaa_Latn", "test")
    # parallel: by id, first `limit` shared ids; none shared is a skip naming both
    f.write_text("index_id\tcategory\ttext\n3\ta\tx3\n1\ta\tx1\n5\ta\tx5\n", encoding="utf-8")
    (tmp_path / "bbb_Latn").mkdir()
    g = tmp_path / "bbb_Latn" / "dev.tsv"
    g.write_text("index_id\tcategory\ttext\n5\ta\ty5\n1\ta\ty1\n4\ta\ty4\n", encoding="utf-8")
    pairs = parallel_examples(tmp_path, "aaa_Latn", "bbb_Latn", "dev")
    assert [(a.text, b.text) for a, b in pairs] == [("x1", "y1"), ("x5", "y5")]
    assert [(a.text, b.text) for a, b in parallel_examples(tmp_path, "aaa_Latn", "bbb_Latn", "dev",
                                                           limit=1)] == [("x1", "y1")]
    g.write_text("index_id\tcategory\ttext\n9\ta\ty9\n", encoding="utf-8")
    with pytest.raises(TaskSkipped, match=r"aaa_Latn and bbb_Latn share no sentence ids in .* \(dev\)"):
        parallel_examples(tmp_path, "aaa_Latn", "bbb_Latn", "dev")


def test_hub_unreachable_and_language_name(monkeypatch):
    import socket

    from lape_hub.evaluation import tasks

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
        for value in ("1", "TRUE", "yes", "On"):
            monkeypatch.setenv(var, value)
            assert tasks.hub_unreachable() == f"{var} is set"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    asked = []

    def no_dns(host, port):
        asked.append((host, port))
        raise socket.gaierror("no")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    assert tasks.hub_unreachable() == "no network (gaierror)"
    assert asked == [("huggingface.co", 443)]
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port: [])
    assert tasks.hub_unreachable() is None
    assert tasks.language_name("mlt_Latn") == "Maltese"
    assert tasks.language_name("qqq_Zzzz") == "qqq_Zzzz"


def test_bootstrap_interval_matches_numpy():
    from lape_hub.evaluation.tasks import bootstrap_interval

    v = list(np.random.default_rng(1).normal(size=30))      # distinct means: no ties at the cut

    def by_numpy(n, seed, level):
        idx = np.random.default_rng(seed).integers(0, len(v), size=(n, len(v)))
        means = np.array([np.mean([v[i] for i in ix]) for ix in idx])
        return np.percentile(means, 50 * (1 - level)), np.percentile(means, 100 - 50 * (1 - level))

    assert bootstrap_interval(v) == pytest.approx(by_numpy(1000, 0, 0.95))
    assert bootstrap_interval(v, n=50, seed=4, level=0.8) == pytest.approx(by_numpy(50, 4, 0.8))
    lo, hi = bootstrap_interval(v, level=0.5)
    assert (lo, hi) == pytest.approx(by_numpy(1000, 0, 0.5)) and lo < np.mean(v) < hi
    assert all(math.isnan(x) for x in bootstrap_interval([]))


def test_sequence_logprobs_refuses_an_empty_continuation():
    from _tiny_models import tiny_model, tiny_tokenizer

    from lape_hub.errors import LapeHubError
    from lape_hub.evaluation.tasks import sequence_logprobs

    with pytest.raises(LapeHubError, match="empty continuation ''"):
        sequence_logprobs(tiny_model("llama", seed=1), tiny_tokenizer(), [("a", " b"), ("a", "")])


# ------------------------------------------------------------------------------ evaluator
def _system(**kw):
    from lape_hub.evaluation.evaluator import System

    return System(model=object(), tokenizer=object(), name="tiny", revision="rev1", **kw)


def _result(**kw):
    from lape_hub.evaluation.tasks import Result

    base = dict(task="topic", direction="mlt_Latn", metric="acc_ll", value=37, n=8, split="dev",
                dataset="Davlan/sib200")
    return Result(**{**base, **kw})


def test_result_row_by_hand():
    from lape_hub import __version__
    from lape_hub.evaluation.evaluator import result_row
    from lape_hub.signature import signature

    sysm = _system(run_id="abc", method="lora", adapter_signature="sig", device="cuda",
                   dtype="bfloat16")
    when = datetime(2026, 1, 2, tzinfo=timezone.utc)
    r = _result(dataset_config="mlt_Latn", prompt_hash="p:12345678", ci=(1.5, 2.5),
                generation={"b": 1, "a": "é"}, metric_signature="acc|x", seconds=3,
                tokens_per_s=4.5, items={"ids": [1], "pred": ["é"]})
    row = result_row(sysm, "mlt_Latn", r, params={"z": 1, "a": 2}, created_at=when)
    assert row == {
        "model": "tiny", "run_id": "abc", "lang": "mlt_Latn", "task": "topic",
        "direction": "mlt_Latn", "metric": "acc_ll", "split": "dev", "method": "lora",
        "revision": "rev1", "adapter_signature": "sig", "value": 37.0, "ci_low": 1.5,
        "ci_high": 2.5, "n_examples": 8, "dataset": "Davlan/sib200", "dataset_config": "mlt_Latn",
        "prompt_hash": "p:12345678", "generation": '{"a": "\\u00e9", "b": 1}',
        "metric_signature": "acc|x",
        "signature": signature("tiny", "rev1", lang="mlt_Latn", task="topic", dir="mlt_Latn",
                               split="dev", n=8, prompt="p:12345678", adapter="abc"),
        "seconds": 3.0, "tokens_per_s": 4.5, "items": '{"ids": [1], "pred": ["é"]}',
        "lape_hub_version": __version__, "created_at": when, "params": '{"a": 2, "z": 1}'}
    assert isinstance(row["value"], float) and isinstance(row["seconds"], float)
    bare = result_row(_system(), "eng_Latn", _result(), params={})
    assert (bare["ci_low"], bare["ci_high"], bare["generation"], bare["items"]) == (None,) * 4
    assert "prompt:-" in bare["signature"] and "adapter:base" in bare["signature"]
    assert bare["created_at"].tzinfo is not None
    assert abs((bare["created_at"] - datetime.now(timezone.utc)).total_seconds()) < 60
    assert result_row(_system(), "x", _result(items={}), params={})["items"] == "{}"


@pytest.fixture
def fake_tasks(monkeypatch):
    """Two tasks in fake modules: `good` returns rows, `gone` is skipped; both record ctx."""
    import sys
    import types

    from lape_hub.evaluation import evaluator
    from lape_hub.evaluation.tasks import TaskSkipped

    seen = []

    def good_run(ctx):
        seen.append(ctx)
        ctx.notes.append(f"note from {ctx.lang}")
        return [_result(task="good", direction=ctx.lang, split=ctx.split, metric=m, value=v)
                for m, v in (("m1", 1.0), ("m2", 2.0))]

    def gone_run(ctx):
        seen.append(ctx)
        raise TaskSkipped("no data here")

    for name, fn in (("good", good_run), ("gone", gone_run)):
        mod = types.ModuleType(f"_fake_task_{name}")
        mod.run = fn
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
        monkeypatch.setitem(evaluator.TASKS, name, mod.__name__)
    return seen


def test_evaluate_runs_skips_logs_and_records(fake_tasks, tmp_path):
    from lape_hub.evaluation.evaluator import evaluate
    from lape_hub.evaluation.generation import GenerationSettings
    from lape_hub.evaluation.results import read_evals

    lines = []
    gen = GenerationSettings(max_new_tokens=5)
    run = evaluate(_system(device="cpu", dtype="float32", source="src"), "mt", ["gone", "good"],
                   split="dev", limit=3, data_dir=tmp_path / "data", generation=gen, batch_size=5,
                   perplexity_langs=["fr", "eng_Latn"], general_tasks=("arc",),
                   general_include=str(tmp_path / "inc"), directions="to-en",
                   catalog=tmp_path / "cat", log=lines.append)
    ctx = fake_tasks[0]
    assert fake_tasks[1] is ctx and len(fake_tasks) == 2     # one context for every task
    assert (ctx.lang, ctx.split, ctx.limit, ctx.batch_size, ctx.directions) == (
        "mlt_Latn", "dev", 3, 5, "to-en")
    assert ctx.data_dir == tmp_path / "data" and ctx.generation is gen
    assert ctx.perplexity_langs == ["fra_Latn", "eng_Latn"] and ctx.general_tasks == ["arc"]
    assert ctx.general_include == tmp_path / "inc" and ctx.belebele_dir == tmp_path / "belebele"
    assert run.skipped == {"gone": "no data here"}
    assert [(r["metric"], r["value"], r["lang"], r["split"]) for r in run.rows] == [
        ("m1", 1.0, "mlt_Latn", "dev"), ("m2", 2.0, "mlt_Latn", "dev")]
    assert json.loads(run.rows[0]["params"]) == {"device": "cpu", "dtype": "float32",
                                                 "batch_size": 5, "limit": 3,
                                                 "data": str(tmp_path / "data"), "source": "src"}
    assert run.notes == ["note from mlt_Latn"]
    assert lines[0] == "skipped gone: no data here"
    assert lines[1].startswith("good: 2 results in ") and lines[1].endswith(" s")
    assert lines[2:] == ["note from mlt_Latn"]
    assert len(run.paths) == 1 and run.paths[0].is_file()
    assert sorted(r["metric"] for r in read_evals(tmp_path / "cat")) == ["m1", "m2"]
    # not recorded, no log; a belebele folder given; nothing to record when all skip
    run = evaluate(_system(), "mlt_Latn", ["good"], data_dir=tmp_path / "d2", record=False,
                   belebele_dir=str(tmp_path / "bb"), catalog=tmp_path / "cat2")
    assert run.paths == [] and not (tmp_path / "cat2").exists() and len(run.rows) == 2
    assert fake_tasks[-1].belebele_dir == tmp_path / "bb" and fake_tasks[-1].general_include is None
    run = evaluate(_system(), "mlt_Latn", ["gone"], data_dir=tmp_path, catalog=tmp_path / "cat3")
    assert run.rows == [] and run.paths == [] and not (tmp_path / "cat3").exists()


def test_evaluate_refuses_bad_tasks_and_limits(fake_tasks, monkeypatch, tmp_path):
    from lape_hub.evaluation.evaluator import TASKS, evaluate

    with pytest.raises(Exception, match="^unknown task 'nope'; use " + ", ".join(TASKS) + "$"):
        evaluate(_system(), "mlt_Latn", ["good", "nope", "other"], data_dir=tmp_path)
    with pytest.raises(Exception, match="^--limit must be >= 1$"):
        evaluate(_system(), "mlt_Latn", ["good"], limit=0, data_dir=tmp_path)
    assert fake_tasks == []
    run = evaluate(_system(), "mlt_Latn", ["good"], limit=1, record=False, data_dir=tmp_path)
    assert len(run.rows) == 2
    monkeypatch.setenv("LAPE_HUB_EVAL_DATA", str(tmp_path / "env"))
    evaluate(_system(), "mlt_Latn", ["good"], record=False)
    assert fake_tasks[-1].data_dir == tmp_path / "env"
    assert fake_tasks[-1].belebele_dir == tmp_path / "belebele"


def test_suite_plan_done_tasks_and_resume(fake_tasks, tmp_path):
    from lape_hub.evaluation import evaluator
    from lape_hub.evaluation.evaluator import done_tasks, evaluate_suite, suite_plan

    assert suite_plan("mt", ["translation", "topic", "general", "perplexity"]) == [
        ("mlt_Latn", ["translation", "topic", "general", "perplexity"]),
        ("eng_Latn", ["topic", "general"])]
    assert suite_plan("mt", ["translation", "perplexity"]) == [("mlt_Latn", ["translation", "perplexity"])]
    assert suite_plan("en", ["topic"]) == [("eng_Latn", ["topic"])]
    assert suite_plan("mt", ["belebele"], control_langs=("fr", "mt", "en")) == [
        ("mlt_Latn", ["belebele"]), ("fra_Latn", ["belebele"]), ("eng_Latn", ["belebele"])]

    cat = tmp_path / "cat"
    assert done_tasks("tiny", "base", "mlt_Latn", split="test", limit=None, catalog=cat) == set()
    evaluator.CONTROL_TASKS, old = ("good", "gone"), evaluator.CONTROL_TASKS
    try:
        lines = []
        runs = evaluate_suite(_system(), "mlt_Latn", ["good", "gone"], limit=2, split="dev",
                              catalog=cat, data_dir=tmp_path, log=lines.append)
        assert [r.rows[0]["lang"] for r in runs] == ["mlt_Latn", "eng_Latn"]
        assert [c.lang for c in fake_tasks] == ["mlt_Latn"] * 2 + ["eng_Latn"] * 2
        assert all(c.limit == 2 and c.split == "dev" for c in fake_tasks)
        assert done_tasks("tiny", "base", "mlt_Latn", split="dev", limit=2, catalog=cat) == {"good"}
        assert done_tasks("tiny", "base", "mlt_Latn", split="dev", limit=3, catalog=cat) == set()
        assert done_tasks("tiny", "base", "mlt_Latn", split="test", limit=2, catalog=cat) == set()
        assert done_tasks("tiny", "other", "mlt_Latn", split="dev", limit=2, catalog=cat) == set()
        assert done_tasks("tiny", "base", "eng_Latn", split="dev", limit=2, catalog=cat) == {"good"}
        n = len(fake_tasks)
        lines.clear()
        runs = evaluate_suite(_system(), "mlt_Latn", ["good", "gone"], limit=2, split="dev",
                              catalog=cat, data_dir=tmp_path, log=lines.append, resume=True)
        assert [c.lang for c in fake_tasks[n:]] == ["mlt_Latn", "eng_Latn"]   # only `gone` again
        assert all(r.rows == [] and r.skipped == {"gone": "no data here"} for r in runs)
        assert "mlt_Latn: already evaluated: good" in lines
        assert "eng_Latn: already evaluated: good" in lines
        # resume without recording redoes everything; resume of a finished list runs nothing
        n = len(fake_tasks)
        evaluate_suite(_system(), "mlt_Latn", ["good"], limit=2, split="dev", catalog=cat,
                       data_dir=tmp_path, resume=True, record=False)
        assert [c.lang for c in fake_tasks[n:]] == ["mlt_Latn", "eng_Latn"]
        n = len(fake_tasks)
        lines.clear()
        assert evaluate_suite(_system(), "mlt_Latn", ["good"], limit=2, split="dev", catalog=cat,
                              data_dir=tmp_path, resume=True, log=lines.append) == []
        assert len(fake_tasks) == n and len(lines) == 2
        # a row whose params are not JSON does not count as done
        from lape_hub.evaluation.results import read_evals, record_evals

        rows = read_evals(cat, items=True, lang="mlt_Latn")
        for r in rows:
            r["params"] = "not json"
            r["items"] = json.dumps(r["items"]) if r["items"] is not None else None
        record_evals(rows, cat)
        assert done_tasks("tiny", "base", "mlt_Latn", split="dev", limit=2, catalog=cat) == set()
    finally:
        evaluator.CONTROL_TASKS = old


def test_check_adapter_base_refusals(tmp_path):
    from lape_hub.errors import AdapterMismatchError
    from lape_hub.evaluation.evaluator import check_adapter_base, load_system
    from lape_hub.sparse_adapter import AdapterConfig

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    cfg = AdapterConfig(model="gemma-3-270m", lang="mlt_Latn", method="lape-sparse",
                        model_type="gemma3_text", n_layers=2, d_model=64, d_ffn=128)
    (adapter / "lape_adapter.json").write_text(json.dumps(cfg.to_dict()))
    model = tmp_path / "model"
    model.mkdir()

    def config(**c):
        (model / "config.json").write_text(json.dumps(c))

    config(model_type="gemma3", num_hidden_layers=2, hidden_size=64, intermediate_size=128)
    assert check_adapter_base(adapter, str(model)) == cfg
    config(text_config={"model_type": "gemma3_text", "num_hidden_layers": 2, "hidden_size": 64,
                        "intermediate_size": 128}, model_type="gemma3")
    assert check_adapter_base(adapter, str(model)) == cfg
    config(model_type="llama", num_hidden_layers=2, hidden_size=64, intermediate_size=128)
    with pytest.raises(AdapterMismatchError, match=r"^adapter was made for gemma-3-270m \(a gemma3_text "
                       r"model\), not .*model \(a llama model\)$"):
        check_adapter_base(adapter, str(model))
    config(model_type="gemma3", num_hidden_layers=3, hidden_size=64, intermediate_size=128)
    with pytest.raises(AdapterMismatchError, match=r"^adapter was made for gemma-3-270m \(2 layers, "
                       r"d_model 64, d_ffn 128\); .*model has 3 layers, d_model 64, d_ffn 128$"):
        check_adapter_base(adapter, str(model))
    for key in ("hidden_size", "intermediate_size"):
        c = dict(model_type="gemma3", num_hidden_layers=2, hidden_size=64, intermediate_size=128)
        c[key] += 1
        config(**c)
        with pytest.raises(AdapterMismatchError):
            check_adapter_base(adapter, str(model))
        del c[key]                                  # a size the config does not state: no check
        config(**c)
    # the sizes of a multimodal config's text_config are the ones compared
    config(model_type="gemma3", text_config={"num_hidden_layers": 3, "hidden_size": 64,
                                             "intermediate_size": 128})
    with pytest.raises(AdapterMismatchError, match="has 3 layers"):
        check_adapter_base(adapter, str(model))
        assert check_adapter_base(adapter, str(model)) == cfg
    config(num_hidden_layers=2, hidden_size=64, intermediate_size=128)   # no model_type: sizes only
    assert check_adapter_base(adapter, str(model)) == cfg
    (model / "config.json").write_text("{not json")
    with pytest.raises(AdapterMismatchError, match=r"model/config\.json is not valid JSON$"):
        check_adapter_base(adapter, str(model))
    assert check_adapter_base(adapter, "gemma-3-270m") == cfg
    assert check_adapter_base(adapter, " GEMMA-3-270M ") == cfg
    with pytest.raises(AdapterMismatchError, match="^adapter was made for gemma-3-270m, not qwen3-0.6b$"):
        check_adapter_base(adapter, "qwen3-0.6b")
    with pytest.raises(Exception, match="^give --adapter or --merged, not both$"):
        load_system(str(model), adapter=adapter, merged=adapter)
    with pytest.raises(Exception, match=r"^.*adapter is not a model folder \(no config\.json\)$"):
        load_system(str(model), merged=adapter)


def test_adapter_eval_rows_other_models_unreadable_tables_and_catalog_lookup(tmp_path, monkeypatch):
    from lape_hub.catalog import Catalog
    from lape_hub.errors import LapeHubError
    from lape_hub.evaluation import results

    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"x")
    cat = Catalog(tmp_path / "cat")
    other = [{**r, "model": "other-model"} for r in
             _eval_rows("run1", HYP_A, [1] * 8) + _eval_rows("run1", HYP_A, [1] * 8, lang="eng_Latn")]
    results.record_evals(_eval_rows("run1", HYP_A, [1] * 8)
                         + _eval_rows("run1", HYP_A, [1] * 8, lang="eng_Latn") + other, cat)
    _, rows = results.adapter_eval_rows(folder, "tiny", "mlt_Latn", cat)
    assert len(rows) == 5 + 3 and {r["model"] for r in rows} == {"tiny"}
    # the run id is looked up in the catalog given
    asked = []
    monkeypatch.setattr(results, "adapter_run_id", lambda f, c=None: asked.append(c) or "rid")
    assert results.adapter_eval_rows(folder, "tiny", "mlt_Latn", cat)[0] == "rid"
    assert asked == [cat]
    # an evals table that cannot be read: no rows (a list), no English rows either

    def unreadable(*a, **k):
        raise LapeHubError("damaged")

    monkeypatch.setattr(results, "read_evals", unreadable)
    assert results.adapter_eval_rows(folder, "tiny", "mlt_Latn", cat) == ("rid", [])
    calls = []
    # reading the English rows fails: the target language's rows stay

    def english_fails(catalog, **where):
        calls.append(where)
        if where["lang"] == "eng_Latn":
            raise LapeHubError("damaged")
        return [{"run_id": "base", "task": "topic", "lang": where["lang"]}]

    monkeypatch.setattr(results, "read_evals", english_fails)
    assert results.adapter_eval_rows(folder, "tiny", "mlt_Latn", cat) == (
        "rid", [{"run_id": "base", "task": "topic", "lang": "mlt_Latn"}])
    assert calls == [{"model": "tiny", "lang": "mlt_Latn"}, {"model": "tiny", "lang": "eng_Latn"}]


def test_adapter_run_id_when_the_adapters_table_cannot_be_read(tmp_path):
    from lape_hub.digest import artifact_sha256
    from lape_hub.errors import LapeHubError
    from lape_hub.evaluation.results import adapter_run_id

    folder, digest, _, _, _ = _adapter_setup(tmp_path)

    class Damaged:
        def read(self, *a, **k):
            raise LapeHubError("damaged")

    assert adapter_run_id(folder, Damaged()) == digest[:12] == artifact_sha256(folder)[:12]


def test_perplexity_two_token_text_timing_and_earlier_notes(monkeypatch, tmp_path):
    import itertools

    from _tiny_models import tiny_tokenizer

    from lape_hub import verify
    from lape_hub.evaluation import perplexity
    from lape_hub.evaluation.tasks import EvalContext

    monkeypatch.setattr(verify, "perplexity", lambda model, packed, *, batch_size: 5.0)
    clock = itertools.count(100.0, 2.5)                     # each reading 2.5 s later
    monkeypatch.setattr(perplexity.time, "perf_counter", lambda: next(clock))
    (tmp_path / "mlt_Latn").mkdir()
    (tmp_path / "mlt_Latn" / "test.tsv").write_text("index_id\tcategory\ttext\n1\thealth\tx\n")
    ctx = EvalContext(object(), tiny_tokenizer(), "mlt_Latn", data_dir=tmp_path)
    ctx.notes.append("an earlier task's note")
    rows = perplexity.run(ctx)
    assert [r.direction for r in rows] == ["mlt_Latn"]      # "x": BOS + one token is enough
    assert rows[0].items["tokens"] == 2 and rows[0].seconds == 2.5
    assert ctx.notes[0] == "an earlier task's note" and len(ctx.notes) == 2


@pytest.mark.parametrize("own_head", [True, False])
def test_sequence_logprobs_with_a_bos_adding_tokenizer_and_shared_contexts(own_head, monkeypatch):
    """A tokenizer that adds BOS (as Gemma's): the continuation's tokens are its own, without
    BOS; options sharing a context score as the model says, also through the model's own
    logits (a head lm_loss does not know)."""
    import torch
    from tokenizers import processors

    from _tiny_models import tiny_model, tiny_tokenizer

    from lape_hub import lm_loss
    from lape_hub.evaluation.tasks import sequence_logprobs

    if not own_head:
        monkeypatch.setattr(lm_loss, "lm_head_of", lambda model: None)
    tok = tiny_tokenizer()
    bos = tok.convert_tokens_to_ids("<bos>")
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", bos)])
    assert tok("ab").input_ids[0] == bos and tok("ab", add_special_tokens=False).input_ids[0] != bos
    model = tiny_model("llama", seed=5)
    pairs = [("Topic:", " sports"), ("Topic:", " a"), ("Other:", " health"), ("Topic:", " travel")]
    got = sequence_logprobs(model, tok, pairs, batch_size=3)
    for (ctx, cont), value in zip(pairs, got):
        c = tok(ctx).input_ids
        t = tok(cont, add_special_tokens=False).input_ids
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([c + t])).logits[0].float(), -1)
        want = sum(float(logp[len(c) - 1 + k, t[k]]) for k in range(len(t)))
        assert value == pytest.approx(want, abs=1e-4), (ctx, cont)


def test_identity_of_aliases_folders_and_unknown_names(tmp_path):
    from lape_hub.builder import model_revision
    from lape_hub.evaluation.evaluator import _identity
    from lape_hub.registry import resolve_model

    spec = resolve_model("gemma-3-270m")
    assert _identity("gemma-3-270m") == (spec.alias, model_revision(spec))
    (tmp_path / "my-model").mkdir()
    assert _identity(str(tmp_path / "my-model")) == ("my-model", "local")
    assert _identity(str(tmp_path / "absent")) == (str(tmp_path / "absent"), "main")


def test_load_system_identity_without_loading_weights(tmp_path, monkeypatch):
    """load_model and apply_adapter replaced by spies: what load_system asks them for and the
    System it builds (no weights are loaded)."""
    from _tiny_models import tiny_tokenizer

    from lape_hub import models, sparse_adapter
    from lape_hub.builder import model_revision
    from lape_hub.digest import artifact_sha256
    from lape_hub.evaluation.evaluator import load_system
    from lape_hub.registry import resolve_model
    from lape_hub.sparse_adapter import AdapterConfig

    loads, applied = [], []
    monkeypatch.setattr(models, "load_model", lambda name, device, dtype: loads.append(
        (name, device, dtype)) or ("LM", tiny_tokenizer()))
    monkeypatch.setattr(sparse_adapter, "apply_adapter", lambda lm, folder, model_name: applied.append(
        (lm, folder, model_name)) or "LM+adapter")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    cfg = AdapterConfig(model="gemma-3-270m", lang="mlt_Latn", method="lora")
    (adapter / "lape_adapter.json").write_text(json.dumps(cfg.to_dict()))
    digest = artifact_sha256(adapter)

    class Cat:         # an adapters table that knows this folder's files
        def read(self, table, columns=None, **where):
            import pyarrow as pa

            return pa.Table.from_pylist([{"run_id": "fromcatalog", "artifact_sha256": digest,
                                          "signature": "s", "created_at": datetime.now(timezone.utc)}])

    spec = resolve_model("gemma-3-270m")
    s = load_system("gemma-3-270m", adapter=adapter, dtype="bfloat16", catalog=Cat())
    assert loads[-1] == ("gemma-3-270m", "cpu", "bfloat16")
    assert applied[-1] == ("LM", adapter, "gemma-3-270m")
    assert (s.model, s.name, s.revision, s.run_id, s.method, s.adapter_signature, s.source,
            s.dtype, s.device) == ("LM+adapter", spec.alias, model_revision(spec), "fromcatalog",
                                   "lora", cfg.signature, str(adapter), "bfloat16", "cpu")
    assert s.tokenizer.pad_token is not None
    # a local folder: the adapter gets no model name; no dtype: the device's preferred one
    local = tmp_path / "local-model"
    local.mkdir()
    s = load_system(str(local), device="cpu")
    assert loads[-1] == (str(local), "cpu", "float32") and s.model == "LM"
    assert (s.name, s.revision, s.run_id, s.method, s.adapter_signature, s.source, s.dtype) == (
        "local-model", "local", "base", "base", None, str(local), "float32")
    s = load_system(str(local), device="cuda:1", dtype="float32")     # nothing really loads
    assert loads[-1] == (str(local), "cuda:1", "float32") and s.device == "cuda:1"
    (local / "config.json").write_text("{}")
    s = load_system(str(local), adapter=adapter)
    assert applied[-1] == ("LM", adapter, None) and s.run_id == digest[:12]
    # a merged folder without adapter config: named after the folder
    merged = tmp_path / "merged-x"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    s = load_system("gemma-3-270m", merged=merged)
    assert loads[-1] == (str(merged), "cpu", "float32")
    assert (s.run_id, s.method, s.source, s.adapter_signature) == ("merged:merged-x", "merged",
                                                                   str(merged), None)
    # a merged folder with its adapter config: the adapter's identity, looked up in the catalog
    (merged / "lape_adapter.json").write_text(json.dumps(cfg.to_dict()))
    digest = artifact_sha256(merged)
    s = load_system("gemma-3-270m", merged=merged, catalog=Cat())
    assert (s.run_id, s.method, s.adapter_signature) == ("fromcatalog", "lora", cfg.signature)


def test_evaluate_suite_defaults_logs_and_controls(fake_tasks, tmp_path, monkeypatch):
    import itertools

    from lape_hub.evaluation import evaluator
    from lape_hub.evaluation.evaluator import done_tasks, evaluate_suite

    monkeypatch.setattr(evaluator, "CONTROL_TASKS", ("good", "gone"))
    clock = itertools.count(10.0, 0.25)
    monkeypatch.setattr(evaluator.time, "perf_counter", lambda: next(clock))
    cat = tmp_path / "cat"
    lines = []
    runs = evaluate_suite(_system(), "mlt_Latn", ["good"], control_langs=("fra_Latn",),
                          catalog=cat, data_dir=tmp_path / "d", log=lines.append)
    assert [c.lang for c in fake_tasks] == ["mlt_Latn", "fra_Latn"]
    assert all(c.split == "test" and c.data_dir == tmp_path / "d" and c.batch_size == 8
               for c in fake_tasks)
    assert lines == ["good: 2 results in 0.2 s", "note from mlt_Latn",
                     "good: 2 results in 0.2 s", "note from fra_Latn"]   # no "already evaluated"
    assert len(runs) == 2 and all(r.paths for r in runs)
    lines.clear()                                  # resume with nothing done: no such line
    evaluate_suite(_system(), "mlt_Latn", ["gone"], control_langs=(), catalog=cat,
                   data_dir=tmp_path / "d", resume=True, log=lines.append)
    assert lines == ["skipped gone: no data here"]
    del fake_tasks[2:]
    # without resume everything runs again; with resume and no log nothing breaks
    evaluate_suite(_system(), "mlt_Latn", ["good"], control_langs=("fra_Latn",), catalog=cat,
                   data_dir=tmp_path / "d")
    assert len(fake_tasks) == 4
    assert evaluate_suite(_system(), "mlt_Latn", ["good"], control_langs=("fra_Latn",),
                          catalog=cat, data_dir=tmp_path / "d", resume=True) == []
    # not recorded: nothing written
    evaluate_suite(_system(), "mlt_Latn", ["good"], catalog=tmp_path / "none", record=False,
                   data_dir=tmp_path / "d")
    assert not (tmp_path / "none").exists()
    # two tasks already done: one line naming both, in the order asked
    import sys
    import types

    mod = types.ModuleType("_fake_task_also")
    mod.run = lambda ctx: [_result(task="also", direction=ctx.lang, split=ctx.split, metric="m")]
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(evaluator.TASKS, "also", mod.__name__)
    evaluate_suite(_system(), "mlt_Latn", ["also"], control_langs=(), catalog=cat,
                   data_dir=tmp_path / "d")
    lines.clear()
    evaluate_suite(_system(), "mlt_Latn", ["also", "good"], control_langs=(), catalog=cat,
                   data_dir=tmp_path / "d", resume=True, log=lines.append)
    assert lines == ["mlt_Latn: already evaluated: also, good"]
    # done_tasks: another model's rows do not count; params without a limit mean no limit
    assert done_tasks("other", "base", "mlt_Latn", split="test", limit=None, catalog=cat) == set()
    from lape_hub.evaluation.results import read_evals, record_evals

    rows = read_evals(cat, items=True, lang="fra_Latn")
    for r in rows:
        r["params"] = ""
        r["items"] = json.dumps(r["items"]) if r["items"] is not None else None
    record_evals(rows + [{**rows[0], "model": "other", "task": "x", "params": "{}"}], cat)
    assert done_tasks("tiny", "base", "fra_Latn", split="test", limit=None, catalog=cat) == {"good"}
    assert done_tasks("tiny", "base", "fra_Latn", split="test", limit=3, catalog=cat) == set()


@pytest.mark.parametrize("own_head", [True, False])
def test_sequence_logprobs_puts_every_tensor_on_the_models_device(own_head, monkeypatch):
    """Every tensor is made on the model's device, as a GPU needs: with the default device set
    to ``meta`` (where a tensor made without ``device=`` lands, and which cannot meet the CPU
    model), the scores are still the CPU run's."""
    import torch

    from _tiny_models import tiny_model, tiny_tokenizer

    from lape_hub import lm_loss
    from lape_hub.evaluation.tasks import sequence_logprobs

    if not own_head:
        monkeypatch.setattr(lm_loss, "lm_head_of", lambda model: None)
    tok, model = tiny_tokenizer(), tiny_model("llama", seed=5)
    pairs = [("Topic:", " sports"), ("Topic:", " a"), ("Other:", " health"), ("Topic:", " travel")]
    want = sequence_logprobs(model, tok, pairs, batch_size=3)
    with torch.device("meta"):
        assert torch.empty(1).device.type == "meta"
        got = sequence_logprobs(model, tok, pairs, batch_size=3)
    assert got == want


def _trunk_calls(model):
    """Record every forward of the model's trunk: (batch rows, tokens fed, cache returned)."""
    from lape_hub.lm_loss import lm_head_of

    calls = []

    def hook(module, args, kwargs, output):
        ids = kwargs["input_ids"]
        calls.append((ids.shape[0], ids.shape[1], output.past_key_values is not None))

    lm_head_of(model).decoder.register_forward_hook(hook, with_kwargs=True)
    return calls


def test_options_of_one_context_run_the_context_once_and_the_rest_in_batches():
    """The cost model the docs promise: a context shared by several options runs once (its
    KV cache serves them all); other pairs go in batches of ``batch_size`` (8 by default);
    scoring alone keeps no KV cache."""
    from _tiny_models import tiny_model, tiny_tokenizer

    from lape_hub.evaluation.tasks import sequence_logprobs

    tok, model = tiny_tokenizer(), tiny_model("llama", seed=5)
    calls = _trunk_calls(model)
    options = [" sports", " health and life", " travel"]
    pairs = [("Topic:", o) for o in options] + [(f"Line {i}:", " a b") for i in range(9)]
    sequence_logprobs(model, tok, pairs)
    ctx = len(tok("Topic:").input_ids)
    lengths = [len(tok(o, add_special_tokens=False).input_ids) for o in options]
    longer = [n for n in lengths if n > 1]
    assert longer
    # the shared context once (with its cache), then the longer options' tails in one batch
    assert calls[0] == (1, ctx, True)
    assert calls[1][:2] == (len(longer), max(longer) - 1)
    # the 9 pairs with a context of their own: a batch of 8 and a batch of 1, no cache kept
    assert [c[0] for c in calls[2:]] == [8, 1]
    assert [c[2] for c in calls[2:]] == [False, False]
    # a batch size given: 3 + 3 + 3
    calls.clear()
    sequence_logprobs(model, tok, pairs[3:], batch_size=3)
    assert [c[0] for c in calls] == [3, 3, 3] and not any(c[2] for c in calls)
    # contexts of one option each are not "shared": no context-only pass
    calls.clear()
    sequence_logprobs(model, tok, [("Topic:", " sports"), ("Other:", " health")])
    assert [c[0] for c in calls] == [2]


def test_scoring_through_the_models_own_logits_keeps_no_cache(monkeypatch):
    from _tiny_models import tiny_model, tiny_tokenizer

    from lape_hub import lm_loss
    from lape_hub.evaluation.tasks import sequence_logprobs

    tok, model = tiny_tokenizer(), tiny_model("llama", seed=5)
    calls = []
    model.register_forward_hook(
        lambda m, a, kw, out: calls.append(out.past_key_values is not None), with_kwargs=True)
    monkeypatch.setattr(lm_loss, "lm_head_of", lambda model: None)
    sequence_logprobs(model, tok, [("Topic:", " sports"), ("Topic:", " health")])
    assert calls == [False]
