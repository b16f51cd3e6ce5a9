"""GLU feed-forward (FFN) layouts of decoder LLMs, found from the module tree (not model names).

A GLU FFN computes ``down(act(gate(x)) * up(x))``. Neuron ``i`` of a layer is row ``i`` of the
gate and up projections and column ``i`` of the down projection. Two layouts are known:

- ``"separate"``: ``gate_proj``, ``up_proj``, ``down_proj`` + ``act_fn`` (Llama, Mistral,
  Gemma 2/3, Qwen 2/3, Cohere/Aya, ...);
- ``"fused"``: ``gate_up_proj`` (gate rows first, then up rows) + ``down_proj`` +
  ``activation_fn`` (Phi-3).

Example::

    >>> from lape_hub.ffn import find_ffn_layers, trunk           # doctest: +SKIP
    >>> layers = find_ffn_layers(model)                             # doctest: +SKIP
    >>> layers[0].layout, layers[0].d_model, layers[0].d_ffn        # doctest: +SKIP
    ('separate', 640, 2048)
    >>> handles = hook_post_activations(layers, lambda i, a: print(i, a.shape))  # doctest: +SKIP
    >>> trunk(model)(input_ids=ids, use_cache=False); handles.remove()          # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from lape_hub.errors import ArchitectureError

__all__ = [
    "FfnLayer",
    "HookHandles",
    "WeightRef",
    "decoder_layers",
    "find_ffn_layers",
    "hook_post_activations",
    "trunk",
]


def _weight(linear: nn.Module) -> torch.Tensor:
    """The weight of a Linear, also when wrapped (e.g. PEFT's ``base_layer``)."""
    w = getattr(linear, "weight", None)
    if w is None and hasattr(linear, "base_layer"):
        w = linear.base_layer.weight
    if not isinstance(w, torch.Tensor) or w.ndim != 2:
        raise ArchitectureError(f"{type(linear).__name__} has no 2-D weight")
    return w


@dataclass(frozen=True)
class WeightRef:
    """The neurons' slice of one projection: rows ``start:stop`` of ``module.weight``.

    ``neuron_dim`` is the weight axis indexed by neuron: 0 for gate/up (``[d_ffn, d_model]``),
    1 for down (``[d_model, d_ffn]``). For a fused ``gate_up_proj`` the gate is rows
    ``0:d_ffn`` and up is rows ``d_ffn:2*d_ffn`` of the same parameter.

    >>> lin = nn.Linear(4, 6, bias=False)
    >>> WeightRef(lin, 3, 6, 0).weight.shape
    torch.Size([3, 4])
    """

    module: nn.Module
    start: int
    stop: int
    neuron_dim: int

    @property
    def parameter(self) -> torch.Tensor:
        """The whole weight parameter (what an optimizer or gradient mask sees)."""
        return _weight(self.module)

    @property
    def weight(self) -> torch.Tensor:
        """A view of this projection's rows (shares storage with :attr:`parameter`)."""
        return self.parameter[self.start : self.stop]

    def parameter_rows(self, neurons: torch.Tensor) -> torch.Tensor:
        """Indices into ``parameter`` along ``neuron_dim`` for the given neuron indices."""
        return neurons + self.start if self.neuron_dim == 0 else neurons


@dataclass(frozen=True)
class FfnLayer:
    """One decoder layer's GLU FFN and how to reach its neurons.

    ``act`` is the activation module: its output is the post-activation gate value
    ``act(gate(x))`` (``[..., d_ffn]``). ``down.module`` consumes ``act(gate(x)) * up(x)``,
    the per-neuron intermediate values (hook its input to read or zero neurons).
    """

    index: int
    name: str
    mlp: nn.Module
    layout: str
    act: nn.Module
    gate: WeightRef
    up: WeightRef
    down: WeightRef
    d_model: int
    d_ffn: int

    def post_activation(self, x: torch.Tensor) -> torch.Tensor:
        """``act(gate(x))`` for MLP inputs ``x`` (``[..., d_model]``), computed directly.

        >>> layer.post_activation(h).shape                         # doctest: +SKIP
        torch.Size([2, 7, 2048])
        """
        if self.layout == "separate":
            return self.act(self.mlp.gate_proj(x))
        gate, _ = self.mlp.gate_up_proj(x).chunk(2, dim=-1)
        return self.act(gate)


def _glu_layout(m: nn.Module) -> str | None:
    if all(hasattr(m, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn")):
        return "separate"
    if all(hasattr(m, a) for a in ("gate_up_proj", "down_proj", "activation_fn")):
        return "fused"
    return None


def _make_layer(index: int, name: str, mlp: nn.Module, layout: str) -> FfnLayer:
    down = _weight(mlp.down_proj)
    d_model, d_ffn = down.shape
    if layout == "separate":
        gate, up = _weight(mlp.gate_proj), _weight(mlp.up_proj)
        if gate.shape != (d_ffn, d_model) or up.shape != (d_ffn, d_model):
            raise ArchitectureError(
                f"{name}: gate {tuple(gate.shape)}, up {tuple(up.shape)} do not match down "
                f"{tuple(down.shape)}"
            )
        g, u, act = WeightRef(mlp.gate_proj, 0, d_ffn, 0), WeightRef(mlp.up_proj, 0, d_ffn, 0), mlp.act_fn
    else:
        gu = _weight(mlp.gate_up_proj)
        if gu.shape != (2 * d_ffn, d_model):
            raise ArchitectureError(f"{name}: gate_up {tuple(gu.shape)} does not match down {tuple(down.shape)}")
        g = WeightRef(mlp.gate_up_proj, 0, d_ffn, 0)
        u = WeightRef(mlp.gate_up_proj, d_ffn, 2 * d_ffn, 0)
        act = mlp.activation_fn
    if not isinstance(act, nn.Module):
        raise ArchitectureError(f"{name}: the activation is a plain function, not a module; cannot hook it")
    return FfnLayer(index, name, mlp, layout, act, g, u, WeightRef(mlp.down_proj, 0, d_model, 1), d_model, d_ffn)


def trunk(model: nn.Module) -> nn.Module:
    """The decoder trunk (embeddings + layers + final norm, no LM head) of a causal LM.

    Calling it runs every layer without computing vocabulary logits, e.g.
    ``trunk(model)(input_ids=ids, attention_mask=mask, use_cache=False)``.

    >>> type(trunk(model)).__name__                               # doctest: +SKIP
    'Gemma3TextModel'
    """
    dec = None
    if hasattr(model, "get_decoder"):
        try:
            dec = model.get_decoder()
        except (AttributeError, NotImplementedError):
            dec = None
    if dec is None:
        dec = getattr(model, "base_model", model)
    # Multimodal wrappers (e.g. Gemma3ForConditionalGeneration) keep the text trunk inside.
    lm = getattr(dec, "language_model", None)
    if isinstance(lm, nn.Module):
        dec = lm
    return dec


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder layers: the trunk's ``layers`` or else its longest ``ModuleList``."""
    tr = trunk(model)
    layers = getattr(tr, "layers", None)
    if isinstance(layers, nn.ModuleList) and len(layers) > 0:
        return layers
    lists = [m for m in tr.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        kids = ", ".join(f"{n}={type(c).__name__}" for n, c in tr.named_children()) or "none"
        raise ArchitectureError(
            f"no decoder layer list in {type(model).__name__} (trunk {type(tr).__name__} children: {kids})"
        )
    return max(lists, key=len)


def find_ffn_layers(model: nn.Module) -> list[FfnLayer]:
    """One :class:`FfnLayer` per decoder layer, in layer order.

    Raises :class:`~lape_hub.errors.ArchitectureError` (one line naming the module tree seen)
    when a decoder layer has no GLU FFN as a direct child (e.g. GPT-2's ``c_fc``/``c_proj``
    MLP, or a mixture-of-experts block) or more than one.

    >>> [l.d_ffn for l in find_ffn_layers(model)][:2]             # doctest: +SKIP
    [2048, 2048]
    """
    layers = decoder_layers(model)
    prefix = {id(m): n for n, m in model.named_modules()}
    out: list[FfnLayer] = []
    for i, layer in enumerate(layers):
        # The FFN is the layer itself or a direct child: a GLU nested deeper (e.g. the
        # shared expert of a mixture-of-experts block) is not the layer's FFN.
        found = [(n, m, lay) for n, m in [("", layer), *layer.named_children()] if (lay := _glu_layout(m))]
        if len(found) != 1:
            kids = ", ".join(f"{n}={type(c).__name__}" for n, c in layers[0].named_children())
            what = "no GLU FFN" if not found else f"{len(found)} GLU FFNs"
            raise ArchitectureError(
                f"{type(model).__name__}: {what} in decoder layer {i} ({type(layer).__name__}); "
                f"layer 0 children: {kids or 'none'}"
            )
        sub, mlp, lay = found[0]
        base = prefix.get(id(layer), f"layers.{i}")
        out.append(_make_layer(i, f"{base}.{sub}" if sub else base, mlp, lay))
    return out


class HookHandles:
    """Removable forward hooks; also a context manager that removes them on exit."""

    def __init__(self, handles: Sequence[torch.utils.hooks.RemovableHandle]):
        self._handles = list(handles)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> "HookHandles":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def hook_post_activations(
    layers: Sequence[FfnLayer], fn: Callable[[int, torch.Tensor], None]
) -> HookHandles:
    """Call ``fn(layer_index, act(gate(x)))`` every time a layer's activation runs.

    Works when the activation module is shared between layers too: a pre-hook on each MLP
    records which layer is running.

    >>> with hook_post_activations(layers, lambda i, a: seen.append(i)):  # doctest: +SKIP
    ...     trunk(model)(input_ids=ids, use_cache=False)
    """
    current = [-1]
    handles = []
    for layer in layers:
        def pre(_m: nn.Module, _args: object, idx: int = layer.index) -> None:
            current[0] = idx

        handles.append(layer.mlp.register_forward_pre_hook(pre))
    for act in {id(l.act): l.act for l in layers}.values():
        def post(_m: nn.Module, _args: object, out: torch.Tensor) -> None:
            fn(current[0], out)

        handles.append(act.register_forward_hook(post))
    return HookHandles(handles)
