"""Verification: zeroing neurons, perplexity, the language x language perplexity matrix."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from _tiny_models import D_FFN, FAMILIES, N_LAYERS, SAMPLE_TEXTS, tiny_model, tiny_tokenizer
from lape_hub.corpus import tokenize_and_pack
from lape_hub.errors import NeuronSetFormatError
from lape_hub.ffn import find_ffn_layers
from lape_hub.verify import PerplexityMatrix, perplexity, perplexity_matrix, zero_neurons

IDS = torch.randint(4, 200, (2, 11), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family", FAMILIES)
def test_zeroing_equals_removing_down_proj_columns(family):
    model = tiny_model(family)
    sets = [np.array([0, 5, 7]), np.array([], dtype=np.int64), np.arange(0, D_FFN, 3)]
    with torch.no_grad():
        base = model(IDS).logits
        with zero_neurons(model, sets):
            zeroed = model(IDS).logits
        assert torch.equal(model(IDS).logits, base)  # hooks removed on exit
        for layer, ix in zip(find_ffn_layers(model), sets):
            layer.down.parameter[:, torch.as_tensor(ix)] = 0.0
        by_weights = model(IDS).logits
    assert not torch.allclose(zeroed, base)
    torch.testing.assert_close(zeroed, by_weights)


def test_neuron_set_shape_is_checked():
    model = tiny_model("llama")
    with pytest.raises(NeuronSetFormatError, match=f"1 layers, the model has {N_LAYERS}"):
        zero_neurons(model, [np.array([1])])
    bad = [np.array([1])] * (N_LAYERS - 1) + [np.array([D_FFN])]
    with pytest.raises(NeuronSetFormatError, match=f"neuron index {D_FFN} outside 0..{D_FFN - 1}"):
        zero_neurons(model, bad)


def test_accepts_neuron_set_objects_and_tensors():
    from lape_hub.neuron_set import NeuronSet

    model = tiny_model("qwen3")
    layers = [np.array([1, 2])] * N_LAYERS
    ns = NeuronSet("tiny", "eng_Latn", layers, d_model=32, d_ffn=D_FFN)
    with torch.no_grad():
        with zero_neurons(model, ns):
            a = model(IDS).logits
        with zero_neurons(model, [torch.tensor([2, 1])] * N_LAYERS):
            b = model(IDS).logits
    torch.testing.assert_close(a, b)


def test_perplexity_matches_transformers_loss():
    model = tiny_model("gemma3")
    tok = tiny_tokenizer()
    packed = tokenize_and_pack(SAMPLE_TEXTS[:1], tok, seq_len=64, min_tokens=1)
    n = packed.n_tokens
    with torch.no_grad():
        loss = model(input_ids=packed.input_ids[:, :n], labels=packed.input_ids[:, :n]).loss
    assert perplexity(model, packed) == pytest.approx(math.exp(float(loss)), rel=1e-5)


def test_perplexity_matrix():
    model = tiny_model("llama")
    tok = tiny_tokenizer()
    sets = {
        "none": [np.array([], dtype=np.int64)] * N_LAYERS,
        "half": [np.arange(D_FFN // 2)] * N_LAYERS,
    }
    texts = {"eng_Latn": SAMPLE_TEXTS[:2], "npi_Deva": SAMPLE_TEXTS[2:3]}
    m = perplexity_matrix(model, tok, sets, texts, seq_len=32, progress=False)
    assert isinstance(m, PerplexityMatrix)
    assert m.langs == ["none", "half"] and m.eval_langs == ["eng_Latn", "npi_Deva"]
    assert m.ppl.shape == (2, 2) and all(v > 1 for v in m.baseline.values())
    np.testing.assert_allclose(m.increase[0], 0.0, atol=1e-9)  # zeroing nothing changes nothing
    assert np.all(m.increase[1] != 0)
    for e in m.eval_langs:
        packed = tokenize_and_pack(texts[e], tok, 32, min_tokens=2)
        assert m.baseline[e] == pytest.approx(perplexity(model, packed))
    rows = m.to_rows()
    assert len(rows) == 4 and rows[0]["zeroed"] == "none" and rows[0]["increase"] == pytest.approx(0.0)
    table = m.format()
    assert "(baseline)" in table and "npi_Deva" in table and "half" in table


def test_verify_neuron_sets_from_a_catalog(monkeypatch):
    """The catalog glue: a custom reference set, held-out text from a corpus folder."""
    from pathlib import Path

    from lape_hub import models

    corpus = Path(__file__).resolve().parent / "fixtures" / "corpus" / "langs"
    langs = ["eng_Latn", "mlt_Latn", "npi_Deva"]

    class FakeCatalog:
        def refset_name(self, model, refset):
            return refset

        def neuron_sets_available(self, model):
            return {("mini", "lape"): langs}

        def neuron_set(self, model, lang, refset=None):
            assert model == "gemma-3-270m" and refset == "mini"
            return [np.array([langs.index(lang)])] * N_LAYERS

    monkeypatch.setattr(models, "load_model", lambda spec, **kw: (tiny_model("gemma3"), tiny_tokenizer()))
    from lape_hub.verify import verify_neuron_sets

    m = verify_neuron_sets(FakeCatalog(), "gemma-3-270m", corpus=str(corpus), refset="mini",
                           langs=["npi_Deva"], split="train", progress=False)
    assert m.langs == ["npi_Deva"] and m.eval_langs == langs and m.ppl.shape == (1, 3)
    assert "| (baseline) |" in m.to_markdown()
    assert m.to_csv().splitlines()[0] == "zeroed,eval_lang,baseline_ppl,ppl,increase"
    only = verify_neuron_sets(FakeCatalog(), "gemma-3-270m", corpus=str(corpus), refset="mini",
                              langs=["npi_Deva"], eval_langs=["ne", "mt"], split="train",
                              progress=False)
    assert only.eval_langs == ["npi_Deva", "mlt_Latn"] and only.ppl.shape == (1, 2)
    np.testing.assert_allclose(only.ppl[0], m.ppl[0, [2, 1]], rtol=1e-5)
