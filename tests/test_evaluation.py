"""Evaluation: tasks on tiny models and fixtures, scoring against sacrebleu, log-likelihood by
hand, determinism, skip paths, the evals table and `sql` over it, significance, the CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from _tiny_models import save_tiny, tiny_model, tiny_tokenizer

FIX = Path(__file__).parent / "fixtures" / "eval"
DATA = FIX / "sib200"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")      # no Hub retries in tests


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny("llama", tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="module")
def system(model_dir):
    from lape_hub.evaluation.evaluator import load_system

    return load_system(str(model_dir))


def _gen(n=6):
    from lape_hub.evaluation.generation import GenerationSettings

    return GenerationSettings(max_new_tokens=n, batch_size=3)


# ------------------------------------------------------------------------------ data
def test_parallel_examples_pair_by_index_id_not_by_line():
    from lape_hub.evaluation.tasks import parallel_examples

    pairs = parallel_examples(DATA, "fra_Latn", "eng_Latn", "test")
    assert [a.index_id for a, _ in pairs] == [12, 13, 14, 15, 16, 17]   # fra lacks id 11
    assert all(a.index_id == b.index_id and a.category == b.category for a, b in pairs)
    assert pairs[0][1].text.startswith("Drink water")
    assert len(parallel_examples(DATA, "fra_Latn", "eng_Latn", "test", limit=2)) == 2


def test_missing_language_is_a_skip_naming_the_file(tmp_path):
    from lape_hub.evaluation.tasks import TaskSkipped, read_split

    with pytest.raises(TaskSkipped, match=r"xho_Latn/test\.tsv"):
        read_split(DATA, "xho_Latn", "test")


# ------------------------------------------------------------------------------ scoring
def test_translation_scores_match_sacrebleu_directly():
    import sacrebleu

    from lape_hub.evaluation.translation import score

    hyps = ["The cat sits on the mat.", "A dog barked loudly at night", "Hello"]
    refs = ["The cat sat on the mat.", "The dog barked loudly at night.", "Hello there."]
    s = score(hyps, refs)
    sent = [sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(hyps, refs)]
    assert s["bleu_sent"]["value"] == pytest.approx(sum(sent) / 3)
    assert s["bleu"]["value"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert s["chrf++"]["value"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs], word_order=2).score)
    assert s["bleu"]["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")
    assert "nw:2" in s["chrf++"]["signature"] and "bs:" not in s["chrf++"]["signature"]
    assert "eff:yes" in s["bleu_sent"]["signature"]
    lo, hi = s["chrf++"]["ci"]
    assert lo <= s["chrf++"]["value"] <= hi and lo < hi


def test_topic_parsing():
    from lape_hub.evaluation.topic import parse_topic

    assert parse_topic(" Sports, and also travel") == "sports"
    assert parse_topic("travel; sports") == "travel"
    assert parse_topic("It is about technology") == "science/technology"
    assert parse_topic("no idea") is None


@pytest.mark.parametrize("family", ["llama", "gemma2", "cohere", "plain"])
def test_loglik_option_scores_match_a_by_hand_computation(family, monkeypatch):
    """Scored only at the continuation's positions (softcapping: gemma2, logit scale: cohere)
    or through the model's own logits (plain: a head lm_loss does not know), the numbers are
    the model's."""
    from lape_hub import lm_loss
    from lape_hub.evaluation.tasks import sequence_logprobs

    if family == "plain":
        monkeypatch.setattr(lm_loss, "lm_head_of", lambda model: None)
        family = "llama"

    model, tok = tiny_model(family, seed=3), tiny_tokenizer()
    if family == "gemma2":
        model.config.final_logit_softcapping = 0.5      # far from the identity at these logits
    if family == "cohere":
        model.logit_scale = model.config.logit_scale = 3.0
    pairs = [("Topic of: the match", " sports"), ("Topic:", " politics"), ("ab", " c")]
    got = sequence_logprobs(model, tok, pairs, batch_size=2)     # batched, right padding
    for (ctx, cont), value in zip(pairs, got):
        c, t = tok(ctx).input_ids, tok(cont, add_special_tokens=False).input_ids
        ids = torch.tensor([c + t])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].float(), -1)
        want = sum(float(logp[len(c) - 1 + k, t[k]]) for k in range(len(t)))
        assert value == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("family", ["llama", "gemma3", "gemma2", "qwen3"])
def test_loglik_options_of_one_context_reuse_its_cache_and_match_by_hand(family):
    """Several options of one context (multiple choice) run the context once and reuse its
    KV cache; one- and multi-token options of different lengths score as the model says."""
    from lape_hub.evaluation.tasks import sequence_logprobs

    model, tok = tiny_model(family, seed=5), tiny_tokenizer()
    if family == "gemma2":
        model.config.final_logit_softcapping = 0.5
    options = [" a", "x", " sports", " science and technology", "y", " politics"]
    pairs = [("Classify: the match was won", o) for o in options] + \
            [("Another context", o) for o in options[:2]] + [("alone", " x y")]
    got = sequence_logprobs(model, tok, pairs, batch_size=3)
    for (ctx, cont), value in zip(pairs, got):
        c, t = tok(ctx).input_ids, tok(cont, add_special_tokens=False).input_ids
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([c + t])).logits[0].float(), -1)
        want = sum(float(logp[len(c) - 1 + k, t[k]]) for k in range(len(t)))
        assert value == pytest.approx(want, abs=1e-4), (family, cont)


def test_loglik_topic_prediction_is_the_argmax(system, monkeypatch):
    from lape_hub.evaluation import topic
    from lape_hub.evaluation.tasks import EvalContext

    ctx = EvalContext(system.model, system.tokenizer, "eng_Latn", data_dir=DATA)
    fake = {t: -float(i) for i, t in enumerate(topic.TOPICS)}
    fake["health"] = 5.0
    monkeypatch.setattr(topic, "sequence_logprobs",
                        lambda m, tok, pairs, batch_size: [fake[c.strip()] for _, c in pairs])
    assert topic.loglik_predictions(ctx, ["x", "y"]) == ["health", "health"]


def test_topic_generation_is_capped_and_the_cap_is_stored(system, monkeypatch):
    from lape_hub.evaluation import generation, topic
    from lape_hub.evaluation.tasks import EvalContext

    seen = []
    real = generation.generate
    monkeypatch.setattr(topic, "generate", lambda m, t, p, s: seen.append(s) or real(m, t, p, s))
    ctx = EvalContext(system.model, system.tokenizer, "eng_Latn", data_dir=DATA, limit=2,
                      generation=_gen(40))
    gen_row = next(r for r in topic.run(ctx) if r.metric == "acc_gen")
    assert [s.max_new_tokens for s in seen] == [topic.MAX_NEW_TOKENS]
    assert gen_row.generation["max_new_tokens"] == topic.MAX_NEW_TOKENS
    assert gen_row.generation["repetition_penalty"] == 1.1
    ctx.generation = _gen(5)                                    # a smaller setting is kept
    topic.run(ctx)
    assert seen[-1].max_new_tokens == 5


# ------------------------------------------------------------------------------ generation
def test_batched_generation_equals_one_call_per_prompt():
    from lape_hub.evaluation.generation import GenerationSettings, generate

    model, tok = tiny_model("llama", seed=1), tiny_tokenizer()
    prompts = ["Translate: a", "A much longer prompt to force padding on the left side", "xyz"]
    batched = generate(model, tok, prompts, GenerationSettings(max_new_tokens=5, batch_size=3))
    single = generate(model, tok, prompts, GenerationSettings(max_new_tokens=5, batch_size=1))
    assert batched.texts == single.texts
    assert batched.new_tokens == single.new_tokens > 0 and batched.tokens_per_s > 0
    assert tok.padding_side == "right"                              # restored


def test_stop_strings_cut_the_answer():
    from lape_hub.evaluation.generation import cut_at_stop

    assert cut_at_stop(" Hello.\nFrench: more", ["\n"]) == " Hello."
    assert cut_at_stop("\n Hi there<end_of_turn>x", ["\n", "<end_of_turn>"]) == "\n Hi there"


def test_tokenizer_without_pad_token_is_handled(model_dir):
    from transformers import AutoTokenizer

    from lape_hub.evaluation.generation import generate
    from lape_hub.evaluation.tasks import sequence_logprobs

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = None
    assert tok.pad_token_id is None and not getattr(tok, "chat_template", None)
    model = tiny_model("llama")
    out = generate(model, tok, ["a", "bbb"], _gen(3))
    assert len(out.texts) == 2 and tok.pad_token_id is not None
    assert len(sequence_logprobs(model, tok, [("a", " b"), ("ccc", " d")])) == 2


# ------------------------------------------------------------------------------ evaluator
def test_evaluate_writes_rows_and_sql_sees_them(system, tmp_path):
    from lape_hub.catalog import Catalog
    from lape_hub.evaluation.evaluator import evaluate
    from lape_hub.evaluation.results import read_evals
    from lape_hub.query import run_sql

    lines = []
    (tmp_path / "cat").mkdir()
    run = evaluate(system, "fra_Latn", ["translation", "topic", "belebele", "perplexity"],
                   data_dir=DATA, generation=_gen(), catalog=tmp_path / "cat", log=lines.append)
    assert set(run.skipped) == {"belebele"}                     # fixtures have English only
    assert "belebele/fra_Latn.jsonl" in run.skipped["belebele"]
    assert any(line.startswith("skipped belebele:") for line in lines)
    keys = {(r["task"], r["direction"], r["metric"]) for r in run.rows}
    assert ("translation", "fra_Latn->eng_Latn", "chrf++") in keys
    assert ("translation", "eng_Latn->fra_Latn", "bleu_sent") in keys
    assert {("topic", "fra_Latn", "acc_gen"), ("topic", "fra_Latn", "acc_ll"),
            ("perplexity", "fra_Latn", "ppl"), ("perplexity", "eng_Latn", "ppl")} <= keys
    row = next(r for r in run.rows if r["metric"] == "bleu")
    assert row["run_id"] == "base" and row["n_examples"] == 6 and row["split"] == "test"
    assert row["dataset"] == "Davlan/sib200"      # what was read: SIB-200's split of FLORES-200
    assert row["prompt_hash"].startswith("p:") and json.loads(row["generation"])["repetition_penalty"] == 1.1
    assert row["metric_signature"].startswith("nrefs:1") and "task:translation" in row["signature"]
    stored = read_evals(tmp_path / "cat", task="translation", metric="bleu")
    assert len(stored) == 2
    n = run_sql(Catalog(tmp_path / "cat"),
                "SELECT count(*) FROM evals WHERE task = 'topic' AND run_id = 'base'").fetchall()[0][0]
    assert n == 2
    ppl = {r["direction"]: r["value"] for r in run.rows if r["task"] == "perplexity"}
    assert all(math.isfinite(v) and v > 1 for v in ppl.values())


def test_rerun_gives_the_same_numbers_and_replaces_rows(system, tmp_path):
    from lape_hub.evaluation.evaluator import evaluate
    from lape_hub.evaluation.results import read_evals

    def values():
        run = evaluate(system, "mlt_Latn", ["translation", "topic"], data_dir=DATA, limit=4,
                       directions="to-en", generation=_gen(), catalog=tmp_path / "cat")
        return {(r["task"], r["direction"], r["metric"]): (r["value"], r["ci_low"], r["items"])
                for r in run.rows}

    (tmp_path / "cat").mkdir()
    first, second = values(), values()
    assert first == second
    assert len(read_evals(tmp_path / "cat")) == len(first)       # replaced, not appended


def test_perplexity_reuses_the_finetune_loss(system):
    from lape_hub.corpus import tokenize_and_pack
    from lape_hub.evaluation import perplexity
    from lape_hub.evaluation.tasks import EvalContext, read_split
    from lape_hub.finetune import evaluate as lm_eval_loss

    ctx = EvalContext(system.model, system.tokenizer, "mlt_Latn", data_dir=DATA,
                      perplexity_langs=["xho_Latn"])
    res = {r.direction: r for r in perplexity.run(ctx)}
    assert set(res) == {"mlt_Latn", "eng_Latn"}
    assert any("xho_Latn" in note for note in ctx.notes)
    texts = [e.text for e in read_split(DATA, "mlt_Latn", "test")]
    packed = tokenize_and_pack(texts, system.tokenizer, perplexity.SEQ_LEN, min_tokens=2)
    assert res["mlt_Latn"].value == pytest.approx(math.exp(lm_eval_loss(system.model, packed)), rel=1e-5)


def test_belebele_from_local_files(system):
    from lape_hub.evaluation import belebele
    from lape_hub.evaluation.tasks import EvalContext

    ctx = EvalContext(system.model, system.tokenizer, "eng_Latn", data_dir=DATA,
                      belebele_dir=FIX / "belebele")
    (r,) = belebele.run(ctx)
    assert r.n == 3 and r.metric == "acc_ll" and r.dataset == "facebook/belebele"
    assert r.value in (0.0, 100 / 3, 200 / 3, 100.0)


def test_unknown_task_and_english_translation(system, tmp_path):
    from lape_hub.errors import LapeHubError
    from lape_hub.evaluation.evaluator import evaluate

    with pytest.raises(LapeHubError, match="unknown task 'bleu'"):
        evaluate(system, "fra_Latn", ["bleu"], data_dir=DATA, record=False)
    run = evaluate(system, "eng_Latn", ["translation", "topic"], data_dir=DATA, limit=2,
                   generation=_gen(2), record=False)
    assert "translation" in run.skipped and {r["task"] for r in run.rows} == {"topic"}


# ------------------------------------------------------------------------------ adapters
def _sparse_adapter(tmp_path, model_name):
    import numpy as np

    from lape_hub.sparse_adapter import AdapterConfig, SparseNeuronModel

    model = tiny_model("llama")
    cfg = AdapterConfig(model=model_name, lang="mlt_Latn", method="lape-sparse")
    sparse = SparseNeuronModel.inject(model, [np.array([1, 5]), np.array([2]), np.array([0, 7])], cfg)
    with torch.no_grad():
        for p in sparse.parameters():
            p.normal_(0, 0.5)
    sparse.save(tmp_path / "adapter")
    return tmp_path / "adapter"


def test_adapter_changes_results_and_is_keyed_by_run_id(model_dir, tmp_path):
    from lape_hub.evaluation.evaluator import evaluate, load_system

    adapter = _sparse_adapter(tmp_path, str(model_dir))
    s = load_system(str(model_dir), adapter=adapter)
    assert s.run_id != "base" and len(s.run_id) == 12 and s.method == "lape-sparse"
    run = evaluate(s, "mlt_Latn", ["perplexity"], data_dir=DATA, record=False)
    base = evaluate(load_system(str(model_dir)), "mlt_Latn", ["perplexity"], data_dir=DATA,
                    record=False)
    assert run.rows[0]["value"] != pytest.approx(base.rows[0]["value"])
    assert run.rows[0]["adapter_signature"] and base.rows[0]["adapter_signature"] is None


def test_adapter_for_another_base_is_refused_before_loading(model_dir, tmp_path, monkeypatch):
    from lape_hub.errors import AdapterMismatchError
    from lape_hub.evaluation import evaluator

    adapter = _sparse_adapter(tmp_path, str(model_dir))
    other = save_tiny("qwen2", tmp_path / "qwen")
    monkeypatch.setattr("lape_hub.models.load_model",
                        lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(AdapterMismatchError, match="llama"):
        evaluator.load_system(str(other), adapter=adapter)
    with pytest.raises(AdapterMismatchError, match="not gemma-3-270m"):
        evaluator.load_system("gemma-3-270m", adapter=adapter)


# ------------------------------------------------------------------------------ significance
def test_paired_bootstrap_on_accuracies():
    from lape_hub.evaluation.significance import paired_bootstrap_mean

    a = [0, 1, 0, 0, 1, 0, 0, 0] * 5
    b = [1, 1, 1, 0, 1, 1, 0, 1] * 5
    d, (lo, hi), p = paired_bootstrap_mean(a, b)
    assert d == pytest.approx(0.5) and 0 < lo < d < hi and p < 0.01
    d2, _, p2 = paired_bootstrap_mean(a, a)
    assert d2 == 0 and p2 == 1.0


def test_compare_rows_uses_sacrebleu_paired_bs():
    from lape_hub.evaluation.significance import compare_rows
    from lape_hub.evaluation.translation import score

    refs = [f"the {w} sat on the mat today" for w in ("cat", "dog", "bird", "cow", "fox", "owl")]
    good = [r.replace("today", "") for r in refs]
    bad = ["mat" for _ in refs]

    def row(hyps, metric):
        return {"task": "translation", "direction": "x->y", "metric": metric, "run_id": "r",
                "items": {"ids": list(range(6)), "hyp": hyps, "ref": refs}}

    for metric in ("bleu", "chrf++", "bleu_sent"):
        c = compare_rows(row(bad, metric), row(good, metric), n=200)
        assert c.a == pytest.approx(score(bad, refs)[metric]["value"])
        assert c.b == pytest.approx(score(good, refs)[metric]["value"])
        assert c.delta > 0 and c.ci[0] <= c.delta <= c.ci[1] and c.p_value < 0.05
    with pytest.raises(Exception, match="different examples"):
        r2 = row(good, "bleu")
        r2["items"] = dict(r2["items"], ids=[9] * 6)
        compare_rows(row(bad, "bleu"), r2)


# ------------------------------------------------------------------------------ CLI
def test_cli_eval_and_compare(model_dir, tmp_path):
    from attack_helpers import run_cli

    cat = tmp_path / "cat"
    cat.mkdir()
    common = ["--lang", "mlt_Latn", "--data", str(DATA), "--catalog", str(cat), "--limit", "3",
              "--max-new-tokens", "3", "--tasks", "topic,belebele"]
    r = run_cli("eval", "--model", str(model_dir), *common, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "acc_ll" in r.stdout and "skipped belebele:" in r.stdout
    adapter = _sparse_adapter(tmp_path, str(model_dir))
    r = run_cli("eval", "--model", str(model_dir), "--adapter", str(adapter), *common, timeout=600)
    assert r.returncode == 0, r.stderr
    from lape_hub.evaluation.results import read_evals

    run_id = next(x["run_id"] for x in read_evals(cat) if x["run_id"] != "base")
    r = run_cli("eval", "compare", "--model", model_dir.name, "--lang", "mt", "--b", run_id,
                "--catalog", str(cat), timeout=600)
    assert r.returncode == 0, r.stderr
    assert "acc_gen" in r.stdout and "acc_ll" in r.stdout and "p" in r.stdout


def test_cli_bad_input_is_one_line(model_dir, tmp_path):
    from attack_helpers import assert_one_line_error, run_cli

    r = run_cli("eval", "--model", str(model_dir), "--lang", "mlt_Latn", "--tasks", "nope",
                "--no-record")
    assert_one_line_error(r, needle="unknown task")
    r = run_cli("eval", "--model", str(model_dir), "--lang", "klingon", "--no-record")
    assert_one_line_error(r, needle="klingon")
    r = run_cli("eval", "compare", "--model", "m", "--lang", "mt", "--b", "x", "--catalog",
                str(tmp_path))
    assert_one_line_error(r, needle="no results")


def test_merged_folder_scores_like_the_applied_adapter(model_dir, tmp_path):
    from lape_hub.evaluation.evaluator import evaluate, load_system
    from lape_hub.sparse_adapter import merge_adapter

    adapter = _sparse_adapter(tmp_path, str(model_dir))
    merged = merge_adapter(adapter, tmp_path / "merged", base=str(model_dir))
    s = load_system(str(model_dir), merged=merged)
    assert s.method == "lape-sparse" and s.source == str(merged)
    ppl_merged = evaluate(s, "mlt_Latn", ["perplexity"], data_dir=DATA, record=False).rows[0]["value"]
    ppl_applied = evaluate(load_system(str(model_dir), adapter=adapter), "mlt_Latn",
                           ["perplexity"], data_dir=DATA, record=False).rows[0]["value"]
    assert ppl_merged == pytest.approx(ppl_applied, rel=1e-4)
