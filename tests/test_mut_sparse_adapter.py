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
from test_sparse_adapter import _config, _neuron_set, _randomize, saved_adapter  # noqa: F401


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


def test_neurons_from_tensors_reads_indices_whatever_the_key_order(saved_adapter):
    path, ns = saved_adapter
    cfg = AdapterConfig.load(path)
    tensors = load_file(path / ADAPTER_WEIGHTS_NAME)
    deltas_first = dict(sorted(tensors.items(), key=lambda kv: (not kv[0].endswith(".delta"), kv[0])))
    out = _neurons_from_tensors(deltas_first, cfg)
    assert len(out) == cfg.n_layers
    for got, want in zip(out, ns.layers):
        assert got.dtype == np.int64 and np.array_equal(got, np.asarray(want))
    assert out[1].size == 0  # the layer without neurons: an empty int64 array


def _tensors_refusal(path, **extra: torch.Tensor) -> str:
    """The one line ``_neurons_from_tensors`` refuses the saved adapter's tensors with,
    after adding ``extra`` to them."""
    tensors = dict(load_file(path / ADAPTER_WEIGHTS_NAME), **extra)
    with pytest.raises(AdapterMismatchError) as e:
        _neurons_from_tensors(tensors, AdapterConfig.load(path))
    return str(e.value)


@pytest.mark.parametrize("key", ["layers.0.gate.bias", "layer.0.gate.delta", "layers.0.bogus.delta",
                                 "layers.0.gate", "layers.0.gate.delta.x"])
def test_an_unexpected_tensor_is_named(saved_adapter, key):
    path, _ = saved_adapter
    assert _tensors_refusal(path, **{key: torch.zeros(1)}) == f"unexpected tensor {key!r} in adapter"


def test_a_layer_out_of_range_is_named(saved_adapter):
    path, _ = saved_adapter
    n = AdapterConfig.load(path).n_layers
    for layer in (n, -1):
        key = f"layers.{layer}.gate.indices"
        assert _tensors_refusal(path, **{key: torch.tensor([0])}) == (
            f"adapter tensor {key!r}: layer out of range [0, {n})")


def test_components_that_disagree_on_indices_are_named(saved_adapter):
    path, _ = saved_adapter
    cfg = AdapterConfig.load(path)
    tensors = load_file(path / ADAPTER_WEIGHTS_NAME)
    tensors["layers.0.up.indices"] = tensors["layers.0.up.indices"].flip(0)
    with pytest.raises(AdapterMismatchError) as e:
        _neurons_from_tensors(tensors, cfg)
    assert str(e.value) == "adapter layer 0: components disagree on the neuron indices"


def test_from_pretrained_refusals_name_the_folder_and_both_sets(saved_adapter, tmp_path):
    path, ns = saved_adapter
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


# -- part B: injection, wiring, compatibility, dense adapters ---------------------------------
from types import SimpleNamespace  # noqa: E402

from safetensors import safe_open  # noqa: E402

from lape_hub.errors import LapeHubError  # noqa: E402
from lape_hub.neuron_set import NeuronSet  # noqa: E402
from lape_hub.sparse_adapter import (  # noqa: E402
    DENSE_WEIGHTS_NAME,
    _model_type,
    _same_model,
    apply_adapter,
    check_compatible,
)


def test_model_type_reads_config_then_a_peft_style_base_model():
    class Wrapped(nn.Module):  # a peft-like wrapper: no config of its own
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def get_base_model(self):
            return self.inner

    assert _model_type(tiny_model("llama")) == "llama"
    assert _model_type(Wrapped(tiny_model("qwen2"))) == "qwen2"
    assert _model_type(Wrapped(nn.Linear(2, 2))) == ""
    assert _model_type(nn.Linear(2, 2)) == ""
    assert _model_type(SimpleNamespace(config=SimpleNamespace(model_type=None))) == ""
    # a config of its own wins over the base model's
    w = Wrapped(tiny_model("qwen2"))
    w.config = SimpleNamespace(model_type="mistral")
    assert _model_type(w) == "mistral"


def test_inject_refusals_are_named_whole():
    model = tiny_model("llama")
    with pytest.raises(AdapterMismatchError) as e:
        SparseNeuronModel.inject(model, [[0], [1]], _config())
    assert str(e.value) == "neuron set has 2 layers, the model has 3 FFN layers"
    for bad in ([0, 5, 48], [-1, 5, 7]):  # out of range at either end, with valid indices beside
        with pytest.raises(AdapterMismatchError) as e:
            SparseNeuronModel.inject(tiny_model("llama"), [[1], bad, [2]], _config())
        assert str(e.value) == "layer 1: neuron index out of range [0, 48)"
    SparseNeuronModel.inject(model, [[0], [], [47]], _config())
    with pytest.raises(LapeHubError) as e:
        SparseNeuronModel.inject(model, [[0], [], [47]], _config())
    assert str(e.value) == "the model already has a sparse neuron adapter; unload it first"


def test_inject_fills_the_config_from_the_model_and_freezes_it():
    model = tiny_model("llama")
    want_total = sum(p.numel() for p in model.parameters())  # untied tiny model: no sharing
    sparse = SparseNeuronModel.inject(model, [[3, 1, 3], np.array([], dtype=np.int64), torch.tensor([0, 47])],
                                      _config())
    cfg = sparse.config
    assert (cfg.n_layers, cfg.d_model, cfg.d_ffn, cfg.model_type) == (3, 32, 48, "llama")
    assert cfg.n_neurons == 4  # duplicates dropped
    assert cfg.total_params == want_total
    assert cfg.trainable_params == 4 * 32 * 3  # gate and up rows, down columns
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 4 * 32 * 3  # the deltas only
    assert [n.tolist() for n in sparse.neurons] == [[1, 3], [], [0, 47]]
    # given total_params and model_type are kept
    sparse2 = SparseNeuronModel.inject(tiny_model("llama"), [[1], [], []],
                                       _config(model_type="custom", total_params=7))
    assert (sparse2.config.model_type, sparse2.config.total_params) == ("custom", 7)


def test_unload_puts_the_original_linears_back():
    model = tiny_model("llama")
    mlps = [layer.mlp for layer in model.model.layers]
    before = [(m.gate_proj, m.up_proj, m.down_proj) for m in mlps]
    sparse = SparseNeuronModel.inject(model, [[1], [2], [3]], _config(components=("gate", "up", "down")))
    out = sparse.unload()
    assert out is model
    assert [(m.gate_proj, m.up_proj, m.down_proj) for m in mlps] == before
    assert all(type(m) is nn.Linear for t in before for m in t)
    assert list(sparse.wrappers()) == []


def test_up_rows_alone_are_wrapped_without_gate():
    """Components name any subset: ``up`` without ``gate`` still gets its rows' delta."""
    model = tiny_model("llama")
    sparse = SparseNeuronModel.inject(model, [[1], [2], [3]], _config(components=("up",)))
    mlps = [layer.mlp for layer in model.model.layers]
    assert all(type(m.gate_proj) is nn.Linear and type(m.down_proj) is nn.Linear for m in mlps)
    assert all(type(m.up_proj) is not nn.Linear for m in mlps)
    assert len(list(sparse.wrappers())) == 3


def test_save_makes_nested_folders_twice_and_writes_the_metadata(tmp_path):
    sparse = SparseNeuronModel.inject(tiny_model("llama"), [[1, 2], [], [5]], _config())
    _randomize(sparse)
    folder = tmp_path / "x" / "y"
    assert sparse.save(folder) == folder
    assert sparse.save(folder) == folder  # an existing folder is fine
    with safe_open(str(folder / ADAPTER_WEIGHTS_NAME), "pt") as f:
        meta = f.metadata()
    assert meta == {"format": "lape-hub-adapter", "signature": sparse.config.signature}
    saved_adapter = json.loads((folder / ADAPTER_CONFIG_NAME).read_text())
    ns = NeuronSet("tiny", "mlt_Latn", [np.array([1, 2]), np.array([], dtype=np.int64), np.array([5])],
                   d_model=32, d_ffn=48, refset="test")
    assert saved_adapter["trainable_params"] == 3 * 32 * 3
    assert saved_adapter["neuron_set_hash"] == sparse.neuron_set_hash


def _named_config(**kw):
    return _config(model="gemma-3-270m", repo_id="google/gemma-3-270m", model_type="llama",
                   n_layers=3, d_model=32, d_ffn=48, **kw)


def test_same_model_by_name_repo_or_registry_alias():
    cfg = _named_config()
    assert _same_model(cfg, " Gemma-3-270M ")
    assert _same_model(cfg, "GOOGLE/gemma-3-270m")
    assert not _same_model(cfg, "llama-3.1-8b")
    assert not _same_model(cfg, "no-such-model-anywhere")
    only_repo = _config(model="mine", repo_id="google/gemma-3-270m")
    assert _same_model(only_repo, "gemma-3-270m")  # the alias resolves to the stored repo id
    only_alias = _config(model="gemma-3-270m", repo_id="")
    assert _same_model(only_alias, "google/gemma-3-270m")
    assert not _same_model(_config(model="", repo_id=""), "")


def test_check_compatible_messages_whole():
    model = tiny_model("llama")
    cfg = _named_config()
    check_compatible(cfg, model, model_name="gemma-3-270m", revision="r1")
    with pytest.raises(AdapterMismatchError) as e:
        check_compatible(cfg, model, model_name="llama-3.1-8b")
    assert str(e.value) == "adapter was made for gemma-3-270m, not llama-3.1-8b"
    with pytest.raises(AdapterMismatchError) as e:
        check_compatible(cfg, model, revision="r2")
    assert str(e.value) == "adapter was made for gemma-3-270m@r1, not revision r2"
    check_compatible(_named_config(revision=""), model, revision="r2")  # no stored revision
    with pytest.raises(AdapterMismatchError) as e:
        check_compatible(cfg, tiny_model("qwen2"))
    assert str(e.value) == "adapter was made for gemma-3-270m (a llama model), not a qwen2 model"
    bad = _config(model="gemma-3-270m", model_type="llama", n_layers=3, d_model=32, d_ffn=64)
    with pytest.raises(AdapterMismatchError) as e:
        check_compatible(bad, model)
    assert str(e.value) == ("adapter was made for gemma-3-270m (3 layers, d_model 32, d_ffn 64); "
                            "this model has 3 layers, d_model 32, d_ffn 48")
    ns = _neuron_set()
    other = NeuronSet("tiny", "fra_Latn", _neuron_set(seed=1).layers, d_model=32, d_ffn=48)
    hashed = _named_config(neuron_set_hash=ns.content_hash)
    check_compatible(hashed, model, neuron_set=ns)
    with pytest.raises(AdapterMismatchError) as e:
        check_compatible(hashed, model, neuron_set=other)
    assert str(e.value) == (
        f"adapter was trained on neuron set {ns.content_hash[:12]} (gemma-3-270m · mlt_Latn · test), "
        f"not on the given set {other.content_hash[:12]} (tiny · fra_Latn · no refset)")
    with pytest.raises(AdapterMismatchError) as e:
        check_compatible(_named_config(neuron_set_hash=ns.content_hash, refset=""), model, neuron_set=other)
    assert "(gemma-3-270m · mlt_Latn · no refset)" in str(e.value)


def _dense_folder(tmp_path, tensors, **kw):
    folder = tmp_path / "dense"
    folder.mkdir()
    _named_config(method="full", **kw).save(folder)
    if tensors is not None:
        save_file(tensors, str(folder / DENSE_WEIGHTS_NAME))
    return folder


def test_dense_adapter_copies_named_weights_and_refuses_strangers(tmp_path):
    model = tiny_model("llama")
    name = "model.layers.0.mlp.up_proj.weight"
    new = torch.full((48, 32), 0.125)
    folder = _dense_folder(tmp_path, {name: new})
    assert apply_adapter(model, folder, model_name="gemma-3-270m", revision="r1") is model
    assert torch.equal(model.get_parameter(name), new)
    with pytest.raises(AdapterMismatchError) as e:  # the compatibility check runs first
        apply_adapter(tiny_model("llama"), folder, model_name="llama-3.1-8b")
    assert str(e.value) == "adapter was made for gemma-3-270m, not llama-3.1-8b"
    with pytest.raises(AdapterMismatchError) as e:  # with the revision asked for
        apply_adapter(tiny_model("llama"), folder, model_name="gemma-3-270m", revision="r2")
    assert str(e.value) == "adapter was made for gemma-3-270m@r1, not revision r2"
    shutil.rmtree(folder)
    folder = _dense_folder(tmp_path, None)
    with pytest.raises(AdapterMismatchError) as e:
        apply_adapter(tiny_model("llama"), folder)
    assert str(e.value) == f"{folder} has no {DENSE_WEIGHTS_NAME}"
    shutil.rmtree(folder)
    folder = _dense_folder(tmp_path, {"model.nope.weight": torch.zeros(2)})
    with pytest.raises(AdapterMismatchError) as e:
        apply_adapter(tiny_model("llama"), folder)
    assert str(e.value) == "adapter weight 'model.nope.weight' has no parameter in this model"
    shutil.rmtree(folder)
    folder = _dense_folder(tmp_path, {name: torch.zeros(2, 3)})
    with pytest.raises(AdapterMismatchError) as e:
        apply_adapter(tiny_model("llama"), folder)
    assert str(e.value) == f"adapter weight {name!r} has shape (2, 3), the model (48, 32)"


def test_peft_adapter_without_its_config_is_refused(tmp_path):
    folder = tmp_path / "lora"
    folder.mkdir()
    _named_config(method="lora").save(folder)
    with pytest.raises(AdapterMismatchError) as e:
        apply_adapter(tiny_model("llama"), folder, model_name="gemma-3-270m")
    assert str(e.value) == f"{folder} has no peft adapter_config.json"


def test_sparse_apply_adapter_merge_gives_a_plain_model_with_the_same_outputs(saved_adapter):
    path, ns = saved_adapter
    ids = torch.randint(4, 260, (2, 9), generator=torch.Generator().manual_seed(3))
    kept = apply_adapter(tiny_model("llama"), path, model_name="tiny", neuron_set=ns)
    merged = apply_adapter(tiny_model("llama"), path, model_name="tiny", neuron_set=ns, merge=True)
    assert any(isinstance(m, (SparseRowDelta, SparseColumnDelta)) for m in kept.modules())
    assert not any(isinstance(m, (SparseRowDelta, SparseColumnDelta)) for m in merged.modules())
    with torch.no_grad():
        a, b, base = kept(ids).logits, merged(ids).logits, tiny_model("llama")(ids).logits
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(a, base, atol=1e-3)


def _saved_lora(tmp_path):
    """A LoRA adapter of the tiny llama with non-zero B matrices, saved as lape-hub saves one."""
    from peft import LoraConfig, get_peft_model

    pm = get_peft_model(tiny_model("llama"), LoraConfig(r=2, lora_alpha=4, target_modules=["up_proj", "down_proj"]))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    folder = tmp_path / "lora"
    pm.save_pretrained(str(folder))
    _named_config(method="lora").save(folder)
    with torch.no_grad():
        want = pm(_lora_ids()).logits
    return folder, want


def _lora_ids():
    return torch.randint(4, 260, (2, 9), generator=torch.Generator().manual_seed(4))


def test_peft_adapter_loads_as_a_peft_model_or_merged_into_a_plain_one(tmp_path):
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    folder, want = _saved_lora(tmp_path)
    kept = apply_adapter(tiny_model("llama"), folder, model_name="gemma-3-270m")
    merged = apply_adapter(tiny_model("llama"), folder, model_name="gemma-3-270m", merge=True)
    assert isinstance(kept, PeftModel) and any(isinstance(m, LoraLayer) for m in kept.modules())
    assert not isinstance(merged, PeftModel)
    assert not any(isinstance(m, LoraLayer) for m in merged.modules())
    with torch.no_grad():
        a, b, base = kept(_lora_ids()).logits, merged(_lora_ids()).logits, tiny_model("llama")(_lora_ids()).logits
    torch.testing.assert_close(a, want, atol=1e-5, rtol=0)   # the saved LoRA weights, not a fresh init
    torch.testing.assert_close(b, want, atol=1e-4, rtol=1e-4)
    assert (a - base).abs().max() > 1e-2
    with pytest.raises(AdapterMismatchError) as e:  # the compatibility check runs before peft
        apply_adapter(tiny_model("llama"), folder, model_name="llama-3.1-8b")
    assert str(e.value) == "adapter was made for gemma-3-270m, not llama-3.1-8b"


# -- part C: configuration, naming, merging -------------------------------------------------
from lape_hub.sparse_adapter import format_lr  # noqa: E402


@pytest.mark.parametrize("lr,text", [(0, "0"), (0.0, "0"), (1e-3, "0.001"), (9.99e-4, "9.99e-4"), (999, "999"),
                                     (999.5, "999.5"), (1e3, "1e3"), (1e-4, "1e-4"), (-1e-4, "-1e-4"),
                                     (2.5e-05, "2.5e-5"), (1.25e-10, "1.25e-10"), (120000.0, "1.2e5"),
                                     (-0.3, "-0.3"), (0.3, "0.3"), (3e-3, "0.003")])
def test_format_lr_writes_rates_as_people_do(lr, text):
    assert format_lr(lr) == text


def test_delta_modules_describe_their_rows_and_columns(saved_adapter):
    path, ns = saved_adapter
    sparse = SparseNeuronModel.from_pretrained(tiny_model("llama"), path, model_name="tiny", neuron_set=ns)
    mlp = sparse.model.model.layers[0].mlp
    n0 = len(ns.layers[0])
    assert mlp.gate_proj.extra_repr() == f"gate: {n0} rows"
    assert mlp.up_proj.extra_repr() == f"up: {n0} rows"
    assert mlp.down_proj.extra_repr() == f"down: {n0} columns"
    assert f"(gate_proj): SparseRowDelta(\n    gate: {n0} rows" in repr(mlp)  # what print(model) shows


def test_adapter_config_file_is_indented_in_field_order_and_loads_from_its_path(tmp_path):
    from dataclasses import fields

    cfg = _config(components=("down", "gate"))
    path = cfg.save(tmp_path)
    text = path.read_text()
    assert text.startswith('{\n  "model": "tiny",\n  "lang": "mlt_Latn",\n') and text.endswith("}\n")
    assert list(json.loads(text)) == [f.name for f in fields(AdapterConfig)] + ["signature"]
    assert cfg.to_dict()["components"] == ["gate", "down"]
    assert AdapterConfig.load(path) == cfg == AdapterConfig.load(tmp_path)  # the file itself, or its folder
    path.write_text('{"model": "tiny",\n "lang": }')
    with pytest.raises(AdapterMismatchError) as e:
        AdapterConfig.load(path)
    assert str(e.value) == f"{path} is not valid JSON (Expecting value, line 2)"


def test_adapter_config_refuses_other_formats_and_newer_versions():
    d = _config().to_dict()
    with pytest.raises(AdapterMismatchError) as e:
        AdapterConfig.from_dict({**d, "format": "peft"})
    assert str(e.value) == "not a lape-hub adapter config (format 'peft')"
    with pytest.raises(AdapterMismatchError) as e:
        AdapterConfig.from_dict({**d, "format_version": 2})
    assert str(e.value) == "adapter format v2 is newer than this lape-hub's v1: upgrade lape-hub"
    old = {k: v for k, v in d.items() if k not in ("format_version", "components")}
    assert AdapterConfig.from_dict(old).components == ("gate", "up", "down")  # v0 files: every component


def test_deltas_are_float32_for_half_weights_and_keep_wider_ones_and_index_buffers_stay_out_of_state():
    from lape_hub.sparse_adapter import SparseColumnDelta, SparseRowDelta, _child_name, delta_dtype

    assert [delta_dtype(t) for t in (torch.bfloat16, torch.float16, torch.float32, torch.float64)] == [
        torch.float32, torch.float32, torch.float32, torch.float64]
    idx = torch.tensor([1, 3], dtype=torch.int32)  # int32 indices are stored as int64
    for dtype, want in ((torch.bfloat16, torch.float32), (torch.float64, torch.float64)):
        row = SparseRowDelta(nn.Linear(4, 6, bias=False).to(dtype), {"gate": idx}, idx)
        col = SparseColumnDelta(nn.Linear(6, 4, bias=False).to(dtype), idx)
        assert (row.delta["gate"].dtype, col.delta.dtype) == (want, want)
        assert (row.delta["gate"].shape, col.delta.shape) == ((2, 4), (4, 2))
        # the indices are buffers (they follow .to(device)) but not state: the file stores them itself
        assert set(row.state_dict()) == {"base_layer.weight", "delta.gate"}
        assert set(col.state_dict()) == {"base_layer.weight", "delta"}
        assert row.rows("gate").dtype == row.neurons.dtype == col.neurons.dtype == torch.long
    fused = SparseRowDelta(nn.Linear(4, 12, bias=False), {"gate": idx, "up": idx + 6}, idx)  # gate_up_proj
    assert fused.extra_repr() == "gate: 2 rows, up: 2 rows"
    parent = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(LapeHubError) as e:
        _child_name(parent, nn.ReLU())
    assert str(e.value) == "ReLU is not a direct child of Sequential"


def test_merge_adapter_writes_a_full_model_folder_in_the_dtype_asked(saved_adapter, tmp_path, monkeypatch):
    import lape_hub.models
    from safetensors.torch import load_file as load_st

    from _tiny_models import tiny_tokenizer
    from lape_hub.sparse_adapter import merge_adapter

    path, ns = saved_adapter
    loads = []

    def fake_load(name, **kw):
        loads.append((name, kw))
        return tiny_model("llama"), tiny_tokenizer()

    monkeypatch.setattr(lape_hub.models, "load_model", fake_load)
    monkeypatch.chdir(tmp_path)
    out = merge_adapter(path, tmp_path / "m", dtype="bfloat16")
    assert out == tmp_path / "m" and loads == [("tiny", {"dtype": "float32"})]
    names = sorted(p.name for p in out.iterdir())
    assert {"config.json", "model.safetensors", "lape_adapter.json", "tokenizer.json"} <= set(names), names
    assert not any(n.endswith(".bin") for n in names) and not (tmp_path / "None").exists()
    weights = load_st(str(out / "model.safetensors"))
    want = apply_adapter(tiny_model("llama"), path, model_name="tiny", neuron_set=ns, merge=True)
    w = weights["model.layers.0.mlp.gate_proj.weight"]
    assert w.dtype == torch.bfloat16
    assert torch.equal(w, want.model.layers[0].mlp.gate_proj.weight.to(torch.bfloat16))
    assert (out / "lape_adapter.json").read_text() == (path / "lape_adapter.json").read_text()
    # another base by name is checked against the adapter; a local folder is taken as is
    with pytest.raises(AdapterMismatchError) as e:
        merge_adapter(path, tmp_path / "m2", base="gemma-3-270m")
    assert str(e.value) == "adapter was made for tiny, not gemma-3-270m"
    assert loads[-1] == ("gemma-3-270m", {"dtype": "float32"})
    (tmp_path / "local").mkdir()
    merge_adapter(path, tmp_path / "m3", base=str(tmp_path / "local"))
    assert load_st(str(tmp_path / "m3" / "model.safetensors"))["lm_head.weight"].dtype == torch.float32
    with pytest.raises(LapeHubError) as e:
        merge_adapter(path, tmp_path / "m4", dtype="float16")
    assert str(e.value) == "unknown dtype 'float16'; use float32 or bfloat16"


def test_components_are_parsed_canonically_and_refused_whole():
    from lape_hub.sparse_adapter import parse_components

    assert parse_components("down, GATE,,") == ("gate", "down")
    assert parse_components(["up", "gate", "up"]) == ("gate", "up")
    assert parse_components(("down",)) == ("down",)
    for value, got in (("gate,bias", "gate,bias"), ("gate up", "gate up"), ("", "nothing"), ([], "nothing"),
                       (" , ", "nothing")):
        with pytest.raises(LapeHubError) as e:
            parse_components(value)
        assert str(e.value) == f"components must be a non-empty subset of gate,up,down (got {got})"


def test_adapter_config_methods_and_components():
    with pytest.raises(LapeHubError) as e:
        AdapterConfig("tiny", "mlt_Latn", "sparse")
    assert str(e.value) == "unknown fine-tuning method 'sparse'; use one of lape-sparse, random, lora, ia3, full, ffn"
    assert AdapterConfig("tiny", "mlt_Latn", "random", components="down,up").components == ("up", "down")
    assert AdapterConfig("tiny", "mlt_Latn", "lora", components="down,up").components == ()  # not sparse
