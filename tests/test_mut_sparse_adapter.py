"""sparse_adapter.py: the adapter file's validation and mixed-precision forwards, checked
against messages and values written out in the test (mutation testing, issue 14)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from _tiny_models import tiny_model
from lape_hub.errors import AdapterMismatchError
from lape_hub.sparse_adapter import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    AdapterConfig,
    SparseColumnDelta,
    SparseNeuronModel,
    SparseRowDelta,
    _neurons_from_tensors,
)
from test_sparse_adapter import _config, _neuron_set, _randomize


@pytest.fixture
def saved(tmp_path):
    ns = _neuron_set()
    sparse = SparseNeuronModel.inject(tiny_model("llama"), ns.layers, _config())
    _randomize(sparse)
    sparse.save(tmp_path / "a")
    return tmp_path / "a", ns


def test_bf16_inputs_use_a_float32_delta_cast_to_the_input():
    """A bf16 base keeps float32 deltas; the forward casts them to the input's dtype."""
    torch.manual_seed(0)
    lin = nn.Linear(6, 4, bias=False).to(torch.bfloat16)
    col = SparseColumnDelta(lin, torch.tensor([0, 5]))
    assert col.delta.dtype == torch.float32
    with torch.no_grad():
        col.delta.fill_(0.25)
    h = torch.randn(3, 6).to(torch.bfloat16)
    w = lin.weight.detach().float().clone()
    w[:, [0, 5]] += 0.25
    torch.testing.assert_close(col(h).float(), h.float() @ w.T, atol=0.1, rtol=0.05)
    lin2 = nn.Linear(4, 6, bias=False).to(torch.bfloat16)
    row = SparseRowDelta(lin2, {"gate": torch.tensor([1, 3])}, torch.tensor([1, 3]))
    with torch.no_grad():
        row.delta["gate"].fill_(0.5)
    x = torch.randn(2, 4).to(torch.bfloat16)
    w2 = lin2.weight.detach().float().clone()
    w2[[1, 3]] += 0.5
    torch.testing.assert_close(row(x).float(), x.float() @ w2.T, atol=0.1, rtol=0.05)


def test_neurons_from_tensors_reads_indices_whatever_the_key_order(saved):
    path, ns = saved
    cfg = AdapterConfig.load(path)
    tensors = load_file(path / ADAPTER_WEIGHTS_NAME)
    deltas_first = dict(sorted(tensors.items(), key=lambda kv: (not kv[0].endswith(".delta"), kv[0])))
    out = _neurons_from_tensors(deltas_first, cfg)
    assert len(out) == cfg.n_layers
    for got, want in zip(out, ns.layers):
        assert got.dtype == np.int64 and np.array_equal(got, np.asarray(want))
    assert out[1].size == 0  # the layer without neurons: an empty int64 array


@pytest.mark.parametrize("key", ["layers.0.gate.bias", "layer.0.gate.delta", "layers.0.bogus.delta",
                                 "layers.0.gate", "layers.0.gate.delta.x"])
def test_an_unexpected_tensor_is_named(saved, key):
    path, _ = saved
    cfg = AdapterConfig.load(path)
    tensors = dict(load_file(path / ADAPTER_WEIGHTS_NAME), **{key: torch.zeros(1)})
    with pytest.raises(AdapterMismatchError) as e:
        _neurons_from_tensors(tensors, cfg)
    assert str(e.value) == f"unexpected tensor {key!r} in adapter"


def test_a_layer_out_of_range_is_named(saved):
    path, _ = saved
    cfg = AdapterConfig.load(path)
    n = cfg.n_layers
    for layer in (n, -1):
        key = f"layers.{layer}.gate.indices"
        tensors = dict(load_file(path / ADAPTER_WEIGHTS_NAME), **{key: torch.tensor([0])})
        with pytest.raises(AdapterMismatchError) as e:
            _neurons_from_tensors(tensors, cfg)
        assert str(e.value) == f"adapter tensor {key!r}: layer out of range [0, {n})"


def test_components_that_disagree_on_indices_are_named(saved):
    path, _ = saved
    cfg = AdapterConfig.load(path)
    tensors = load_file(path / ADAPTER_WEIGHTS_NAME)
    tensors["layers.0.up.indices"] = tensors["layers.0.up.indices"].flip(0)
    with pytest.raises(AdapterMismatchError) as e:
        _neurons_from_tensors(tensors, cfg)
    assert str(e.value) == "adapter layer 0: components disagree on the neuron indices"


def test_from_pretrained_refusals_name_the_folder_and_both_sets(saved, tmp_path):
    path, ns = saved
    dense = tmp_path / "dense"
    shutil.copytree(path, dense)
    doc = json.loads((dense / ADAPTER_CONFIG_NAME).read_text())
    doc["method"] = "full"
    (dense / ADAPTER_CONFIG_NAME).write_text(json.dumps(doc))
    with pytest.raises(AdapterMismatchError) as e:
        SparseNeuronModel.from_pretrained(tiny_model("llama"), dense)
    assert str(e.value) == f"{dense} holds a 'full' adapter, not a sparse one; use apply_adapter"

    bare = tmp_path / "bare"
    shutil.copytree(path, bare)
    (bare / ADAPTER_WEIGHTS_NAME).unlink()
    with pytest.raises(AdapterMismatchError) as e:
        SparseNeuronModel.from_pretrained(tiny_model("llama"), bare)
    assert str(e.value) == f"{bare} has no {ADAPTER_WEIGHTS_NAME}"

    edited = tmp_path / "edited"
    shutil.copytree(path, edited)
    tensors = load_file(edited / ADAPTER_WEIGHTS_NAME)
    for comp in ("gate", "up", "down"):
        k = f"layers.0.{comp}.indices"
        tensors[k] = (tensors[k] + 1) % 48
    save_file(tensors, str(edited / ADAPTER_WEIGHTS_NAME))
    cfg = AdapterConfig.load(edited)
    from lape_hub.neuron_set import NeuronSet

    layers = [np.asarray(x) for x in ns.layers]
    layers[0] = (layers[0] + 1) % 48
    stored = NeuronSet(cfg.model, cfg.lang, layers, d_model=cfg.d_model, d_ffn=cfg.d_ffn).content_hash
    with pytest.raises(AdapterMismatchError) as e:
        SparseNeuronModel.from_pretrained(tiny_model("llama"), edited)
    assert str(e.value) == (f"{edited / ADAPTER_WEIGHTS_NAME}: its neuron indices (set {stored[:12]}) do not "
                            f"match its config (set {cfg.neuron_set_hash[:12]}); the file is corrupt or was edited")
