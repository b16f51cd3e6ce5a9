"""finetune.py helpers checked against rules written out in the test (mutation testing,
issue 14): which parameters get weight decay, what a checkpoint holds, the matched LoRA
rank and the random neuron set of the same size."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from lape_hub.errors import LapeHubError
from lape_hub.finetune import _decay_groups, _trainable_state, matched_lora_rank, random_neuron_set
from lape_hub.neuron_set import NeuronSet


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 4)  # weight decayed, bias not
        self.LayerNorm = nn.LayerNorm(4)  # 1-D, and named Norm in upper case
        self.q_norm_table = nn.Parameter(torch.ones(2, 4))  # 2-D but a norm: not decayed
        self.frozen = nn.Parameter(torch.ones(2, 2), requires_grad=False)


def test_decay_groups_follow_the_hf_trainer_rule():
    m = _Toy()
    extra = nn.Parameter(torch.zeros(5, 5))  # not in the model (no name): decayed as a weight
    params = [p for p in m.parameters() if p.requires_grad] + [extra]
    groups = _decay_groups(m, params, 0.25)
    assert [g["weight_decay"] for g in groups] == [0.25, 0.0]
    ids = [{id(p) for p in g["params"]} for g in groups]
    assert ids[0] == {id(m.proj.weight), id(extra)}
    assert ids[1] == {id(m.proj.bias), id(m.LayerNorm.weight), id(m.LayerNorm.bias), id(m.q_norm_table)}


def test_trainable_state_holds_only_trainable_parameters_as_copies():
    m = _Toy()
    state = _trainable_state(m)
    want = {n for n, p in m.named_parameters() if p.requires_grad}
    assert set(state) == want and "frozen" not in state
    with torch.no_grad():
        m.proj.weight.add_(1.0)
    assert not torch.equal(state["proj.weight"], m.proj.weight)  # a copy, not a view
    # a tied parameter (embeddings shared with the head) is stored once, under its first name
    tied = torch.nn.Module()
    tied.embed = torch.nn.Embedding(5, 3)
    tied.head = torch.nn.Linear(3, 5, bias=False)
    tied.head.weight = tied.embed.weight
    assert list(_trainable_state(tied)) == ["embed.weight"]


def test_matched_lora_rank_rounds_to_the_nearest_and_down():
    assert matched_lora_rank(250, 100) == 2  # 2.5 rounds half to even
    assert matched_lora_rank(260, 100) == 3
    assert matched_lora_rank(299, 100, round_down=True) == 2
    assert matched_lora_rank(301, 100, round_down=False) == 3
    assert matched_lora_rank(5, 1) == 5  # one parameter per rank is a valid target
    assert matched_lora_rank(10, 100) == 1 and matched_lora_rank(10, 100, round_down=True) == 1
    n, d, f, L = 3015, 4096, 14336, 32
    assert matched_lora_rank(3 * d * n, L * (d + f), round_down=True) == math.floor(3 * d * n / (L * (d + f))) == 62
    for bad in (0, -5):
        with pytest.raises(LapeHubError, match="^no LoRA target modules$"):
            matched_lora_rank(100, bad)


def _like(per_layer=(7, 0, 3, 1), d_ffn=16) -> NeuronSet:
    rng = np.random.default_rng(5)
    layers = [np.sort(rng.choice(d_ffn, size=k, replace=False)) for k in per_layer]
    return NeuronSet("m", "mlt_Latn", layers, d_model=8, d_ffn=d_ffn, refset="paper-12", total_params=12345)


def test_random_neuron_set_same_size_even_spread_and_identity():
    like = _like()
    n, L = 11, 4
    seen = set()
    for seed in range(6):
        r = random_neuron_set(like, seed)
        counts = [len(x) for x in r.layers]
        assert sum(counts) == n and sorted(counts) == [2, 3, 3, 3]  # n // L each, n % L get one more
        for x in r.layers:
            assert x.dtype.kind == "i" and list(x) == sorted(set(x.tolist())) and all(0 <= v < 16 for v in x)
        assert (r.model, r.lang, r.d_model, r.d_ffn, r.refset, r.total_params) == ("m", "mlt_Latn", 8, 16, "paper-12", 12345)
        assert r.metadata == {"random_seed": seed, "like": like.content_hash}
        again = random_neuron_set(like, seed)
        assert all(np.array_equal(a, b) for a, b in zip(r.layers, again.layers))
        seen.add(tuple(tuple(x.tolist()) for x in r.layers))
    assert len(seen) == 6  # the seed changes the choice
    spread = random_neuron_set(_like((4, 4, 4, 0)), 0)
    assert [len(x) for x in spread.layers] == [3, 3, 3, 3]


def test_random_neuron_set_near_and_at_a_full_layer():
    """61 neurons over 4 layers of 16: 15 each, one layer 16; 64: every layer full (an even
    spread of a valid set never needs more than d_ffn in a layer)."""
    like = _like((16, 16, 16, 13), d_ffn=16)
    assert sorted(len(x) for x in random_neuron_set(like, 0).layers) == [15, 15, 15, 16]
    full = NeuronSet("m", "mlt_Latn", [np.arange(16)] * 4, d_model=8, d_ffn=16)
    assert all(np.array_equal(x, np.arange(16)) for x in random_neuron_set(full, 1).layers)


def test_a_tied_validation_loss_keeps_the_earlier_checkpoint(tmp_path, monkeypatch):
    """Best means strictly lower: a plateau (4.0 at steps 2 and 4) keeps step 2's deltas."""
    import lape_hub.finetune as ft
    from test_finetune import _adapter_tensors, _run

    seen = []

    def scripted(model, data, batch_size=2, **kw):
        seen.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
        return [5.0, 4.0, 4.0][len(seen) - 1]

    monkeypatch.setattr(ft, "evaluate", scripted)
    root = _make_corpus(tmp_path / "c")
    res = _run(root, tmp_path / "run", train_tokens=4 * 2 * 48, eval_every=2)
    assert (res.best_step, res.best_val_loss) == (2, 4.0)
    key = "model.layers.0.mlp.gate_proj.delta.gate"
    assert torch.equal(_adapter_tensors(res)["layers.0.gate.delta"], seen[1][key])
    assert not torch.equal(seen[1][key], seen[2][key])


def _make_corpus(root):
    from test_finetune import write_corpus

    return write_corpus(root)


# -- config, targets, catalog row: checked against values written out here -------------------
import json  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import pyarrow.parquet as pq  # noqa: E402

from _tiny_models import tiny_model  # noqa: E402
from lape_hub.digest import artifact_sha256  # noqa: E402
from lape_hub.finetune import (  # noqa: E402
    FinetuneConfig,
    FinetuneResult,
    adapter_row,
    default_out_dir,
    ia3_targets,
    lora_params_per_rank,
    lora_targets,
    record_adapter,
)
from lape_hub.sparse_adapter import AdapterConfig  # noqa: E402

_HP_COMMON = {"weight_decay": 0.05, "grad_clip": 0.5, "batch_size": 3, "seq_len": 64,
              "train_tokens": 1000, "val_tokens": 200, "eval_every": 7, "seed": 4,
              "optimizer": "adamw", "epochs": 1, "dtype": "float32",
              "train_split": "tr", "val_split": "va"}


def _cfg(method, **kw):
    base = dict(corpus="data/sib200", method=method, weight_decay=0.05, grad_clip=0.5, batch_size=3,
                seq_len=64, train_tokens=1000, val_tokens=200, eval_every=7, seed=4, dtype="float32",
                train_split="tr", val_split="va")
    base.update(kw)
    return FinetuneConfig("org/tiny", "mlt_Latn", **base)


def test_hyperparameters_are_recorded_whole_for_each_method():
    assert _cfg("full").hyperparameters() == {"lr": 1e-5, **_HP_COMMON}
    assert _cfg("ffn", lr=3e-4).hyperparameters() == {"lr": 3e-4, **_HP_COMMON}
    assert _cfg("lape-sparse", components=("gate", "down")).hyperparameters() == {
        "lr": 1e-4, **_HP_COMMON, "components": ["gate", "down"],
        "weight_decay_on": "effective weights (W + delta)"}
    assert _cfg("random").hyperparameters()["components"] == ["gate", "up", "down"]
    assert _cfg("lora", lr=2e-4, lora_alpha=8.0).hyperparameters(lora_rank=6) == {
        "lr": 2e-4, **_HP_COMMON, "lora_rank": 6, "lora_alpha": 8.0, "lora_match": "params"}
    assert _cfg("lora", lora_rank=4, lora_match="paper").hyperparameters() == {
        "lr": _cfg("lora").resolved_lr, **_HP_COMMON, "lora_rank": 4, "lora_alpha": 32.0, "lora_match": "given"}
    assert _cfg("lora", lora_match="paper").hyperparameters()["lora_match"] == "paper"
    assert _cfg("ia3").hyperparameters() == {"lr": _cfg("ia3").resolved_lr, **_HP_COMMON}


def test_default_out_dir_names_model_language_method_and_run():
    assert default_out_dir(_cfg("ffn"), "0123456789ab") == Path(
        "runs/finetune/org--tiny/mlt_Latn/ffn-0123456789ab")


def test_lora_and_ia3_targets_separate_and_fused():
    assert lora_targets(tiny_model("llama")) == ["gate_proj", "up_proj", "down_proj"]
    assert lora_targets(tiny_model("phi3")) == ["gate_up_proj", "down_proj"]
    assert ia3_targets(tiny_model("llama")) == (["k_proj", "v_proj", "down_proj"], ["down_proj"])
    assert ia3_targets(tiny_model("phi3")) == (["qkv_proj", "down_proj"], ["down_proj"])
    half = tiny_model("llama")
    for layer in half.model.layers:  # k_proj without v_proj: no IA3 attention targets
        del layer.self_attn.v_proj
    with pytest.raises(LapeHubError) as e:
        ia3_targets(half)
    assert str(e.value) == "IA3: the model has no k_proj/v_proj (or qkv_proj) modules"


def test_lora_params_per_rank_counts_in_plus_out_of_each_projection():
    from peft import LoraConfig, get_peft_model

    d, f, n_layers = 32, 48, 3
    assert lora_params_per_rank(tiny_model("llama")) == n_layers * 3 * (d + f)
    assert lora_params_per_rank(tiny_model("llama"), "paper") == n_layers * (d + f)
    # fused gate_up_proj: (d -> 2f) and down (f -> d)
    assert lora_params_per_rank(tiny_model("phi3")) == n_layers * ((d + 2 * f) + (f + d))
    # counted through peft's wrappers (base_layer) the same
    pm = get_peft_model(tiny_model("llama"), LoraConfig(r=2, target_modules=["gate_proj", "up_proj", "down_proj"]))
    assert lora_params_per_rank(pm.base_model.model) == n_layers * 3 * (d + f)
    with pytest.raises(LapeHubError) as e:
        lora_params_per_rank(tiny_model("llama"), "Params")
    assert str(e.value) == "unknown LoRA matching convention 'Params'; use params or paper"


def _result(tmp_path, **kw):
    folder = tmp_path / "adapter"
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"\x00\x01weights")
    fields = dict(model="tiny", lang="mlt_Latn", method="lape-sparse", repo_id="org/tiny", revision="r1",
                  refset="paper-12", components=("gate", "down"), neuron_set_hash="ab" * 32, n_neurons=12,
                  trainable_params=960, total_params=9600, corpus="sib200:train", tokens=4096, steps=8,
                  best_step=6, best_val_loss=3.25, hyperparameters={"lr": 1e-4, "seed": 0})
    fields.update(kw)
    config = AdapterConfig(**fields)
    return FinetuneResult(run_id="0123456789ab", out_dir=tmp_path, adapter_dir=folder, config=config,
                          best_val_loss=3.25, best_step=6, steps=8, tokens=4096, train_losses=[(1, 5.0)],
                          val_losses=[(6, 3.25)], seconds=12.34)


def test_adapter_row_is_the_adapters_table_row(tmp_path):
    res = _result(tmp_path)
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    row = adapter_row(res, created_at=when)
    want_sha = artifact_sha256(res.adapter_dir)
    assert row == {
        "model": "tiny", "lang": "mlt_Latn", "method": "lape-sparse", "run_id": "0123456789ab",
        "revision": "r1", "repo_id": "org/tiny", "refset": "paper-12", "components": "gate,down",
        "neuron_set_hash": "ab" * 32, "n_neurons": 12, "trainable_params": 960, "share": 0.1,
        "tokens": 4096, "steps": 8, "best_step": 6, "best_val_loss": 3.25,
        "artifact_path": str(res.adapter_dir), "artifact_sha256": want_sha,
        "signature": res.config.signature, "lape_hub_version": res.config.lape_hub_version,
        "created_at": when,
        "params": json.dumps({"corpus": "sib200:train", "hyperparameters": {"lr": 1e-4, "seed": 0},
                              "seconds": 12.3, "total_params": 9600}, sort_keys=True),
    }
    assert len(want_sha) == 64
    # a dense run: no refset, components, set or share; created now (UTC) without a time given
    dense = adapter_row(_result(tmp_path / "d", method="full", refset="", neuron_set_hash="", n_neurons=0,
                                total_params=0))
    assert (dense["refset"], dense["components"], dense["neuron_set_hash"], dense["n_neurons"]) == (None,) * 4
    assert math.isnan(dense["share"])
    age = datetime.now(timezone.utc) - dense["created_at"]
    assert dense["created_at"].tzinfo is not None and 0 <= age.total_seconds() < 60


def test_record_adapter_writes_the_row_under_its_partition(tmp_path):
    from lape_hub.catalog import Catalog

    row = adapter_row(_result(tmp_path), created_at=datetime(2026, 1, 2, tzinfo=timezone.utc))
    path = record_adapter(row, tmp_path / "cat")
    want_dir = tmp_path / "cat" / "adapters" / "model=tiny" / "lang=mlt_Latn" / "method=lape-sparse" / "run_id=0123456789ab"
    assert Path(path).parent == want_dir and Path(path).suffix == ".parquet"
    back = pq.read_table(path).to_pylist()
    assert len(back) == 1
    got = back[0]
    for key in ("revision", "repo_id", "refset", "components", "neuron_set_hash", "n_neurons",
                "trainable_params", "tokens", "steps", "best_step", "best_val_loss",
                "artifact_sha256", "signature", "params"):
        assert got[key] == row[key], key
    # the same through a Catalog object
    cat = Catalog(tmp_path / "cat2")
    assert Path(record_adapter(row, cat)).is_relative_to(tmp_path / "cat2")


def test_autocast_is_bfloat16_only_when_asked():
    import warnings

    from lape_hub.finetune import autocast

    on, off = autocast("cpu", "bfloat16"), autocast("cpu", "float32")
    assert (on.fast_dtype, on._enabled, off._enabled) == (torch.bfloat16, True, False)
    with warnings.catch_warnings():  # no CUDA here: torch warns and disables it, the dtype stays
        warnings.simplefilter("ignore")
        assert autocast("cuda", "bfloat16").fast_dtype == torch.bfloat16  # CUDA's default is float16
    a = torch.ones(2, 2)
    with autocast("cpu", "bfloat16"):
        assert (a @ a).dtype == torch.bfloat16
    with autocast("cpu", "float32"):
        assert (a @ a).dtype == torch.float32


def test_identity_of_a_model_outside_the_registry():
    from lape_hub.finetune import _identity

    assert _identity(_cfg("full")) == ("org/tiny", "", "", None)
    assert _identity(_cfg("full", revision="r9")) == ("org/tiny", "", "r9", None)


def test_result_to_dict_writes_paths_as_text(tmp_path):
    res = _result(tmp_path)
    d = res.to_dict()
    assert (d["out_dir"], d["adapter_dir"], d["catalog_path"]) == (str(tmp_path), str(tmp_path / "adapter"), None)
    assert d["config"] == res.config.to_dict() and d["config"]["components"] == ["gate", "down"]
    assert (d["run_id"], d["best_step"], d["train_losses"]) == ("0123456789ab", 6, [(1, 5.0)])
    res.catalog_path = tmp_path / "cat" / "x.parquet"
    assert res.to_dict()["catalog_path"] == str(tmp_path / "cat" / "x.parquet")
    json.dumps(res.to_dict())  # run.json is written from it


# -- the loop (finetune()): against a loop written out here, and what a run writes ------------
import hashlib  # noqa: E402

from safetensors import safe_open  # noqa: E402

import lape_hub.finetune as ft  # noqa: E402
from _tiny_models import tiny_tokenizer  # noqa: E402
from lape_hub.corpus import read_documents, tokenize_and_pack  # noqa: E402
from lape_hub.lm_loss import lm_loss  # noqa: E402
from lape_hub.sparse_adapter import DENSE_WEIGHTS_NAME  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from test_finetune import write_corpus

    return write_corpus(tmp_path_factory.mktemp("corpus"))


def _loop_cfg(corpus, **kw):
    base = dict(model="tiny-llama", lang="mlt_Latn", corpus=str(corpus), seq_len=48, batch_size=2,
                train_tokens=4 * 2 * 48, eval_every=100, lr=3e-3, weight_decay=0.1, grad_clip=0.5,
                revision="r1", seed=3, dtype="float32")
    base.update(kw)
    return FinetuneConfig(**base)


def _tiny_set():
    from test_finetune import _ns

    return _ns()


def test_a_dense_run_matches_adamw_written_out(corpus, tmp_path):
    """Four steps of `full` against the loop written here: the seeded order, the mean loss,
    clipping at 0.5, AdamW with decay on weights only, zeroed gradients."""
    cfg = _loop_cfg(corpus, method="full")
    res = ft.finetune(cfg, tmp_path / "run", model=tiny_model("llama"), tokenizer=tiny_tokenizer(),
                      record=False, progress=False)
    tok = tiny_tokenizer()
    train = tokenize_and_pack(read_documents(corpus, "mlt_Latn", "train"), tok, 48, 4 * 2 * 48, lang="mlt_Latn")
    assert train.n_sequences == 8
    ref = tiny_model("llama")
    ref.train()
    named = list(ref.named_parameters())
    no_decay = [p for n, p in named if p.ndim < 2 or "norm" in n.lower()]
    decay = [p for n, p in named if not (p.ndim < 2 or "norm" in n.lower())]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-3)
    order = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    want_log, tokens = [], 0
    for step in range(4):
        idx = order[2 * step:2 * step + 2]
        ids, mask = train.input_ids[idx], train.attention_mask[idx]
        nll, n = lm_loss(ref, ids, mask)
        loss = nll / n
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_([p for _, p in named], 0.5)
        opt.step()
        opt.zero_grad()
        tokens += int(mask.sum())
        want_log.append((step + 1, loss.item(), float(norm), tokens))
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    train_rows = [r for r in log if r["split"] == "train"]
    assert [set(r) for r in train_rows] == [{"step", "split", "loss", "grad_norm", "tokens", "lr"}] * 4
    assert [r["lr"] for r in train_rows] == [3e-3] * 4
    assert [(r["step"], r["tokens"]) for r in train_rows] == [(s, t) for s, _, _, t in want_log]
    for r, (_, loss, norm, _) in zip(train_rows, want_log):
        assert r["loss"] == pytest.approx(loss, rel=1e-5) and r["grad_norm"] == pytest.approx(norm, rel=1e-4)
    assert (res.steps, res.tokens) == (4, tokens)
    assert res.train_losses == [(r["step"], r["loss"]) for r in train_rows]
    assert res.val_losses == [(r["step"], r["loss"]) for r in log if r["split"] == "val"]
    last = torch.load(tmp_path / "run" / "checkpoint" / "last.pt", weights_only=False)
    assert set(last["trainable"]) == {n for n, _ in named}
    for n, p in named:
        torch.testing.assert_close(last["trainable"][n], p.detach(), atol=2e-6, rtol=1e-5)
    assert last["trainable"]["model.layers.0.mlp.up_proj.weight"].sub(
        tiny_model("llama").model.layers[0].mlp.up_proj.weight).abs().max() > 1e-4  # it trained
    # the dense weights file says what it is
    with safe_open(str(res.adapter_dir / DENSE_WEIGHTS_NAME), "pt") as f:
        assert f.metadata() == {"format": "lape-hub-adapter", "method": "full"}


def _tsv(path, texts):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("index_id\tcategory\ttext\n" + "".join(f"{i}\tnone\t{t}\n" for i, t in enumerate(texts)))


def _scripted_evaluate(monkeypatch, seen):
    def fake(model, data, batch_size=2, **kw):
        seen.append((data.n_tokens, batch_size, kw))
        return 10.0 - len(seen)  # every validation improves

    monkeypatch.setattr(ft, "evaluate", fake)


def test_a_run_reads_its_own_splits_with_their_budgets(corpus, tmp_path, monkeypatch):
    from lape_hub.errors import CorpusError

    train_rows = (corpus / "mlt_Latn" / "train.tsv").read_text().splitlines()[1:]
    texts = [r.split("\t")[2] for r in train_rows]
    root = tmp_path / "c"
    _tsv(root / "mlt_Latn" / "tr.tsv", texts)
    _tsv(root / "mlt_Latn" / "va.tsv", texts[:12])
    seen = []
    _scripted_evaluate(monkeypatch, seen)
    cfg = _loop_cfg(root, method="ffn", train_split="tr", val_split="va", val_tokens=30, batch_size=3,
                    eval_every=2)
    res = ft.finetune(cfg, tmp_path / "r1", model=tiny_model("llama"), tokenizer=tiny_tokenizer(),
                      record=False, progress=False)
    # 384 train tokens in rows of 48: 8 rows, 3 per step; validation on 30 tokens, batch 3, float32
    assert res.steps == 3 and res.tokens == 384
    assert seen == [(30, 3, {"dtype": "float32"})] * 3  # steps 0, 2 and 3 (the last)
    # a validation split of one 1-byte document (BOS + 1 token) is enough: at least 2 tokens
    _tsv(root / "mlt_Latn" / "va.tsv", ["a"])
    seen.clear()
    ft.finetune(cfg, tmp_path / "r2", model=tiny_model("llama"), tokenizer=tiny_tokenizer(),
                record=False, progress=False)
    assert seen[0][0] == 2
    # too little text is refused, naming the language and the minimum (the whole row for training)
    for split, texts_, need in (("va", [], 2), ("tr", ["a"], 48)):
        _tsv(root / "mlt_Latn" / f"{split}.tsv", texts_)
        with pytest.raises(CorpusError) as e:
            ft.finetune(cfg, tmp_path / f"bad-{split}", model=tiny_model("llama"), tokenizer=tiny_tokenizer(),
                        record=False, progress=False)
        n = 2 * len(texts_)
        assert str(e.value) == (f"corpus for 'mlt_Latn' is too short: {n} tokens in {len(texts_)} documents, "
                                f"need at least {need}")


def test_a_run_without_a_model_loads_both_in_float32_on_its_device(corpus, tmp_path, monkeypatch):
    import lape_hub.models

    calls = []

    def fake_load(name, **kw):
        calls.append((name, kw))
        return tiny_model("llama"), tiny_tokenizer()

    monkeypatch.setattr(lape_hub.models, "load_model", fake_load)
    cfg = _loop_cfg(corpus, method="ffn", train_tokens=2 * 48)
    for kw in ({}, {"model": tiny_model("llama")}, {"tokenizer": tiny_tokenizer()}):
        ft.finetune(cfg, tmp_path / f"run{len(calls)}", record=False, progress=False, fresh=True, **kw)
    assert calls == [("tiny-llama", {"device": "cpu", "dtype": "float32"})] * 3


class _FakeCatalog:
    def __init__(self):
        self.asked = []

    def neuron_set(self, model, lang, **kw):
        self.asked.append((model, lang, kw))
        return _tiny_set()


def test_the_neuron_set_comes_from_the_catalog_given(corpus, tmp_path, monkeypatch):
    from lape_hub.catalog import Catalog

    cat = _FakeCatalog()
    cfg = _loop_cfg(corpus, method="lape-sparse", refset="my-ref", train_tokens=2 * 48)
    res = ft.finetune(cfg, tmp_path / "a", model=tiny_model("llama"), tokenizer=tiny_tokenizer(),
                      catalog=cat, record=False, progress=False)
    assert cat.asked == [("tiny-llama", "mlt_Latn", {"refset": "my-ref"})]
    assert res.config.neuron_set_hash == _tiny_set().content_hash
    # a catalog folder is opened as a Catalog there
    roots = []

    def from_folder(self, model, lang, **kw):
        roots.append((Path(self.root), model, lang, kw))
        return _tiny_set()

    monkeypatch.setattr(Catalog, "neuron_set", from_folder)
    ft.finetune(cfg, tmp_path / "b", model=tiny_model("llama"), tokenizer=tiny_tokenizer(),
                catalog=tmp_path / "cat", record=False, progress=False)
    assert roots == [(tmp_path / "cat", "tiny-llama", "mlt_Latn", {"refset": "my-ref"})]
    # a set given is used as is: the catalog is not asked
    ft.finetune(cfg, tmp_path / "c", model=tiny_model("llama"), tokenizer=tiny_tokenizer(),
                neuron_set=_tiny_set(), catalog=cat, record=False, progress=False)
    assert len(cat.asked) == 1


def _want_run_id(cfg, alias, revision, set_hash):
    """The documented run key, hashed here: same settings, data and set -> same id."""
    key = {"model": alias, "revision": revision, "lang": cfg.lang, "method": cfg.method,
           "corpus": cfg.corpus_label, "set": set_hash, "hp": cfg.hyperparameters(),
           "lora_rank": cfg.lora_rank, "v": 1}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def test_run_id_hashes_the_documented_key(corpus):
    from lape_hub.finetune import run_id

    cfg = _loop_cfg(corpus, method="lora", lora_rank=3)
    assert run_id(cfg, ("tiny-llama", "", "r1", None), "ab" * 32) == _want_run_id(cfg, "tiny-llama", "r1", "ab" * 32)
    base = run_id(cfg, ("m", "", "r1", None), "s")
    changed = [run_id(cfg, ("m2", "", "r1", None), "s"), run_id(cfg, ("m", "", "r2", None), "s"),
               run_id(cfg, ("m", "", "r1", None), "t"), run_id(_loop_cfg(corpus, method="lora", lora_rank=4),
                                                             ("m", "", "r1", None), "s"),
               run_id(_loop_cfg(corpus, method="lora", lora_rank=3, lang="mt"), ("m", "", "r1", None), "s"),
               run_id(_loop_cfg(corpus, method="lora", lora_rank=3, seed=9), ("m", "", "r1", None), "s"),
               run_id(_loop_cfg(corpus, method="lora", lora_rank=3, train_split="dev"), ("m", "", "r1", None), "s"),
               run_id(_loop_cfg(corpus, method="ia3"), ("m", "", "r1", None), "s")]
    assert len({base, *changed}) == 1 + len(changed)
    assert run_id(cfg, ("m", "repo/other", "r1", 5), "s") == base  # repo id and size are not part of it


def test_a_run_in_its_default_folder_writes_and_records_what_it_promises(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ft, "_identity", lambda cfg: ("tiny-llama", "org/tiny", "r1", 123456))
    ns = _tiny_set()
    cfg = _loop_cfg(corpus, method="lape-sparse", eval_every=2, train_tokens=3 * 2 * 48, components="down,gate")
    res = ft.finetune(cfg, model=tiny_model("llama"), tokenizer=tiny_tokenizer(), neuron_set=ns,
                      catalog=tmp_path / "cat")
    rid = _want_run_id(cfg, "tiny-llama", "r1", ns.content_hash)
    out = Path("runs") / "finetune" / "tiny-llama" / "mlt_Latn" / f"lape-sparse-{rid}"
    assert (res.run_id, res.out_dir, res.adapter_dir) == (rid, out, out / "adapter")
    assert sorted(p.name for p in (tmp_path / out).iterdir()) == ["adapter", "checkpoint", "log.jsonl", "run.json"]
    assert sorted(p.name for p in (tmp_path / out / "checkpoint").iterdir()) == ["best.pt", "last.pt"]
    c = res.config
    want = dict(model="tiny-llama", lang="mlt_Latn", method="lape-sparse", repo_id="org/tiny", revision="r1",
                refset="test", model_type="llama", components=("gate", "down"),
                neuron_set_hash=ns.content_hash, n_neurons=12, n_layers=3, d_model=32, d_ffn=48,
                trainable_params=12 * 2 * 32, total_params=123456, corpus=f"{corpus.name}:train",
                tokens=288, steps=3, best_step=res.best_step, best_val_loss=res.best_val_loss,
                hyperparameters=cfg.hyperparameters())
    assert {k: getattr(c, k) for k in want} == want
    assert AdapterConfig.load(tmp_path / out / "adapter") == c
    run_json = (tmp_path / out / "run.json").read_text()
    assert json.loads(run_json) == json.loads(json.dumps(res.to_dict()))
    assert run_json.startswith('{\n  "run_id": ') and run_json.endswith("}\n")  # indented for people
    # recorded by default, in the catalog given
    rows = [r for f in sorted((tmp_path / "cat" / "adapters").rglob("*.parquet"))
            for r in pq.read_table(f, partitioning=None).to_pylist()]
    assert [(r["run_id"], r["artifact_path"]) for r in rows] == [(rid, str(out / "adapter"))]
    assert Path(res.catalog_path).is_relative_to(tmp_path / "cat")
    # the progress bar is on by default, named after the method and language
    err = capsys.readouterr().err
    assert "lape-sparse mlt_Latn" in err and "3/3" in err and "tok_s=" in err and "best_val=" in err
    ft.finetune(cfg, tmp_path / "quiet", model=tiny_model("llama"), tokenizer=tiny_tokenizer(),
                neuron_set=ns, record=False, progress=False)
    assert capsys.readouterr().err == ""
    # without a registry size, the model's own parameters count once each
    monkeypatch.setattr(ft, "_identity", lambda cfg: ("tiny-llama", "", "r1", None))
    m = tiny_model("llama")
    res = ft.finetune(cfg, tmp_path / "own", model=m, tokenizer=tiny_tokenizer(), neuron_set=ns,
                      record=False, progress=False)
    assert res.config.total_params == sum(p.numel() for p in tiny_model("llama").parameters())


def test_a_run_of_a_method_without_a_set_hashes_no_set(corpus, tmp_path):
    cfg = _loop_cfg(corpus, method="ffn", train_tokens=2 * 48)
    res = ft.finetune(cfg, tmp_path / "r", model=tiny_model("llama"), tokenizer=tiny_tokenizer(),
                      record=False, progress=False)
    assert res.run_id == _want_run_id(cfg, "tiny-llama", "r1", "")
    assert (res.config.neuron_set_hash, res.config.n_neurons, res.config.refset) == ("", 0, "")
    # LoRA matched to a set records that set (nothing else writes it for a peft adapter)
    ns = _tiny_set()
    lora = ft.finetune(_loop_cfg(corpus, method="lora", train_tokens=2 * 48), tmp_path / "lora",
                       model=tiny_model("llama"), tokenizer=tiny_tokenizer(), neuron_set=ns, record=False,
                       progress=False)
    assert (lora.config.neuron_set_hash, lora.config.n_neurons, lora.config.refset) == (ns.content_hash, 12, "test")
    assert AdapterConfig.load(lora.adapter_dir).neuron_set_hash == ns.content_hash


def test_validations_and_checkpoints_follow_their_schedules(corpus, tmp_path, monkeypatch):
    """7 steps, validation every 3 and a checkpoint every 2: validations at 0, 3, 6 and the
    last step; last.pt at 0, 2, 4, 6 and the last step; best.pt at every improvement."""
    saved = []
    real_save = ft._atomic_torch_save

    def record(obj, path):
        saved.append((Path(path).name, obj["step"] if "run_key" in obj else None))
        real_save(obj, path)

    monkeypatch.setattr(ft, "_atomic_torch_save", record)
    losses = iter([5.0, 4.0, 4.5, 3.0])
    monkeypatch.setattr(ft, "evaluate", lambda model, data, batch_size=2, **kw: next(losses))
    cfg = _loop_cfg(corpus, method="ffn", train_tokens=7 * 2 * 48, eval_every=3, checkpoint_every=2)
    res = ft.finetune(cfg, tmp_path / "r", model=tiny_model("llama"), tokenizer=tiny_tokenizer(),
                      record=False, progress=False)
    assert saved == [("best.pt", None), ("last.pt", 0), ("last.pt", 2), ("best.pt", None), ("last.pt", 4),
                     ("last.pt", 6), ("best.pt", None), ("last.pt", 7)]
    assert res.val_losses == [(0, 5.0), (3, 4.0), (6, 4.5), (7, 3.0)]
    log = [json.loads(x) for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    val_rows = [r for r in log if r["split"] == "val"]
    assert [(r["step"], r["best"]) for r in val_rows] == [(0, True), (3, True), (6, False), (7, True)]
    assert [set(r) for r in val_rows] == [{"step", "split", "loss", "tokens", "best"}] * 4
    assert [r["tokens"] for r in val_rows] == [0] + [next(t["tokens"] for t in log if t["split"] == "train"
                                                          and t["step"] == s) for s in (3, 6, 7)]
    assert (res.best_step, res.best_val_loss) == (7, 3.0)
    last = torch.load(tmp_path / "r" / "checkpoint" / "last.pt", weights_only=False)
    assert {k: last[k] for k in ("step", "best_val", "best_step")} == {"step": 7, "best_val": 3.0, "best_step": 7}
    assert last["tokens"] == res.tokens and set(last) == {"run_key", "step", "tokens", "best_val", "best_step",
                                                          "trainable", "optimizer", "rng"}
    tok = tiny_tokenizer()
    train = tokenize_and_pack(read_documents(corpus, "mlt_Latn", "train"), tok, 48, 7 * 2 * 48, lang="mlt_Latn")
    val = tokenize_and_pack(read_documents(corpus, "mlt_Latn", "dev"), tok, 48, min_tokens=2, lang="mlt_Latn")
    assert last["run_key"] == {"run_id": res.run_id, "data": train.fingerprint(), "val": val.fingerprint(),
                               "steps": 7}
    # without checkpoint_every, checkpoints follow the validations
    saved.clear()
    losses = iter([5.0, 4.0, 4.5, 3.0])
    ft.finetune(_loop_cfg(corpus, method="ffn", train_tokens=7 * 2 * 48, eval_every=3), tmp_path / "r2",
                model=tiny_model("llama"), tokenizer=tiny_tokenizer(), record=False, progress=False)
    assert [s for n, s in saved if n == "last.pt"] == [0, 3, 6, 7]


def test_fresh_starts_over_and_a_finished_run_is_not_trained_again(corpus, tmp_path, monkeypatch):
    cfg = _loop_cfg(corpus, method="ffn", train_tokens=2 * 2 * 48)
    out = tmp_path / "r"
    ft.finetune(cfg, out, model=tiny_model("llama"), tokenizer=tiny_tokenizer(), record=False, progress=False)
    log1 = (out / "log.jsonl").read_text()
    (out / "checkpoint" / "stray.pt").write_bytes(b"x")
    other = _loop_cfg(corpus, method="ffn", train_tokens=2 * 2 * 48, seed=5)
    with pytest.raises(LapeHubError) as e:
        ft.finetune(other, out, model=tiny_model("llama"), tokenizer=tiny_tokenizer(), record=False, progress=False)
    assert str(e.value) == (f"{out} holds a checkpoint of another run (different settings or data); "
                            "use another --out or --fresh")
    res = ft.finetune(other, out, model=tiny_model("llama"), tokenizer=tiny_tokenizer(), record=False,
                      progress=False, fresh=True)
    assert not (out / "checkpoint" / "stray.pt").exists()
    log2 = (out / "log.jsonl").read_text()
    assert log2 != log1 and [json.loads(x)["step"] for x in log2.splitlines()] == [0, 1, 2, 2]
    # fresh on a folder without a log: nothing to delete is fine
    (out / "log.jsonl").unlink()
    ft.finetune(other, out, model=tiny_model("llama"), tokenizer=tiny_tokenizer(), record=False,
                progress=False, fresh=True)
    # rerun of a finished run: no training step, no validation, the same log and result
    calls = []
    monkeypatch.setattr(ft, "lm_loss", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(ft, "evaluate", lambda *a, **k: calls.append(2))
    again = ft.finetune(other, out, model=tiny_model("llama"), tokenizer=tiny_tokenizer(), record=False,
                        progress=False)
    assert calls == [] and (again.steps, again.best_val_loss) == (res.steps, res.best_val_loss)
    assert (out / "log.jsonl").read_text() == log2


def _trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_prepare_method_trains_exactly_what_each_method_names(corpus):
    from peft import PeftModel

    from lape_hub.finetune import prepare_method

    ns = _tiny_set()
    adapter = AdapterConfig("tiny-llama", "mlt_Latn", "lape-sparse")
    layers = range(3)
    mlp = {f"model.layers.{i}.mlp.{p}_proj.weight" for i in layers for p in ("gate", "up", "down")}

    prep = prepare_method(tiny_model("llama"), _loop_cfg(corpus, method="ffn"), None, adapter)
    assert _trainable_names(prep.model) == mlp and prep.sparse is None and prep.lora_rank is None
    assert {id(p) for p in prep.params} == {id(p) for n, p in prep.model.named_parameters() if n in mlp}
    assert len(prep.params) == len(mlp)

    m = tiny_model("llama")
    prep = prepare_method(m, _loop_cfg(corpus, method="full"), ns, adapter)
    assert _trainable_names(m) == {n for n, _ in m.named_parameters()} and prep.neuron_set is ns
    assert len(prep.params) == len(list(m.parameters()))

    prep = prepare_method(tiny_model("llama"), _loop_cfg(corpus, method="random", seed=7), ns, adapter)
    want = random_neuron_set(ns, 7)
    assert prep.neuron_set.content_hash == want.content_hash != ns.content_hash
    assert prep.sparse is not None and sum(p.numel() for p in prep.params) == want.trainable_params
    prep = prepare_method(tiny_model("llama"), _loop_cfg(corpus, method="lape-sparse"), ns, adapter)
    assert prep.neuron_set is ns and sum(p.numel() for p in prep.params) == ns.trainable_params
    assert all(not p.requires_grad for n, p in prep.sparse.model.named_parameters() if ".delta" not in n)

    # LoRA: matched rank from the set (exact count), frozen base, the config spelled out
    prep = prepare_method(tiny_model("llama"), _loop_cfg(corpus, method="lora", lora_alpha=16.0), ns, adapter)
    rank = max(1, round(ns.trainable_params / (3 * 3 * (32 + 48))))
    assert isinstance(prep.model, PeftModel) and prep.lora_rank == rank
    pc = prep.model.peft_config["default"]
    assert (pc.r, pc.lora_alpha, pc.lora_dropout, pc.bias, str(pc.task_type)) == (rank, 16.0, 0.0, "none", "CAUSAL_LM")
    assert set(pc.target_modules) == {"gate_proj", "up_proj", "down_proj"}
    assert _trainable_names(prep.model) == {n for n, _ in prep.model.named_parameters() if "lora_" in n}
    assert {id(p) for p in prep.params} == {id(p) for p in prep.model.parameters() if p.requires_grad}
    # the paper's convention rounds down; a given rank needs no set
    prep = prepare_method(tiny_model("llama"), _loop_cfg(corpus, method="lora", lora_match="paper"), ns, adapter)
    assert prep.lora_rank == max(1, ns.trainable_params // (3 * (32 + 48)))
    prep = prepare_method(tiny_model("llama"), _loop_cfg(corpus, method="lora", lora_rank=3), None, adapter)
    assert prep.lora_rank == 3 and prep.model.peft_config["default"].r == 3

    prep = prepare_method(tiny_model("llama"), _loop_cfg(corpus, method="ia3"), None, adapter)
    pc = prep.model.peft_config["default"]
    assert set(pc.target_modules) == {"k_proj", "v_proj", "down_proj"} and set(pc.feedforward_modules) == {"down_proj"}
    assert str(pc.task_type) == "CAUSAL_LM" and prep.lora_rank is None
    assert _trainable_names(prep.model) == {n for n, _ in prep.model.named_parameters() if "ia3_" in n}
    # Gemma: peft's own default would be q_proj/v_proj; the targets are ours (k_proj, v_proj)
    prep = prepare_method(tiny_model("gemma3"), _loop_cfg(corpus, method="ia3"), None, adapter)
    assert set(prep.model.peft_config["default"].target_modules) == {"k_proj", "v_proj", "down_proj"}
    # Phi-3 (fused qkv_proj): peft has no default for it, so both lists must be passed
    prep = prepare_method(tiny_model("phi3"), _loop_cfg(corpus, method="ia3"), None, adapter)
    pc = prep.model.peft_config["default"]
    assert (set(pc.target_modules), set(pc.feedforward_modules)) == ({"qkv_proj", "down_proj"}, {"down_proj"})

    for method in ("lape-sparse", "random", "lora"):
        with pytest.raises(LapeHubError) as e:
            prepare_method(tiny_model("llama"), _loop_cfg(corpus, method=method), None, adapter)
        assert str(e.value) == f"method {method!r} needs the language's neuron set"


def test_save_artifact_writes_each_form_into_nested_folders(corpus, tmp_path):
    from lape_hub.finetune import _save_artifact, prepare_method

    ns = _tiny_set()

    def files(folder):
        return sorted(p.name for p in folder.iterdir())

    for family, method, want in (
            ("llama", "lape-sparse", ["adapter_config.json", "adapter_model.safetensors", "lape_adapter.json",
                                      "lape_adapter.safetensors"]),
            ("phi3", "lape-sparse", ["lape_adapter.json", "lape_adapter.safetensors"]),  # fused: no LoRA form
            ("llama", "lora", ["README.md", "adapter_config.json", "adapter_model.safetensors", "lape_adapter.json"]),
            ("llama", "ffn", [DENSE_WEIGHTS_NAME, "lape_adapter.json"])):
        adapter = AdapterConfig("tiny-llama", "mlt_Latn", method, revision="r1")
        prep = prepare_method(tiny_model(family), _loop_cfg(corpus, method=method), ns, adapter)
        folder = tmp_path / family / method / "deep" / "adapter"
        _save_artifact(prep, adapter, folder)
        assert files(folder) == want, (family, method)
        assert AdapterConfig.load(folder).method == method
    with safe_open(str(tmp_path / "llama" / "ffn" / "deep" / "adapter" / DENSE_WEIGHTS_NAME), "pt") as f:
        assert f.metadata() == {"format": "lape-hub-adapter", "method": "ffn"}
        assert set(f.keys()) == {f"model.layers.{i}.mlp.{p}_proj.weight" for i in range(3) for p in ("gate", "up", "down")}


class _Touch:
    """Pickles as a call that creates a file: what a hostile checkpoint would run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_hostile_or_damaged_checkpoint_is_refused_not_run(corpus, tmp_path):
    cfg = _loop_cfg(corpus, method="ffn", train_tokens=2 * 2 * 48)
    out = tmp_path / "r"
    ft.finetune(cfg, out, model=tiny_model("llama"), tokenizer=tiny_tokenizer(), record=False, progress=False)
    last = out / "checkpoint" / "last.pt"
    good = torch.load(last, weights_only=True)
    marker = tmp_path / "pwned"
    for name, content in (("last.pt", {**good, "run_key": _Touch(marker)}), ("last.pt", b"not a checkpoint"),
                          ("last.pt", {"step": 1}), ("best.pt", _Touch(marker))):
        path = out / "checkpoint" / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            torch.save(content, path)
        with pytest.raises(LapeHubError) as e:
            ft.finetune(cfg, out, model=tiny_model("llama"), tokenizer=tiny_tokenizer(), record=False, progress=False)
        msg = str(e.value)
        why = "keys missing" if content == {"step": 1} else (
            "unreadable, or it holds objects other than tensors and plain data, which are never unpickled")
        assert msg == f"{path} is not a lape-hub checkpoint ({why}); use another --out or --fresh"
        assert not marker.exists()
        torch.save(good, last)
    assert "(keys missing)" in _refusal_for(out, cfg, {"step": 1})
    # not a regular file: a symlink to a good checkpoint elsewhere, a FIFO (which would block)
    unread = "(unreadable, or it holds objects other than tensors and plain data, which are never unpickled)"
    elsewhere = tmp_path / "elsewhere.pt"
    torch.save(good, elsewhere)
    last.unlink()
    last.symlink_to(elsewhere)
    with pytest.raises(LapeHubError) as e:
        ft.finetune(cfg, out, model=tiny_model("llama"), tokenizer=tiny_tokenizer(), record=False, progress=False)
    assert str(e.value) == f"{last} is not a lape-hub checkpoint {unread}; use another --out or --fresh"
    last.unlink()
    torch.save(good, last)
    best = out / "checkpoint" / "best.pt"
    best.unlink()
    os.mkfifo(best)
    with pytest.raises(LapeHubError) as e:
        ft.finetune(cfg, out, model=tiny_model("llama"), tokenizer=tiny_tokenizer(), record=False, progress=False)
    assert str(e.value) == f"{best} is not a lape-hub checkpoint {unread}; use another --out or --fresh"
    assert elsewhere.read_bytes() and not best.is_file()  # nothing followed, nothing replaced


def _refusal_for(out, cfg, content):
    torch.save(content, out / "checkpoint" / "last.pt")
    with pytest.raises(LapeHubError) as e:
        ft.finetune(cfg, out, model=tiny_model("llama"), tokenizer=tiny_tokenizer(), record=False, progress=False)
    return str(e.value)


def _cut_in_step(monkeypatch, n, start):
    """Call ``start()`` with the n-th gradient clipping raising KeyboardInterrupt (mid-step:
    after backward, before the optimizer step), as a Ctrl-C would; clipping is restored after."""
    real = torch.nn.utils.clip_grad_norm_
    calls = []

    def clip(*a, **k):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ft.torch.nn.utils, "clip_grad_norm_", clip)
    try:
        with pytest.raises(KeyboardInterrupt):
            start()
    finally:
        monkeypatch.setattr(ft.torch.nn.utils, "clip_grad_norm_", real)


def test_a_resumed_run_writes_the_same_log_as_an_uninterrupted_one(corpus, tmp_path, monkeypatch):
    cfg = _loop_cfg(corpus, method="ffn", train_tokens=5 * 2 * 48, eval_every=2)

    def run(out):
        return ft.finetune(cfg, out, model=tiny_model("llama"), tokenizer=tiny_tokenizer(), record=False,
                           progress=False)

    run(tmp_path / "whole")
    want = (tmp_path / "whole" / "log.jsonl").read_text()
    _cut_in_step(monkeypatch, 3, lambda: run(tmp_path / "cut"))
    # steps 1 and 2 and the validation at 2 were logged; the checkpoint is at step 2
    assert [json.loads(x)["step"] for x in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()] == [0, 1, 2, 2]
    run(tmp_path / "cut")
    assert (tmp_path / "cut" / "log.jsonl").read_text() == want
    # cut in the first step: the checkpoint of step 0 (the base model) is resumed, not redone
    _cut_in_step(monkeypatch, 1, lambda: run(tmp_path / "first"))
    assert torch.load(tmp_path / "first" / "checkpoint" / "last.pt", weights_only=True)["step"] == 0
    run(tmp_path / "first")
    assert (tmp_path / "first" / "log.jsonl").read_text() == want
    # a log without any checkpoint (cut before the first one was saved) is started over
    for p in (tmp_path / "cut" / "checkpoint").iterdir():
        p.unlink()
    run(tmp_path / "cut")
    assert (tmp_path / "cut" / "log.jsonl").read_text() == want


def test_bfloat16_runs_every_step_and_validation_under_bf16_autocast(corpus, tmp_path, monkeypatch):
    seen = []
    real = ft.autocast

    def spy(device, dtype):
        seen.append((torch.device(device).type, dtype))
        return real(device, dtype)

    monkeypatch.setattr(ft, "autocast", spy)
    cfg = _loop_cfg(corpus, method="ffn", train_tokens=3 * 2 * 48, eval_every=2, dtype="bfloat16")
    ft.finetune(cfg, tmp_path / "r", model=tiny_model("llama"), tokenizer=tiny_tokenizer(), record=False,
                progress=False)
    n_val_batches = -(-tokenize_and_pack(read_documents(corpus, "mlt_Latn", "dev"), tiny_tokenizer(), 48,
                                         min_tokens=2).n_sequences // 2)
    assert seen == [("cpu", "bfloat16")] * (3 + 3 * n_val_batches)  # 3 steps, validations at 0, 2, 3


class _Bar:
    """Stands in for tqdm: records what the loop shows."""

    made: list = []

    def __init__(self, **kw):
        self.kw, self.updates, self.postfix, self.closed = kw, [], [], False
        _Bar.made.append(self)

    def update(self, n):
        self.updates.append(n)

    def set_postfix(self, **kw):
        self.postfix.append(kw)

    def close(self):
        self.closed = True


def test_progress_shows_steps_loss_and_tokens_per_second_on_a_known_clock(corpus, tmp_path, monkeypatch):
    import types

    import tqdm.auto

    ticks = iter(range(10_000))
    monkeypatch.setattr(ft, "time", types.SimpleNamespace(time=lambda: 100.0 + 0.5 * next(ticks)))
    monkeypatch.setattr(tqdm.auto, "tqdm", _Bar)
    _Bar.made = []
    cfg = _loop_cfg(corpus, method="ffn", train_tokens=3 * 2 * 48, eval_every=2)
    res = ft.finetune(cfg, tmp_path / "r", model=tiny_model("llama"), tokenizer=tiny_tokenizer(), record=False,
                      progress=False)
    (bar,) = _Bar.made
    assert bar.kw == {"total": 3, "initial": 0, "desc": "ffn mlt_Latn", "unit": "step", "disable": True,
                      "dynamic_ncols": True}
    assert bar.updates == [1, 1, 1] and bar.closed
    log = [json.loads(x) for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    train = [r for r in log if r["split"] == "train"]
    best = [min(r["loss"] for r in log if r["split"] == "val" and r["step"] <= s) for s in (1, 2, 3)]
    # clock calls: start (100.0), t0 (100.5), then one per step (101.0, 101.5, 102.0), the end (102.5)
    want = [{"loss": f"{r['loss']:.3f}", "best_val": f"{b:.3f}", "tok_s": f"{r['tokens'] / (0.5 * (i + 1)):.0f}"}
            for i, (r, b) in enumerate(zip(train, best))]
    assert bar.postfix == want
    assert res.seconds == 2.5
    # resumed from step 2: the rate counts only the tokens of this session
    cut = tmp_path / "cut"
    _cut_in_step(monkeypatch, 3, lambda: ft.finetune(cfg, cut, model=tiny_model("llama"), tokenizer=tiny_tokenizer(),
                                                     record=False, progress=True))
    assert _Bar.made[-1].closed and _Bar.made[-1].kw["disable"] is False  # closed on the way out too
    ticks = iter(range(10_000))
    ft.finetune(cfg, cut, model=tiny_model("llama"), tokenizer=tiny_tokenizer(), record=False, progress=True)
    bar = _Bar.made[-1]
    assert bar.kw["initial"] == 2 and bar.updates == [1]
    assert bar.postfix[0]["tok_s"] == f"{(train[2]['tokens'] - train[1]['tokens']) / 0.5:.0f}"


def test_config_checks_and_resolves_its_fields(monkeypatch):
    with pytest.raises(LapeHubError) as e:
        FinetuneConfig("m", "mlt_Latn", corpus="c", method="sparse")
    assert str(e.value) == "unknown method 'sparse'; use one of lape-sparse, random, lora, ia3, full, ffn"
    for name in ("seq_len", "batch_size", "eval_every"):
        assert getattr(FinetuneConfig("m", "mt", corpus="c", **{name: 1}), name) == 1
        with pytest.raises(LapeHubError) as e:
            FinetuneConfig("m", "mt", corpus="c", **{name: 0})
        assert str(e.value) == f"{name} must be >= 1"
    assert FinetuneConfig("m", "mt", corpus="c", train_tokens=1).train_tokens == 1
    with pytest.raises(LapeHubError) as e:
        FinetuneConfig("m", "mt", corpus="c", train_tokens=0)
    assert str(e.value) == "the token budget must be >= 1"
    assert FinetuneConfig("m", "mt", corpus="c", components="down,gate").components == ("gate", "down")
    # the dtype is resolved for the configured device ("auto" -> what runs there)
    asked = []
    monkeypatch.setattr(ft, "resolve_dtype_name", lambda d, device: asked.append((d, device)) or "bfloat16")
    assert FinetuneConfig("m", "mt", corpus="c", dtype="auto", device="cuda:1").dtype == "bfloat16"
    assert asked == [("auto", "cuda:1")]


def test_identity_of_a_registry_model():
    from lape_hub.builder import model_revision
    from lape_hub.finetune import _identity
    from lape_hub.registry import resolve_model

    spec = resolve_model("gemma-3-270m")
    cfg = FinetuneConfig("google/gemma-3-270m", "mt", corpus="c", method="full")
    assert _identity(cfg) == (spec.alias, spec.repo_id, model_revision(spec), spec.total_params)
    assert spec.alias == "gemma-3-270m" and spec.repo_id == "google/gemma-3-270m" and model_revision(spec)
    cfg = FinetuneConfig("gemma-3-270m", "mt", corpus="c", method="full", revision="r9")
    assert _identity(cfg)[2] == "r9"


def test_a_nan_validation_loss_is_never_the_best_but_the_base_model_is_kept(corpus, tmp_path, monkeypatch):
    """A NaN base loss still keeps the base model as the first best; later numbers beat NaN;
    a NaN after a number never replaces it."""
    for curve, want in (([math.nan, 5.0, 4.0], (2, 4.0)), ([math.nan, math.nan, math.nan], (0, None)),
                        ([6.0, math.nan, 7.0], (0, 6.0))):
        losses = iter(curve)
        monkeypatch.setattr(ft, "evaluate", lambda model, data, batch_size=2, **kw: next(losses))
        res = ft.finetune(_loop_cfg(corpus, method="ffn", train_tokens=2 * 2 * 48, eval_every=1),
                          tmp_path / str(curve), model=tiny_model("llama"), tokenizer=tiny_tokenizer(),
                          record=False, progress=False)
        assert res.best_step == want[0]
        assert math.isnan(res.best_val_loss) if want[1] is None else res.best_val_loss == want[1]
        assert (tmp_path / str(curve) / "adapter").is_dir()
