"""FFN layouts on hand-built toy modules: wrapped weights, shape checks, the fused split,
trunk and layer-list discovery fallbacks, and hook bookkeeping. No transformers model:
each case builds exactly the module tree it needs."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lape_hub.errors import ArchitectureError
from lape_hub.ffn import (HookHandles, WeightRef, _glu_layout, _make_layer, _weight,
                          decoder_layers, find_ffn_layers, hook_post_activations, trunk)

D_MODEL, D_FFN = 4, 6


class Separate(nn.Module):
    def __init__(self, d_model=D_MODEL, d_ffn=D_FFN, gate_rows=None, up_rows=None):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, gate_rows or d_ffn, bias=False)
        self.up_proj = nn.Linear(d_model, up_rows or d_ffn, bias=False)
        self.down_proj = nn.Linear(d_ffn, d_model, bias=False)
        self.act_fn = nn.SiLU()

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class Fused(nn.Module):
    def __init__(self, d_model=D_MODEL, d_ffn=D_FFN, rows=None):
        super().__init__()
        self.gate_up_proj = nn.Linear(d_model, rows or 2 * d_ffn, bias=False)
        self.down_proj = nn.Linear(d_ffn, d_model, bias=False)
        self.activation_fn = nn.GELU()

    def forward(self, x):
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(self.activation_fn(gate) * up)


class Block(nn.Module):
    def __init__(self, mlp):
        super().__init__()
        self.norm = nn.LayerNorm(D_MODEL)
        self.mlp = mlp

    def forward(self, x):
        return x + self.mlp(self.norm(x))


class Trunk(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.layers = nn.ModuleList(blocks)

    def forward(self, x):
        for b in self.layers:
            x = b(x)
        return x


class Wrapped(nn.Module):
    """A PEFT-like wrapper: no ``weight`` of its own, the Linear in ``base_layer``."""

    def __init__(self, linear):
        super().__init__()
        self.base_layer = linear


def test_weight_of_plain_and_wrapped_linears():
    lin = nn.Linear(3, 5)
    assert _weight(lin) is lin.weight
    assert _weight(Wrapped(lin)) is lin.weight
    with pytest.raises(ArchitectureError, match="^Module has no 2-D weight$"):
        _weight(nn.Module())
    with pytest.raises(ArchitectureError, match="^LayerNorm has no 2-D weight$"):
        _weight(nn.LayerNorm(3))  # 1-D weight
    odd = nn.Module()
    odd.weight = "not a tensor"
    with pytest.raises(ArchitectureError, match="no 2-D weight"):
        _weight(odd)


def test_weight_ref_rows_and_parameter_rows():
    lin = nn.Linear(4, 12, bias=False)
    ref = WeightRef(lin, 6, 12, 0)
    assert ref.parameter is lin.weight
    assert torch.equal(ref.weight, lin.weight[6:12])
    assert ref.weight.data_ptr() == lin.weight[6].data_ptr()  # a view, not a copy
    assert ref.parameter_rows(torch.tensor([0, 5])).tolist() == [6, 11]
    down = WeightRef(nn.Linear(12, 4, bias=False), 0, 4, 1)
    assert down.parameter_rows(torch.tensor([0, 5])).tolist() == [0, 5]  # columns as given
    rows_2_4 = WeightRef(nn.Linear(12, 4, bias=False), 2, 4, 1)  # start is a row offset:
    assert rows_2_4.parameter_rows(torch.tensor([0, 5])).tolist() == [0, 5]  # not a column one
    assert WeightRef(Wrapped(lin), 0, 6, 0).parameter is lin.weight


def test_glu_layout_needs_every_part():
    assert _glu_layout(Separate()) == "separate"
    assert _glu_layout(Fused()) == "fused"
    for part in ("gate_proj", "up_proj", "down_proj", "act_fn"):
        m = Separate()
        delattr(m, part)
        assert _glu_layout(m) is None, part
    for part in ("gate_up_proj", "down_proj", "activation_fn"):
        m = Fused()
        delattr(m, part)
        assert _glu_layout(m) is None, part


def test_make_layer_separate():
    mlp = Separate()
    layer = _make_layer(3, "blk.3.mlp", mlp, "separate")
    assert (layer.index, layer.name, layer.layout) == (3, "blk.3.mlp", "separate")
    assert layer.mlp is mlp and layer.act is mlp.act_fn
    assert (layer.d_model, layer.d_ffn) == (D_MODEL, D_FFN)
    assert (layer.gate.module, layer.gate.start, layer.gate.stop, layer.gate.neuron_dim) == (
        mlp.gate_proj, 0, D_FFN, 0)
    assert (layer.up.module, layer.up.start, layer.up.stop, layer.up.neuron_dim) == (
        mlp.up_proj, 0, D_FFN, 0)
    assert (layer.down.module, layer.down.start, layer.down.stop, layer.down.neuron_dim) == (
        mlp.down_proj, 0, D_MODEL, 1)
    x = torch.randn(2, D_MODEL)
    torch.testing.assert_close(layer.post_activation(x), mlp.act_fn(mlp.gate_proj(x)))


def test_make_layer_fused_split():
    mlp = Fused()
    layer = _make_layer(0, "m", mlp, "fused")
    assert layer.act is mlp.activation_fn and layer.layout == "fused"
    assert (layer.gate.start, layer.gate.stop, layer.gate.neuron_dim) == (0, D_FFN, 0)
    assert layer.up.neuron_dim == 0
    assert (layer.up.start, layer.up.stop) == (D_FFN, 2 * D_FFN)
    assert layer.gate.module is layer.up.module is mlp.gate_up_proj
    assert (layer.down.stop, layer.down.neuron_dim) == (D_MODEL, 1)
    x = torch.randn(3, D_MODEL)
    by_hand = mlp.activation_fn(x @ mlp.gate_up_proj.weight[:D_FFN].T)
    torch.testing.assert_close(layer.post_activation(x), by_hand)


@pytest.mark.parametrize("mlp, layout, match", [
    (Separate(gate_rows=5), "separate", r"^m: gate \(5, 4\), up \(6, 4\) do not match down \(4, 6\)$"),
    (Separate(up_rows=7), "separate", r"^m: gate \(6, 4\), up \(7, 4\) do not match down"),
    (Fused(rows=11), "fused", r"^m: gate_up \(11, 4\) does not match down \(4, 6\)$"),
    (Fused(rows=6), "fused", "does not match down"),
])
def test_make_layer_shape_mismatch(mlp, layout, match):
    with pytest.raises(ArchitectureError, match=match):
        _make_layer(0, "m", mlp, layout)


@pytest.mark.parametrize("mlp, attr, layout", [
    (Separate(), "act_fn", "separate"), (Fused(), "activation_fn", "fused")])
def test_plain_function_activation_refused(mlp, attr, layout):
    object.__setattr__(mlp, attr, torch.nn.functional.silu)  # a function, not a module
    with pytest.raises(ArchitectureError, match="^m: the activation is a plain function"):
        _make_layer(0, "m", mlp, layout)


def test_find_ffn_layers_names_and_layer_as_ffn():
    model = Trunk([Block(Separate()), Block(Fused())])
    layers = find_ffn_layers(model)
    assert [(l.index, l.name, l.layout) for l in layers] == [
        (0, "layers.0.mlp", "separate"), (1, "layers.1.mlp", "fused")]
    bare = Trunk([Separate(), Separate()])  # the decoder layer is the GLU itself
    assert [l.name for l in find_ffn_layers(bare)] == ["layers.0", "layers.1"]


def test_find_ffn_layers_counts_glus():
    two = Block(Separate())
    two.extra = Separate()
    with pytest.raises(ArchitectureError, match=r"^Trunk: 2 GLU FFNs in decoder layer 1 \(Block\); "
                                                 r"layer 0 children: norm=LayerNorm, mlp=Separate$"):
        find_ffn_layers(Trunk([Block(Separate()), two]))
    with pytest.raises(ArchitectureError, match=r"^Trunk: no GLU FFN in decoder layer 0 \(Linear\); "
                                                 r"layer 0 children: none$"):
        find_ffn_layers(Trunk([nn.Linear(2, 2)]))
    nested = Block(nn.Sequential(Separate()))  # a GLU two levels down is not the layer's FFN
    with pytest.raises(ArchitectureError, match="no GLU FFN in decoder layer 0"):
        find_ffn_layers(Trunk([nested]))


class WithDecoder(nn.Module):
    def __init__(self, dec, error=None):
        super().__init__()
        self.dec, self.error = dec, error
        self.base_model = Trunk([Block(Separate())])

    def get_decoder(self):
        if self.error:
            raise self.error
        return self.dec


def test_trunk_fallbacks():
    inner = Trunk([Block(Separate())])
    assert trunk(WithDecoder(inner)) is inner
    for err in (AttributeError("x"), NotImplementedError()):
        m = WithDecoder(inner, err)
        assert trunk(m) is m.base_model
    none = WithDecoder(None)
    assert trunk(none) is none.base_model
    plain = Trunk([Block(Separate())])
    assert trunk(plain) is plain
    wrapper = nn.Module()
    wrapper.language_model = inner
    assert trunk(wrapper) is inner
    not_module = Trunk([Block(Separate())])
    not_module.language_model = "text"  # not a module: ignored
    assert trunk(not_module) is not_module
    with pytest.raises(ValueError):  # a non-AttributeError from get_decoder is not hidden
        trunk(WithDecoder(inner, ValueError("boom")))


def test_decoder_layers_prefers_the_layers_attribute():
    m = nn.Module()
    m.layers = nn.ModuleList([nn.Linear(1, 1) for _ in range(2)])
    m.longer = nn.ModuleList([nn.Linear(1, 1) for _ in range(5)])  # not the decoder layers
    assert decoder_layers(m) is m.layers


def test_layer_names_when_the_trunk_is_not_registered():
    inner = Trunk([Block(Separate()), Block(Separate())])

    class Outer(nn.Module):
        def get_decoder(self):
            return inner  # held outside the module tree: no registered name

    assert [l.name for l in find_ffn_layers(Outer())] == ["layers.0.mlp", "layers.1.mlp"]


def test_decoder_layers_fallback_to_longest_list():
    m = nn.Module()
    m.layers = nn.ModuleList()  # empty: not the layer list
    m.short = nn.ModuleList([nn.Linear(1, 1)])
    m.long = nn.ModuleList([nn.Linear(1, 1) for _ in range(3)])
    assert decoder_layers(m) is m.long
    m2 = nn.Module()
    m2.layers = nn.Linear(1, 1)  # not a ModuleList
    m2.blocks = nn.ModuleList([nn.Linear(1, 1)])
    assert decoder_layers(m2) is m2.blocks
    empty = nn.Module()
    with pytest.raises(ArchitectureError, match=r"^no decoder layer list in Module \(trunk Module "
                                                r"children: none\)$"):
        decoder_layers(empty)
    only_empty = nn.Module()
    only_empty.blocks = nn.ModuleList()  # an empty list is no layer list
    with pytest.raises(ArchitectureError, match="no decoder layer list"):
        decoder_layers(only_empty)
    kids = nn.Module()
    kids.a, kids.b = nn.Linear(1, 1), nn.ReLU()
    with pytest.raises(ArchitectureError, match=r"children: a=Linear, b=ReLU\)$"):
        decoder_layers(kids)


def test_hooks_attribute_shared_activation_and_remove():
    act = nn.SiLU()
    blocks = [Block(Separate()) for _ in range(3)]
    for b in blocks:
        b.mlp.act_fn = act  # one module shared by every layer
    model = Trunk(blocks)
    layers = find_ffn_layers(model)
    seen = []
    x = torch.randn(2, D_MODEL)
    with hook_post_activations(layers, lambda i, a: seen.append((i, a.shape))) as handles:
        assert isinstance(handles, HookHandles)
        model(x)
    assert seen == [(0, (2, D_FFN)), (1, (2, D_FFN)), (2, (2, D_FFN))]
    model(x)
    assert len(seen) == 3  # removed on exit
    assert not act._forward_hooks and not blocks[0].mlp._forward_pre_hooks
    h = hook_post_activations(layers[1:], lambda i, a: seen.append(i))
    model(x)
    assert seen[3:] == [-1, 1, 2]  # the shared act also runs in unhooked layer 0: -1
    h.remove()
    h.remove()  # twice is fine
    model(x)
    assert len(seen) == 6
