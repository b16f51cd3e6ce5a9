"""Sparse neuron adapters: the delta math against the paper's clone-and-write reference,
merge/unmerge, the adapter file round trip, and refusing adapters of another model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from _tiny_models import D_FFN, D_MODEL, N_LAYERS, save_tiny, tiny_model
from lape_hub.errors import AdapterMismatchError
from lape_hub.ffn import find_ffn_layers
from lape_hub.neuron_set import NeuronSet
from lape_hub.sparse_adapter import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    AdapterConfig,
    SparseColumnDelta,
    SparseNeuronModel,
    SparseRowDelta,
    apply_adapter,
    artifact_sha256,
    check_compatible,
    merge_adapter,
)

FAMILIES = ["llama", "gemma3", "phi3"]  # phi3: fused gate_up_proj


def _neuron_set(seed: int = 0, per_layer: int = 5, model: str = "tiny") -> NeuronSet:
    rng = np.random.default_rng(seed)
    layers = [rng.choice(D_FFN, size=per_layer, replace=False) for _ in range(N_LAYERS)]
    layers[1] = np.array([], dtype=np.int64)  # a layer without neurons stays untouched
    return NeuronSet(model, "mlt_Latn", layers, d_model=D_MODEL, d_ffn=D_FFN, refset="test")


def _config(**kw) -> AdapterConfig:
    base = dict(model="tiny", lang="mlt_Latn", method="lape-sparse", revision="r1", refset="test")
    base.update(kw)
    return AdapterConfig(**base)


def _randomize(sparse: SparseNeuronModel, seed: int = 1, std: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sparse.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def _ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(4, 260, (2, 12), generator=torch.Generator().manual_seed(seed))


def _clone_write_forward(model, ns: NeuronSet, rows: dict):
    """The paper's public-code approach: clone W, write trainable rows/cols, multiply."""
    handles = []
    for layer in find_ffn_layers(model):
        idx = torch.as_tensor(ns.layers[layer.index])
        if not len(idx):
            continue
        g, u, d = rows[layer.index]

        def fwd(mlp, args, _layer=layer, _idx=idx, _g=g, _u=u, _d=d):
            x = args[0]
            if _layer.layout == "separate":
                wg, wu = _layer.gate.parameter.clone(), _layer.up.parameter.clone()
                wg[_idx], wu[_idx] = _g, _u
                gate, up = F.linear(x, wg), F.linear(x, wu)
            else:
                w = _layer.gate.parameter.clone()
                w[_idx], w[_idx + _layer.d_ffn] = _g, _u
                gate, up = F.linear(x, w).chunk(2, dim=-1)
            wd = _layer.down.parameter.clone()
            wd[:, _idx] = _d
            return F.linear(_layer.act(gate) * up, wd)

        handles.append(layer.mlp.register_forward_hook(lambda m, a, o, f=fwd: f(m, a)))
    return handles


@pytest.mark.parametrize("family", FAMILIES)
def test_delta_forward_and_gradients_match_clone_and_write(family):
    ns = _neuron_set()
    model = tiny_model(family)
    sparse = SparseNeuronModel.inject(model, ns.layers, _config())
    _randomize(sparse)
    ids = _ids()
    loss = model(input_ids=ids).logits.square().mean()
    loss.backward()

    # only the deltas get gradients; every base weight is frozen and gradient-free
    for name, p in model.named_parameters():
        assert (p.grad is not None) == (".delta" in name), name
        assert p.requires_grad == (".delta" in name), name
    assert sparse.trainable_params == ns.trainable_params == 3 * D_MODEL * ns.n_neurons

    # reference: trainable copies of the effective rows/cols inside cloned matrices
    ref = tiny_model(family)
    rows = {}
    for layer, part, w in sparse.wrappers():
        delta = (w.delta[part] if isinstance(w, SparseRowDelta) else w.delta).detach()
        lref = find_ffn_layers(ref)[layer]
        idx = torch.as_tensor(ns.layers[layer])
        if part == "down":
            base = lref.down.parameter.detach()[:, idx]
        else:
            base = getattr(lref, part).weight.detach()[idx]
        rows.setdefault(layer, {})[part] = (base + delta).requires_grad_(True)
    trip = {k: (v["gate"], v["up"], v["down"]) for k, v in rows.items()}
    for p in ref.parameters():
        p.requires_grad_(False)
    handles = _clone_write_forward(ref, ns, trip)
    ref_loss = ref(input_ids=ids).logits.square().mean()
    ref_loss.backward()
    for h in handles:
        h.remove()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for layer, part, w in sparse.wrappers():
        got = (w.delta[part] if isinstance(w, SparseRowDelta) else w.delta).grad
        torch.testing.assert_close(got, rows[layer][part].grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", ["llama", "phi3"])
def test_merged_equals_delta_forward_and_loads_in_plain_transformers(family, tmp_path):
    ns = _neuron_set()
    model = tiny_model(family)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    sparse = SparseNeuronModel.inject(model, ns.layers, _config())
    _randomize(sparse)
    ids = _ids()
    with torch.no_grad():
        delta_out = model(input_ids=ids).logits
        sparse.merge()
        merged_out = model(input_ids=ids).logits
        sparse.unmerge()
        unmerged_out = model(input_ids=ids).logits
    torch.testing.assert_close(merged_out, delta_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(unmerged_out, delta_out, rtol=1e-5, atol=1e-5)

    plain = sparse.merge_and_unload()
    assert not any(isinstance(m, (SparseRowDelta, SparseColumnDelta)) for m in plain.modules())
    changed = {n for n, p in plain.named_parameters() if not torch.equal(p, original[n])}
    assert changed == {n for n in original if ".mlp." in n and (".0." in n or ".2." in n)}
    plain.save_pretrained(tmp_path / "merged")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, delta_out, rtol=1e-5, atol=1e-5)


def test_unload_without_merge_restores_the_base_model():
    ns = _neuron_set()
    model = tiny_model("llama")
    ids = _ids()
    with torch.no_grad():
        before = model(input_ids=ids).logits
    sparse = SparseNeuronModel.inject(model, ns.layers, _config())
    _randomize(sparse)
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).logits, before)
        sparse.unload()
        torch.testing.assert_close(model(input_ids=ids).logits, before)


@pytest.mark.parametrize("family", ["llama", "phi3"])
def test_adapter_round_trip(family, tmp_path):
    ns = _neuron_set()
    model = tiny_model(family)
    sparse = SparseNeuronModel.inject(model, ns.layers, _config())
    _randomize(sparse)
    with torch.no_grad():
        want = model(input_ids=_ids()).logits
    sparse.save(tmp_path / "a")

    tensors = load_file(tmp_path / "a" / ADAPTER_WEIGHTS_NAME)
    assert sorted(tensors) == sorted(f"layers.{i}.{c}.{k}" for i in (0, 2) for c in ("gate", "up", "down")
                                     for k in ("indices", "delta"))
    assert tensors["layers.0.gate.delta"].shape == (5, D_MODEL)
    assert tensors["layers.2.down.delta"].shape == (D_MODEL, 5)
    assert tensors["layers.0.up.indices"].tolist() == ns.layers[0].tolist()
    cfg = json.loads((tmp_path / "a" / ADAPTER_CONFIG_NAME).read_text())
    assert cfg["neuron_set_hash"] == ns.content_hash
    assert cfg["signature"].startswith("model:tiny@r1|refset:test|lang:mlt_Latn|")

    fresh = tiny_model(family)
    out = apply_adapter(fresh, tmp_path / "a", model_name="tiny", revision="r1", neuron_set=ns)
    with torch.no_grad():
        torch.testing.assert_close(out(input_ids=_ids()).logits, want)


def test_adapter_size_is_proportional_to_the_subnetwork(tmp_path):
    sizes, payloads = {}, {}
    for k in (2, 8):
        ns = _neuron_set(per_layer=k)
        sparse = SparseNeuronModel.inject(tiny_model("llama"), ns.layers, _config())
        sparse.save(tmp_path / str(k))
        sizes[k] = (tmp_path / str(k) / ADAPTER_WEIGHTS_NAME).stat().st_size
        payloads[k] = ns.trainable_params * 4 + ns.n_neurons * 3 * 8  # float32 deltas + int64 indices
        assert payloads[k] <= sizes[k] <= payloads[k] + 2048  # + the safetensors header (fixed size)
    # growing the set 4x grows the file by exactly the extra deltas and indices
    assert abs((sizes[8] - sizes[2]) - (payloads[8] - payloads[2])) <= 64


def test_components_subset_trains_only_those_projections(tmp_path):
    ns = _neuron_set()
    model = tiny_model("llama")
    sparse = SparseNeuronModel.inject(model, ns.layers, _config(components=("gate",)))
    assert sparse.trainable_params == D_MODEL * ns.n_neurons
    mlp = model.model.layers[0].mlp
    assert isinstance(mlp.gate_proj, SparseRowDelta)
    assert isinstance(mlp.up_proj, torch.nn.Linear) and isinstance(mlp.down_proj, torch.nn.Linear)
    sparse.save(tmp_path / "g")
    assert {k.split(".")[2] for k in load_file(tmp_path / "g" / ADAPTER_WEIGHTS_NAME)} == {"gate"}
    assert AdapterConfig.load(tmp_path / "g").signature.count("comp:gate|") == 1


def test_decay_matches_adamw_on_the_effective_rows():
    """AdamW weight decay on the real rows (paper) == decay_ on the effective rows + AdamW(wd=0)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 10, bias=False)
    rows = torch.tensor([1, 4, 7])
    wrapped = SparseRowDelta(lin, {"gate": rows}, rows)
    real = lin.weight.detach()[rows].clone().requires_grad_(True)
    opt_a = torch.optim.AdamW([wrapped.delta["gate"]], lr=0.1, weight_decay=0.0)
    opt_b = torch.optim.AdamW([real], lr=0.1, weight_decay=0.5)
    for step in range(3):
        x = torch.randn(4, 6, generator=torch.Generator().manual_seed(step))
        wrapped(x)[:, rows].pow(3).sum().backward()
        (x @ real.T).pow(3).sum().backward()
        wrapped.decay_(0.1 * 0.5)
        opt_a.step(), opt_b.step()
        opt_a.zero_grad(), opt_b.zero_grad()
    torch.testing.assert_close(lin.weight.detach()[rows] + wrapped.delta["gate"].detach(), real.detach())


# ----------------------------------------------------------------------------- refusal
@pytest.fixture
def saved_adapter(tmp_path):
    ns = _neuron_set()
    sparse = SparseNeuronModel.inject(tiny_model("llama"), ns.layers, _config())
    _randomize(sparse)
    sparse.save(tmp_path / "a")
    return tmp_path / "a", ns


def test_adapter_for_another_model_revision_or_set_is_refused(saved_adapter):
    path, ns = saved_adapter
    cases = [
        (dict(model_name="gemma-3-270m"), "made for tiny, not gemma-3-270m"),
        (dict(model_name="tiny", revision="r2"), "made for tiny@r1, not revision r2"),
        (dict(neuron_set=_neuron_set(seed=7)), "trained on neuron set"),
    ]
    for kw, msg in cases:
        with pytest.raises(AdapterMismatchError, match=msg) as e:
            apply_adapter(tiny_model("llama"), path, **kw)
        assert "\n" not in str(e.value)
    with pytest.raises(AdapterMismatchError, match=r"\(a llama model\), not a gemma3_text model"):
        apply_adapter(tiny_model("gemma3"), path)
    cfg = AdapterConfig.load(path)
    cfg.model_type = ""  # a same-family model of another shape: caught by the FFN shape
    from transformers import LlamaConfig

    other = AutoModelForCausalLM.from_config(LlamaConfig(hidden_size=D_MODEL, intermediate_size=2 * D_FFN,
                                                         num_hidden_layers=N_LAYERS, num_attention_heads=4,
                                                         vocab_size=260))
    with pytest.raises(AdapterMismatchError, match="d_ffn 48.*d_ffn 96"):
        check_compatible(cfg, other)


def test_tampered_indices_are_refused(saved_adapter):
    from safetensors.torch import save_file

    path, _ = saved_adapter
    tensors = load_file(path / ADAPTER_WEIGHTS_NAME)
    for comp in ("gate", "up", "down"):
        tensors[f"layers.0.{comp}.indices"] = (tensors[f"layers.0.{comp}.indices"] + 1) % D_FFN
    save_file(tensors, str(path / ADAPTER_WEIGHTS_NAME))
    with pytest.raises(AdapterMismatchError, match="corrupt or was edited"):
        apply_adapter(tiny_model("llama"), path)


def test_not_an_adapter_and_hash_stability(tmp_path, saved_adapter):
    with pytest.raises(AdapterMismatchError, match="not a lape-hub adapter"):
        apply_adapter(tiny_model("llama"), tmp_path)
    path, _ = saved_adapter
    h = artifact_sha256(path)
    assert h == artifact_sha256(path)
    (path / "extra.txt").write_text("x")
    assert artifact_sha256(path) != h


def test_merge_command_writes_a_loadable_model_and_refuses_a_mismatch(tmp_path):
    from lape_hub.cli import cli

    base = save_tiny("llama", tmp_path / "base")
    ns = _neuron_set()
    model = AutoModelForCausalLM.from_pretrained(base)
    sparse = SparseNeuronModel.inject(model, ns.layers, _config(model=str(base), revision=""))
    _randomize(sparse)
    with torch.no_grad():
        want = model(input_ids=_ids()).logits
    sparse.save(tmp_path / "a")

    res = CliRunner().invoke(cli, ["merge", str(tmp_path / "a"), "-o", str(tmp_path / "merged")])
    assert res.exit_code == 0, res.output
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=_ids()).logits, want, rtol=1e-5, atol=1e-5)
    assert (tmp_path / "merged" / ADAPTER_CONFIG_NAME).is_file()

    other = save_tiny("gemma3", tmp_path / "other")
    from lape_hub.cli import main

    with pytest.raises(SystemExit) as e:
        main(["merge", str(tmp_path / "a"), "-o", str(tmp_path / "m2"), "--base", str(other)])
    assert e.value.code == 2
    assert not (tmp_path / "m2").exists()


def test_merge_adapter_function_refuses_wrong_base(tmp_path, saved_adapter):
    path, _ = saved_adapter
    other = save_tiny("phi3", tmp_path / "phi")
    with pytest.raises(AdapterMismatchError):
        merge_adapter(path, tmp_path / "out", base=str(other))


def test_loading_tensors_into_a_merged_model_replaces_the_merged_delta():
    """load_tensors on a merged adapter must take the old delta out of the weights first:
    the result equals a fresh model merged with the new delta only."""
    ns = _neuron_set()
    model = tiny_model("llama")
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    sparse = SparseNeuronModel.inject(model, ns.layers, _config())
    _randomize(sparse, seed=1)
    sparse.merge()
    other = SparseNeuronModel.inject(tiny_model("llama"), ns.layers, _config())
    _randomize(other, seed=2)
    sparse.load_tensors(other.tensors())
    assert all(w.merged for _, _, w in sparse.wrappers())
    ids = _ids()
    want = other.model
    other.merge()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, want(input_ids=ids).logits)
    sparse.unmerge()  # and unmerging gives the untouched base weights back
    for n, p in sparse.unload().named_parameters():
        torch.testing.assert_close(p.detach(), base[n], rtol=0, atol=1e-6, msg=n)


def test_components_in_the_file_must_match_the_config(saved_adapter, tmp_path):
    """The per-layer components check names the mismatch (before the injection would fail
    with a vaguer message, or not at all)."""
    import shutil

    folder, ns = saved_adapter
    edited = tmp_path / "edited"
    shutil.copytree(folder, edited)
    doc = json.loads((edited / ADAPTER_CONFIG_NAME).read_text())
    doc["components"] = ["gate", "up"]
    (edited / ADAPTER_CONFIG_NAME).write_text(json.dumps(doc))
    with pytest.raises(AdapterMismatchError, match=r"has components \['down', 'gate', 'up'\], its config says"):
        SparseNeuronModel.from_pretrained(tiny_model("llama"), edited)
    # one layer lacking a component while the config lists all three
    from safetensors.torch import save_file

    tensors = load_file(folder / ADAPTER_WEIGHTS_NAME)
    layer = next(int(k.split(".")[1]) for k in tensors)
    cut = {k: v for k, v in tensors.items() if not k.startswith(f"layers.{layer}.down.")}
    shutil.copy2(folder / ADAPTER_CONFIG_NAME, edited / ADAPTER_CONFIG_NAME)
    save_file(cut, str(edited / ADAPTER_WEIGHTS_NAME))
    with pytest.raises(AdapterMismatchError, match=rf"layer {layer} has components \['gate', 'up'\], its config says"):
        SparseNeuronModel.from_pretrained(tiny_model("llama"), edited)
