"""FFN layout adapters: every supported family, weight handles, hooks, trunk, errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, GPT2Config, Qwen2MoeConfig

from _tiny_models import D_FFN, D_MODEL, FAMILIES, FUSED, N_LAYERS, tiny_model
from lape_hub.errors import ArchitectureError
from lape_hub.ffn import find_ffn_layers, hook_post_activations, trunk


def _mlp_inputs(model, layers, ids):
    """Run the full model once, capturing each MLP's input."""
    seen = {}
    hs = [l.mlp.register_forward_pre_hook(lambda m, a, i=l.index: seen.__setitem__(i, a[0].detach())) for l in layers]
    with torch.no_grad():
        model(input_ids=ids)
    for h in hs:
        h.remove()
    return seen


@pytest.mark.parametrize("family", FAMILIES)
def test_layers_found_for_every_family(family):
    model = tiny_model(family)
    layers = find_ffn_layers(model)
    assert [l.index for l in layers] == list(range(N_LAYERS))
    for l in layers:
        assert (l.d_model, l.d_ffn) == (D_MODEL, D_FFN)
        assert l.layout == ("fused" if family in FUSED else "separate")
        assert l.name == f"model.layers.{l.index}.mlp"
        assert l.gate.weight.shape == l.up.weight.shape == (D_FFN, D_MODEL)
        assert l.down.weight.shape == (D_MODEL, D_FFN) and l.down.neuron_dim == 1
        # handles are views of the real parameters (fine-tuning can mask their gradients)
        params = {id(p) for p in model.parameters()}
        assert id(l.gate.parameter) in params and id(l.down.parameter) in params
        assert l.gate.weight.data_ptr() == l.gate.parameter.data_ptr() + 0
    if family in FUSED:
        l0 = layers[0]
        assert l0.gate.parameter is l0.up.parameter
        assert torch.equal(l0.up.weight, l0.mlp.gate_up_proj.weight[D_FFN:])
        assert l0.up.parameter_rows(torch.tensor([0, 3])).tolist() == [D_FFN, D_FFN + 3]


@pytest.mark.parametrize("family", FAMILIES)
def test_post_activation_matches_hand_computation_and_hook(family):
    model = tiny_model(family)
    layers = find_ffn_layers(model)
    ids = torch.randint(4, 200, (2, 9))
    inputs = _mlp_inputs(model, layers, ids)
    hooked = {}
    with torch.no_grad(), hook_post_activations(layers, lambda i, a: hooked.__setitem__(i, a.clone())):
        trunk(model)(input_ids=ids, use_cache=False)
    for l in layers:
        by_hand = l.act(F.linear(inputs[l.index], l.gate.weight))  # gate rows of the weight, by hand
        torch.testing.assert_close(l.post_activation(inputs[l.index]), by_hand)
        torch.testing.assert_close(hooked[l.index], by_hand)
        # the product act*up feeds down_proj: the MLP output from the handles equals the module's
        mid = by_hand * F.linear(inputs[l.index], l.up.weight)
        torch.testing.assert_close(F.linear(mid, l.down.weight), l.mlp(inputs[l.index]))


def test_hooks_are_removed():
    model = tiny_model("llama")
    layers = find_ffn_layers(model)
    calls = []
    handles = hook_post_activations(layers, lambda i, a: calls.append(i))
    ids = torch.randint(4, 200, (1, 5))
    with torch.no_grad():
        model(input_ids=ids)
        handles.remove()
        model(input_ids=ids)
    assert calls == list(range(N_LAYERS))


def test_shared_activation_module_is_attributed_per_layer():
    model = tiny_model("qwen3")
    shared = model.model.layers[0].mlp.act_fn
    for layer in model.model.layers:
        layer.mlp.act_fn = shared
    layers = find_ffn_layers(model)
    got = []
    with torch.no_grad(), hook_post_activations(layers, lambda i, a: got.append(i)):
        model(input_ids=torch.randint(4, 200, (1, 5)))
    assert got == list(range(N_LAYERS))


def test_trunk_has_no_lm_head():
    model = tiny_model("gemma3")
    tr = trunk(model)
    assert tr is model.model and not hasattr(tr, "lm_head")
    called = []
    model.lm_head.register_forward_hook(lambda *a: called.append(1))
    with torch.no_grad():
        out = tr(input_ids=torch.randint(4, 200, (1, 5)), use_cache=False)
    assert out.last_hidden_state.shape == (1, 5, D_MODEL) and not called
    assert trunk(tr) is tr  # already a trunk


def test_architecture_error_names_the_module_tree():
    model = AutoModelForCausalLM.from_config(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64,
                                                        bos_token_id=0, eos_token_id=0))
    with pytest.raises(ArchitectureError) as err:
        find_ffn_layers(model)
    msg = str(err.value)
    assert "\n" not in msg and "GPT2LMHeadModel: no GLU FFN" in msg and "mlp=GPT2MLP" in msg


def test_mixture_of_experts_is_refused():
    cfg = Qwen2MoeConfig(hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
                         shared_expert_intermediate_size=16, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, vocab_size=64)
    with pytest.raises(ArchitectureError, match="mlp=Qwen2MoeSparseMoeBlock"):
        find_ffn_layers(AutoModelForCausalLM.from_config(cfg))


def test_no_layer_list():
    with pytest.raises(ArchitectureError, match="no decoder layer list in Linear"):
        find_ffn_layers(torch.nn.Linear(2, 2))


def test_multimodal_wrapper_uses_the_text_trunk():
    """Gemma 3 >= 4B loads as Gemma3ForConditionalGeneration: the text decoder is inside."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    cfg = Gemma3Config(
        text_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=8, vocab_size=300, sliding_window=16),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14),
        mm_tokens_per_image=4,
    )
    model = Gemma3ForConditionalGeneration(cfg)
    assert type(trunk(model)).__name__ == "Gemma3TextModel"
    assert [l.name for l in find_ffn_layers(model)] == [f"model.language_model.layers.{i}.mlp" for i in range(2)]
