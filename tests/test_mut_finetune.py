"""finetune.py helpers checked against rules written out in the test (mutation testing,
issue 14): which parameters get weight decay, what a checkpoint holds, the matched LoRA
rank and the random neuron set of the same size."""
from __future__ import annotations

import math

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
