"""Sparse neuron adapters: trainable deltas on one language's FFN neurons.

A language's neuron set names, per decoder layer, a few intermediate units of the GLU FFN.
Fine-tuning those neurons (paper eq. 5-6) trains their rows of ``gate_proj`` and ``up_proj``
and their columns of ``down_proj``; everything else stays frozen. This module does that
without ever copying a weight matrix: the frozen projections run as they are and a small
trainable delta is added to their *outputs*::

    gate_out[..., idx] += x @ dG.T          # dG: [k, d_model]   (index_add on the last dim)
    up_out[...,   idx] += x @ dU.T          # dU: [k, d_model]
    down_out          += h[..., idx] @ dD.T # dD: [d_model, k], h = act(gate_out) * up_out

which equals running the model with ``W_gate[idx] += dG``, ``W_up[idx] += dU`` and
``W_down[:, idx] += dD``. Gradients, and therefore optimizer state, exist only for the
deltas (``3 * d_model * k`` numbers per layer); the base weights keep ``requires_grad=False``.

The module follows peft's split of a method:

- :class:`AdapterConfig`: identity and hyperparameters; round-trips to ``lape_adapter.json``.
  Every fine-tuning method of lape-hub writes one (the sparse methods, and the peft and dense
  baselines next to their own files), so every artifact carries the same metadata and
  signature.
- :class:`SparseRowDelta` / :class:`SparseColumnDelta`: the layer-level math, wrapping one
  ``nn.Linear`` each (``base_layer``, as in peft), with ``merge``/``unmerge``.
- :class:`SparseNeuronModel`: the model-level wiring: inject into a model, save, load, merge,
  unmerge, unload.
- :func:`apply_adapter` / :func:`merge_adapter`: any lape-hub adapter folder (sparse, peft or
  dense) onto a model in memory, or merged into a full model folder.

Adapter folder of a sparse method (``lape-sparse`` or ``random``)::

    lape_adapter.json          # AdapterConfig (model, revision, refset, lang, set hash, ...)
    lape_adapter.safetensors   # layers.<i>.<gate|up|down>.indices (int64 [k]) and .delta

Example::

    >>> import numpy as np
    >>> from lape_hub.sparse_adapter import AdapterConfig, SparseNeuronModel
    >>> cfg = AdapterConfig(model="tiny", lang="mlt_Latn", method="lape-sparse")
    >>> sparse = SparseNeuronModel.inject(model, [np.array([1, 5]), np.array([2])], cfg)  # doctest: +SKIP
    >>> sparse.trainable_params                                  # 3 neurons x 3 x d_model  # doctest: +SKIP
    288
    >>> sparse.save("adapters/tiny-mlt")                                                    # doctest: +SKIP
    >>> model = apply_adapter(fresh_model, "adapters/tiny-mlt", model_name="tiny")          # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lape_hub import __version__
from lape_hub.atomic import atomic_dir, atomic_path, atomic_write_text
from lape_hub.digest import artifact_sha256
from lape_hub.errors import AdapterMismatchError, LapeHubError
from lape_hub.ffn import FfnLayer, find_ffn_layers

if TYPE_CHECKING:  # pragma: no cover
    from lape_hub.neuron_set import NeuronSet

__all__ = [
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_WEIGHTS_NAME",
    "COMPONENTS",
    "DENSE_WEIGHTS_NAME",
    "AdapterConfig",
    "SparseColumnDelta",
    "SparseNeuronModel",
    "SparseRowDelta",
    "apply_adapter",
    "artifact_sha256",
    "check_compatible",
    "format_lr",
    "merge_adapter",
    "parse_components",
]

ADAPTER_CONFIG_NAME = "lape_adapter.json"
ADAPTER_WEIGHTS_NAME = "lape_adapter.safetensors"
DENSE_WEIGHTS_NAME = "dense_weights.safetensors"
FORMAT = "lape-hub-adapter"
FORMAT_VERSION = 1

COMPONENTS: tuple[str, ...] = ("gate", "up", "down")
SPARSE_METHODS = ("lape-sparse", "random")
PEFT_METHODS = ("lora", "ia3")
DENSE_METHODS = ("full", "ffn")
METHODS = SPARSE_METHODS + PEFT_METHODS + DENSE_METHODS


def parse_components(value: str | Iterable[str]) -> tuple[str, ...]:
    """``"up,gate"`` -> ``("gate", "up")`` (canonical order, no duplicates, validated).

    >>> parse_components("down, gate")
    ('gate', 'down')
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [s.strip().lower() for s in items if s.strip()]
    bad = sorted(set(items) - set(COMPONENTS))
    if bad or not items:
        raise LapeHubError(f"components must be a non-empty subset of {','.join(COMPONENTS)}"
                           f" (got {','.join(items) or 'nothing'})")
    return tuple(c for c in COMPONENTS if c in items)


def format_lr(lr: float) -> str:
    """Learning rates as people write them: ``1e-4``, ``2.5e-5``, ``0.3``.

    >>> format_lr(1e-4), format_lr(2.5e-05), format_lr(0.3)
    ('1e-4', '2.5e-5', '0.3')
    """
    if lr == 0 or 1e-3 <= abs(lr) < 1e3:
        return f"{lr:g}"
    mant, exp = f"{lr:e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(exp)}"


# =========================================================================== config
@dataclass
class AdapterConfig:
    """Identity and hyperparameters of one fine-tuned adapter; ``lape_adapter.json``.

    ``method`` is one of ``lape-sparse`` (the language's neuron set), ``random`` (a random
    set of the same size), ``lora``, ``ia3`` (peft), ``ffn`` or ``full`` (dense).
    ``neuron_set_hash`` is the :attr:`NeuronSet.content_hash` of the set that was trained
    (for ``random``: of the random set; for ``lora``: of the set whose size its rank matches).

    >>> cfg = AdapterConfig(model="gemma-3-270m", revision="gguf-q4_k_m", refset="paper-12",
    ...                     lang="mlt_Latn", method="lape-sparse", tokens=40960,
    ...                     neuron_set_hash="ab" * 32, hyperparameters={"lr": 1e-4, "seed": 0})
    >>> cfg.signature
    'model:gemma-3-270m@gguf-q4_k_m|refset:paper-12|lang:mlt_Latn|tok:41k|method:lape-sparse|comp:gate,up,down|lr:1e-4|seed:0|set:abababababab|v:0.1.0'
    >>> AdapterConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    model: str
    lang: str
    method: str
    repo_id: str = ""
    revision: str = ""
    refset: str = ""
    model_type: str = ""
    components: tuple[str, ...] = COMPONENTS
    neuron_set_hash: str = ""
    n_neurons: int = 0
    n_layers: int = 0
    d_model: int = 0
    d_ffn: int = 0
    trainable_params: int = 0
    total_params: int = 0
    corpus: str = ""
    tokens: int = 0
    steps: int = 0
    best_step: int = 0
    best_val_loss: float | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    lape_hub_version: str = __version__
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise LapeHubError(f"unknown fine-tuning method {self.method!r}; use one of {', '.join(METHODS)}")
        self.components = parse_components(self.components) if self.method in SPARSE_METHODS else ()

    @property
    def is_sparse(self) -> bool:
        return self.method in SPARSE_METHODS

    @property
    def signature(self) -> str:
        """Canonical sacrebleu-style signature: equal signatures mean comparable adapters."""
        from lape_hub.signature import signature

        hp = self.hyperparameters
        extra: dict[str, object] = {"method": self.method}
        if self.is_sparse:
            extra["comp"] = ",".join(self.components)
        if "lr" in hp:
            extra["lr"] = format_lr(float(hp["lr"]))
        if "seed" in hp:
            extra["seed"] = hp["seed"]
        if self.method == "lora" and "lora_rank" in hp:
            extra["r"] = hp["lora_rank"]
        if self.neuron_set_hash and self.method in SPARSE_METHODS + ("lora",):
            extra["set"] = self.neuron_set_hash[:12]
        return signature(self.model, self.revision or None, refset=self.refset or None,
                         lang=self.lang, corpus=self.corpus or None,
                         tokens=self.tokens if self.tokens else None, **extra)

    @property
    def share(self) -> float | None:
        """Trainable parameters as a share of the model."""
        return self.trainable_params / self.total_params if self.total_params else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["components"] = list(self.components)
        d["signature"] = self.signature
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AdapterConfig":
        if d.get("format") != FORMAT:
            raise AdapterMismatchError(f"not a lape-hub adapter config (format {d.get('format')!r})")
        if int(d.get("format_version", 0)) > FORMAT_VERSION:
            raise AdapterMismatchError(
                f"adapter format v{d['format_version']} is newer than this lape-hub's v{FORMAT_VERSION}: upgrade lape-hub")
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["components"] = tuple(kw.get("components") or COMPONENTS)
        return cls(**kw)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``<folder>/lape_adapter.json`` (atomically); return its path."""
        path = Path(folder) / ADAPTER_CONFIG_NAME
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "AdapterConfig":
        """Read ``<folder>/lape_adapter.json`` (or the file itself)."""
        p = Path(folder)
        path = p if p.is_file() else p / ADAPTER_CONFIG_NAME
        if not path.is_file():
            raise AdapterMismatchError(f"{p} is not a lape-hub adapter (no {ADAPTER_CONFIG_NAME})")
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise AdapterMismatchError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
        return cls.from_dict(doc)


# =========================================================================== layer math
def delta_dtype(weight_dtype: torch.dtype) -> torch.dtype:
    """Deltas (and so their optimizer state) are float32 even on a bf16/fp16 base: a
    ``1e-4``-sized update vanishes in bfloat16's 8-bit mantissa.

    >>> delta_dtype(torch.bfloat16), delta_dtype(torch.float64)
    (torch.float32, torch.float64)
    """
    return torch.float32 if weight_dtype in (torch.bfloat16, torch.float16) else weight_dtype


class SparseRowDelta(nn.Module):
    """A frozen ``nn.Linear`` plus trainable deltas on some of its output rows.

    ``parts`` maps a component name to the weight rows it trains (``"gate"``/``"up"`` on
    separate projections, both on a fused ``gate_up_proj``, where up rows are offset by
    ``d_ffn``). ``neurons`` keeps the neuron indices (what an adapter file stores).
    The forward is ``base(x)`` with ``x @ delta.T`` added into the selected output columns.

    >>> lin = nn.Linear(4, 6, bias=False)
    >>> layer = SparseRowDelta(lin, {"gate": torch.tensor([1, 3])}, torch.tensor([1, 3]))
    >>> with torch.no_grad(): _ = layer.delta["gate"].fill_(0.5)
    >>> x = torch.randn(2, 4)
    >>> ref = x @ (lin.weight + torch.zeros(6, 4).index_add(0, torch.tensor([1, 3]), torch.full((2, 4), 0.5))).T
    >>> torch.allclose(layer(x), ref, atol=1e-6)
    True
    """

    def __init__(self, base_layer: nn.Linear, parts: dict[str, torch.Tensor], neurons: torch.Tensor):
        super().__init__()
        self.base_layer = base_layer
        w = base_layer.weight
        self.parts = tuple(parts)
        self.register_buffer("neurons", neurons.to(device=w.device, dtype=torch.long), persistent=False)
        for name, rows in parts.items():
            self.register_buffer(f"rows_{name}", rows.to(device=w.device, dtype=torch.long), persistent=False)
        self.delta = nn.ParameterDict({
            name: nn.Parameter(torch.zeros(len(rows), w.shape[1], dtype=delta_dtype(w.dtype), device=w.device))
            for name, rows in parts.items()
        })
        self.merged = False

    def rows(self, name: str) -> torch.Tensor:
        return getattr(self, f"rows_{name}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if self.merged:
            return out
        for name in self.parts:
            d = self.delta[name]
            # in place on the frozen projection's output: no [d_ffn, d_model] tensor is made
            out = out.index_add_(-1, self.rows(name), F.linear(x, d.to(x.dtype)))
        return out

    @torch.no_grad()
    def merge(self) -> None:
        """Add the deltas into the base weight (forward then skips the delta path)."""
        if not self.merged:
            for name in self.parts:
                self.base_layer.weight.index_add_(0, self.rows(name), self.delta[name].to(self.base_layer.weight.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the deltas from the base weight again."""
        if self.merged:
            for name in self.parts:
                self.base_layer.weight.index_add_(0, self.rows(name), -self.delta[name].to(self.base_layer.weight.dtype))
            self.merged = False

    @torch.no_grad()
    def decay_(self, factor: float) -> None:
        """Decoupled weight decay of the *effective* rows ``W[rows] + delta`` toward zero.

        AdamW on the real rows (the paper's setup) shrinks ``W[rows]`` by ``(1 - lr * wd)``
        each step; with ``W`` frozen that is ``delta <- (1 - f) * delta - f * W[rows]``.
        """
        for name in self.parts:
            d = self.delta[name]
            d.mul_(1.0 - factor).sub_(self.base_layer.weight.index_select(0, self.rows(name)).to(d.dtype), alpha=factor)

    def extra_repr(self) -> str:
        return ", ".join(f"{n}: {len(self.rows(n))} rows" for n in self.parts)


class SparseColumnDelta(nn.Module):
    """A frozen ``down_proj`` plus a trainable delta on the input columns of some neurons.

    ``forward(h) = base(h) + h[..., neurons] @ delta.T`` with ``delta`` ``[d_model, k]``.

    >>> lin = nn.Linear(6, 4, bias=False)
    >>> layer = SparseColumnDelta(lin, torch.tensor([0, 5]))
    >>> with torch.no_grad(): _ = layer.delta.fill_(0.25)
    >>> h = torch.randn(3, 6)
    >>> w = lin.weight.detach().clone(); w[:, [0, 5]] += 0.25
    >>> torch.allclose(layer(h), h @ w.T, atol=1e-6)
    True
    """

    parts = ("down",)

    def __init__(self, base_layer: nn.Linear, neurons: torch.Tensor):
        super().__init__()
        self.base_layer = base_layer
        w = base_layer.weight
        self.register_buffer("neurons", neurons.to(device=w.device, dtype=torch.long), persistent=False)
        self.delta = nn.Parameter(torch.zeros(w.shape[0], len(neurons), dtype=delta_dtype(w.dtype), device=w.device))
        self.merged = False

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(h)
        if self.merged:
            return out
        return out.add_(F.linear(h.index_select(-1, self.neurons), self.delta.to(h.dtype)))

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base_layer.weight.index_add_(1, self.neurons, self.delta.to(self.base_layer.weight.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base_layer.weight.index_add_(1, self.neurons, -self.delta.to(self.base_layer.weight.dtype))
            self.merged = False

    @torch.no_grad()
    def decay_(self, factor: float) -> None:
        """Decay the effective columns ``W[:, neurons] + delta`` toward zero (see SparseRowDelta)."""
        self.delta.mul_(1.0 - factor).sub_(
            self.base_layer.weight.index_select(1, self.neurons).to(self.delta.dtype), alpha=factor)

    def extra_repr(self) -> str:
        return f"down: {len(self.neurons)} columns"


_Wrapper = (SparseRowDelta, SparseColumnDelta)


# =========================================================================== wiring
def _child_name(parent: nn.Module, child: nn.Module) -> str:
    for name, mod in parent.named_children():
        if mod is child:
            return name
    raise LapeHubError(f"{type(child).__name__} is not a direct child of {type(parent).__name__}")


def _unique_params(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


@dataclass
class _LayerWrap:
    index: int
    mlp: nn.Module
    neurons: np.ndarray
    row: list[tuple[str, SparseRowDelta]]  # (attribute on mlp, wrapper)
    col: tuple[str, SparseColumnDelta] | None


class SparseNeuronModel:
    """The sparse neuron adapter wired into a model (modified in place).

    Build it with :meth:`inject` (fresh zero deltas) or :meth:`from_pretrained` (an adapter
    folder); then train :meth:`parameters`, :meth:`save`, :meth:`merge`/:meth:`unmerge`, or
    :meth:`merge_and_unload` to get a plain model back.

    >>> sparse = SparseNeuronModel.inject(model, neuron_set.layers, cfg)  # doctest: +SKIP
    >>> opt = torch.optim.AdamW(sparse.parameters(), lr=1e-4)             # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, config: AdapterConfig, layers: list[_LayerWrap]):
        self.model = model
        self.config = config
        self._layers = layers

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def inject(cls, model: nn.Module, neurons: Sequence[np.ndarray | Sequence[int] | torch.Tensor],
               config: AdapterConfig) -> "SparseNeuronModel":
        """Wrap the FFN projections of every layer that has neurons; all base weights frozen.

        ``neurons[i]`` are layer ``i``'s neuron indices (e.g. ``NeuronSet.layers``). The
        config's shape fields (``n_layers``, ``d_model``, ``d_ffn``, ``n_neurons``,
        ``trainable_params``, ``total_params``) are filled in from the model.
        """
        ffn = find_ffn_layers(model)
        if any(isinstance(m, _Wrapper) for m in model.modules()):
            raise LapeHubError("the model already has a sparse neuron adapter; unload it first")
        if len(neurons) != len(ffn):
            raise AdapterMismatchError(
                f"neuron set has {len(neurons)} layers, the model has {len(ffn)} FFN layers")
        for p in model.parameters():
            p.requires_grad_(False)
        total = _unique_params(model)
        wraps: list[_LayerWrap] = []
        n_neurons = 0
        for layer, idx in zip(ffn, neurons):
            idx = np.unique(np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64))
            if idx.size and (idx[0] < 0 or idx[-1] >= layer.d_ffn):
                raise AdapterMismatchError(f"layer {layer.index}: neuron index out of range [0, {layer.d_ffn})")
            if idx.size == 0:
                continue
            n_neurons += int(idx.size)
            wraps.append(cls._wrap_layer(layer, idx, config.components))
        cfg = config
        cfg.n_layers, cfg.d_model, cfg.d_ffn = len(ffn), ffn[0].d_model, ffn[0].d_ffn
        cfg.model_type = cfg.model_type or _model_type(model)
        cfg.n_neurons = n_neurons
        cfg.total_params = cfg.total_params or total
        out = cls(model, cfg, wraps)
        cfg.trainable_params = out.trainable_params
        return out

    @staticmethod
    def _wrap_layer(layer: FfnLayer, idx: np.ndarray, components: Sequence[str]) -> _LayerWrap:
        neurons = torch.from_numpy(idx)
        by_module: dict[int, tuple[nn.Module, dict[str, torch.Tensor]]] = {}
        for comp in ("gate", "up"):
            if comp not in components:
                continue
            ref = getattr(layer, comp)
            rows = ref.parameter_rows(neurons)
            by_module.setdefault(id(ref.module), (ref.module, {}))[1][comp] = rows
        row = []
        for module, parts in by_module.values():
            name = _child_name(layer.mlp, module)
            wrapper = SparseRowDelta(module, parts, neurons)
            setattr(layer.mlp, name, wrapper)
            row.append((name, wrapper))
        col = None
        if "down" in components:
            name = _child_name(layer.mlp, layer.down.module)
            wrapper = SparseColumnDelta(layer.down.module, neurons)
            setattr(layer.mlp, name, wrapper)
            col = (name, wrapper)
        return _LayerWrap(layer.index, layer.mlp, idx, row, col)

    @classmethod
    def from_pretrained(cls, model: nn.Module, folder: str | os.PathLike, *,
                        model_name: str | None = None, revision: str | None = None,
                        neuron_set: "NeuronSet | None" = None) -> "SparseNeuronModel":
        """Inject the adapter saved in ``folder`` into ``model`` (after :func:`check_compatible`)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        config = AdapterConfig.load(folder)
        if not config.is_sparse:
            raise AdapterMismatchError(f"{folder} holds a {config.method!r} adapter, not a sparse one; use apply_adapter")
        check_compatible(config, model, model_name=model_name, revision=revision, neuron_set=neuron_set)
        path = folder / ADAPTER_WEIGHTS_NAME
        if not path.is_file():
            raise AdapterMismatchError(f"{folder} has no {ADAPTER_WEIGHTS_NAME}")
        tensors = load_file(str(path))
        neurons = _neurons_from_tensors(tensors, config)
        stored_hash = _neuron_set_hash(neurons, config)
        if config.neuron_set_hash and stored_hash != config.neuron_set_hash:
            raise AdapterMismatchError(
                f"{path}: its neuron indices (set {stored_hash[:12]}) do not match its config "
                f"(set {config.neuron_set_hash[:12]}); the file is corrupt or was edited")
        out = cls.inject(model, neurons, config)
        out.load_tensors(tensors)
        return out

    # -- introspection ---------------------------------------------------------------------
    def wrappers(self) -> Iterable[tuple[int, str, nn.Module]]:
        """(layer, component, wrapper) triples, in layer order."""
        for lw in self._layers:
            for _, w in lw.row:
                for part in w.parts:
                    yield lw.index, part, w
            if lw.col is not None:
                yield lw.index, "down", lw.col[1]

    def parameters(self) -> list[nn.Parameter]:
        """The trainable deltas (what the optimizer gets)."""
        out: list[nn.Parameter] = []
        for lw in self._layers:
            for _, w in lw.row:
                out.extend(w.delta[p] for p in w.parts)
            if lw.col is not None:
                out.append(lw.col[1].delta)
        return out

    @property
    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def neurons(self) -> list[np.ndarray]:
        """Per-layer neuron indices (empty arrays for untouched layers)."""
        out = [np.zeros(0, np.int64) for _ in range(self.config.n_layers)]
        for lw in self._layers:
            out[lw.index] = lw.neurons
        return out

    @property
    def neuron_set_hash(self) -> str:
        return _neuron_set_hash(self.neurons, self.config)

    # -- state ---------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """The adapter file's content: ``layers.<i>.<comp>.indices`` / ``.delta`` per layer."""
        out: dict[str, torch.Tensor] = {}
        for layer, part, w in self.wrappers():
            out[f"layers.{layer}.{part}.indices"] = w.neurons.detach().cpu().clone()
            delta = w.delta[part] if isinstance(w, SparseRowDelta) else w.delta
            out[f"layers.{layer}.{part}.delta"] = delta.detach().cpu().contiguous().clone()
        return out

    @torch.no_grad()
    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy deltas from an adapter file's tensors; indices and shapes must match."""
        expected = set()
        for layer, part, w in self.wrappers():
            key = f"layers.{layer}.{part}"
            expected |= {f"{key}.indices", f"{key}.delta"}
            if f"{key}.delta" not in tensors:
                raise AdapterMismatchError(f"adapter lacks {key}.delta")
            if not torch.equal(tensors[f"{key}.indices"].long().cpu(), w.neurons.cpu()):
                raise AdapterMismatchError(f"adapter {key}: neuron indices differ from the injected set")
            dst = w.delta[part] if isinstance(w, SparseRowDelta) else w.delta
            src = tensors[f"{key}.delta"]
            if tuple(src.shape) != tuple(dst.shape):
                raise AdapterMismatchError(f"adapter {key}.delta has shape {tuple(src.shape)}, expected {tuple(dst.shape)}")
            was_merged = w.merged
            w.unmerge()
            dst.copy_(src)
            if was_merged:
                w.merge()
        extra = sorted(set(tensors) - expected)
        if extra:
            raise AdapterMismatchError(f"adapter has tensors for components not injected: {', '.join(extra[:3])}")

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``lape_adapter.json`` + ``lape_adapter.safetensors`` into ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.config.neuron_set_hash = self.neuron_set_hash
        self.config.trainable_params = self.trainable_params
        with atomic_path(folder / ADAPTER_WEIGHTS_NAME) as tmp:
            save_file(self.tensors(), str(tmp), metadata={"format": FORMAT, "signature": self.config.signature})
        self.config.save(folder)
        return folder

    # -- merging ---------------------------------------------------------------------------
    def _all(self) -> Iterable[nn.Module]:
        for lw in self._layers:
            yield from (w for _, w in lw.row)
            if lw.col is not None:
                yield lw.col[1]

    def merge(self) -> None:
        """Fold the deltas into the base weights (the model then runs at plain speed)."""
        for w in self._all():
            w.merge()

    def unmerge(self) -> None:
        for w in self._all():
            w.unmerge()

    def decay_(self, factor: float) -> None:
        """Decoupled weight decay of the effective trained rows/columns (see SparseRowDelta)."""
        for w in self._all():
            w.decay_(factor)

    def unload(self) -> nn.Module:
        """Put the original ``nn.Linear`` modules back (deltas are dropped unless merged)."""
        for lw in self._layers:
            for name, w in lw.row:
                setattr(lw.mlp, name, w.base_layer)
            if lw.col is not None:
                setattr(lw.mlp, lw.col[0], lw.col[1].base_layer)
        self._layers = []
        return self.model

    def merge_and_unload(self) -> nn.Module:
        """Merge, then unwrap: a plain transformers model that ``save_pretrained`` can write."""
        self.merge()
        return self.unload()


def _neurons_from_tensors(tensors: dict[str, torch.Tensor], config: AdapterConfig) -> list[np.ndarray]:
    out = [np.zeros(0, np.int64) for _ in range(config.n_layers)]
    comps: dict[int, set[str]] = {}
    for key, t in tensors.items():
        parts = key.split(".")
        if len(parts) != 4 or parts[0] != "layers" or parts[2] not in COMPONENTS or parts[3] not in ("indices", "delta"):
            raise AdapterMismatchError(f"unexpected tensor {key!r} in adapter")
        layer = int(parts[1])
        if not 0 <= layer < config.n_layers:
            raise AdapterMismatchError(f"adapter tensor {key!r}: layer out of range [0, {config.n_layers})")
        if parts[3] != "indices":
            continue
        idx = t.long().numpy()
        if out[layer].size and not np.array_equal(out[layer], idx):
            raise AdapterMismatchError(f"adapter layer {layer}: components disagree on the neuron indices")
        out[layer] = idx
        comps.setdefault(layer, set()).add(parts[2])
    want = set(config.components)
    for layer, got in comps.items():
        if got != want:
            raise AdapterMismatchError(
                f"adapter layer {layer} has components {sorted(got)}, its config says {sorted(want)}")
    return out


def _neuron_set_hash(neurons: Sequence[np.ndarray], config: AdapterConfig) -> str:
    from lape_hub.neuron_set import NeuronSet

    return NeuronSet(config.model, config.lang, list(neurons), d_model=config.d_model,
                     d_ffn=config.d_ffn).content_hash


# =========================================================================== any adapter
def check_compatible(config: AdapterConfig, model: nn.Module, *, model_name: str | None = None,
                     revision: str | None = None, neuron_set: "NeuronSet | None" = None) -> None:
    """Refuse (:class:`AdapterMismatchError`, one line) an adapter made for another model,
    revision or neuron set.

    ``model_name`` (a registry alias or repo id) and ``revision`` describe the model the
    adapter is applied to; the FFN shape of ``model`` is always checked.

    >>> check_compatible(cfg, model, model_name="llama-3.1-8b")      # doctest: +SKIP
    Traceback (most recent call last):
    lape_hub.errors.AdapterMismatchError: adapter was made for gemma-3-270m, not llama-3.1-8b
    """
    if model_name is not None and not _same_model(config, model_name):
        raise AdapterMismatchError(f"adapter was made for {config.model}, not {model_name}")
    if revision is not None and config.revision and revision != config.revision:
        raise AdapterMismatchError(
            f"adapter was made for {config.model}@{config.revision}, not revision {revision}")
    got_type = _model_type(model)
    if config.model_type and got_type and got_type != config.model_type:
        raise AdapterMismatchError(
            f"adapter was made for {config.model} (a {config.model_type} model), not a {got_type} model")
    if config.n_layers:
        ffn = find_ffn_layers(model)
        got = (len(ffn), ffn[0].d_model, ffn[0].d_ffn)
        want = (config.n_layers, config.d_model, config.d_ffn)
        if got != want:
            raise AdapterMismatchError(
                f"adapter was made for {config.model} ({want[0]} layers, d_model {want[1]}, d_ffn {want[2]}); "
                f"this model has {got[0]} layers, d_model {got[1]}, d_ffn {got[2]}")
    if neuron_set is not None and config.neuron_set_hash:
        if neuron_set.content_hash != config.neuron_set_hash:
            raise AdapterMismatchError(
                f"adapter was trained on neuron set {config.neuron_set_hash[:12]} "
                f"({config.model} · {config.lang} · {config.refset or 'no refset'}), not on the given set "
                f"{neuron_set.content_hash[:12]} ({neuron_set.model} · {neuron_set.lang} · {neuron_set.refset or 'no refset'})")


def _model_type(model: nn.Module) -> str:
    """``model.config.model_type`` (through peft wrappers), or "" when unknown."""
    cfg = getattr(model, "config", None)
    if cfg is None and hasattr(model, "get_base_model"):
        cfg = getattr(model.get_base_model(), "config", None)
    return str(getattr(cfg, "model_type", "") or "")


def _same_model(config: AdapterConfig, name: str) -> bool:
    names = {config.model.lower(), config.repo_id.lower()} - {""}
    key = name.strip().lower()
    if key in names:
        return True
    try:
        from lape_hub.registry import resolve_model

        spec = resolve_model(name)
    except LapeHubError:
        return False
    return bool({spec.alias, spec.repo_id.lower()} & names)


def apply_adapter(model: nn.Module, folder: str | os.PathLike, *, model_name: str | None = None,
                  revision: str | None = None, neuron_set: "NeuronSet | None" = None,
                  merge: bool = False) -> nn.Module:
    """Add the adapter in ``folder`` (any lape-hub method) to ``model`` in memory.

    Returns the module to run: ``model`` itself for sparse and dense adapters (a sparse one
    stays a separate delta path unless ``merge``), a ``PeftModel`` for peft adapters (the
    merged base model with ``merge``). Mismatches raise :class:`AdapterMismatchError`.

    >>> model, tok = load_model("gemma-3-270m")                                  # doctest: +SKIP
    >>> model = apply_adapter(model, "runs/mlt", model_name="gemma-3-270m")      # doctest: +SKIP
    """
    folder = Path(folder)
    config = AdapterConfig.load(folder)
    if config.is_sparse:
        sparse = SparseNeuronModel.from_pretrained(model, folder, model_name=model_name,
                                                   revision=revision, neuron_set=neuron_set)
        return sparse.merge_and_unload() if merge else sparse.model
    check_compatible(config, model, model_name=model_name, revision=revision)
    if config.method in PEFT_METHODS:
        from peft import PeftModel

        if not (folder / "adapter_config.json").is_file():
            raise AdapterMismatchError(f"{folder} has no peft adapter_config.json")
        pm = PeftModel.from_pretrained(model, str(folder))
        return pm.merge_and_unload() if merge else pm
    return _apply_dense(model, folder)


@torch.no_grad()
def _apply_dense(model: nn.Module, folder: Path) -> nn.Module:
    from safetensors.torch import load_file

    path = folder / DENSE_WEIGHTS_NAME
    if not path.is_file():
        raise AdapterMismatchError(f"{folder} has no {DENSE_WEIGHTS_NAME}")
    for name, t in load_file(str(path)).items():
        try:
            p = model.get_parameter(name)
        except AttributeError:
            raise AdapterMismatchError(f"adapter weight {name!r} has no parameter in this model") from None
        if p.shape != t.shape:
            raise AdapterMismatchError(f"adapter weight {name!r} has shape {tuple(t.shape)}, the model {tuple(p.shape)}")
        p.copy_(t)
    return model


def merge_adapter(folder: str | os.PathLike, out_dir: str | os.PathLike, *, base: str | None = None,
                  dtype: str = "float32") -> Path:
    """Write a full model folder (``save_pretrained`` + tokenizer) with the adapter merged in.

    ``base`` defaults to the adapter's model (loaded with :func:`lape_hub.models.load_model`);
    a different alias, repo id or local folder is checked for compatibility. The adapter's
    ``lape_adapter.json`` is copied next to the weights as provenance.
    The merge runs in float32 (a 1e-4 delta added to a bfloat16 weight would mostly round
    away); ``dtype`` is what is written: ``float32`` or ``bfloat16``.

    >>> merge_adapter("runs/mlt", "merged/gemma-3-270m-mlt")                     # doctest: +SKIP
    PosixPath('merged/gemma-3-270m-mlt')
    """
    from lape_hub.models import load_model

    folder, out_dir = Path(folder), Path(out_dir)
    config = AdapterConfig.load(folder)
    source = base or config.model
    if dtype not in ("float32", "bfloat16"):
        raise LapeHubError(f"unknown dtype {dtype!r}; use float32 or bfloat16")
    model, tok = load_model(source, dtype="float32")
    name = None if (base and os.path.exists(base)) else source
    merged = apply_adapter(model, folder, model_name=name, merge=True)
    merged = merged.to(getattr(torch, dtype))
    with atomic_dir(out_dir) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        shutil.copy2(folder / ADAPTER_CONFIG_NAME, tmp / ADAPTER_CONFIG_NAME)
    return out_dir


