"""A neuron set: the FFN neurons of one model that belong to one language.

A neuron is addressed by ``(layer, neuron)`` where ``neuron`` indexes the intermediate
dimension (a row of ``gate_proj``/``up_proj``, a column of ``down_proj``). Fine-tuning
a neuron trains ``3 * d_model`` parameters.

Example::

    >>> import numpy as np
    >>> ns = NeuronSet("gemma-3-270m", "npi_Deva", [np.array([3, 1]), np.array([], dtype=np.int64)],
    ...                d_model=640, d_ffn=2048, refset="paper-12")
    >>> ns.n_neurons, ns.trainable_params, ns.per_layer.tolist()
    (2, 3840, [2, 0])
    >>> ns.layers[0].tolist()
    [1, 3]
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    import pandas
    import pyarrow as pa


@dataclass(frozen=True, eq=False)
class NeuronSet:
    model: str
    lang: str
    layers: Sequence[np.ndarray]
    d_model: int
    d_ffn: int
    refset: str = ""
    total_params: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        norm = []
        for idx in self.layers:
            a = np.unique(np.asarray(idx, dtype=np.int64).reshape(-1))
            if a.size and (a[0] < 0 or a[-1] >= self.d_ffn):
                raise ValueError(f"neuron index out of range [0, {self.d_ffn}) in {self.lang}")
            norm.append(a)
        object.__setattr__(self, "layers", tuple(norm))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NeuronSet):
            return NotImplemented
        return (self.model, self.lang, self.refset, self.d_model, self.d_ffn, self.content_hash) \
            == (other.model, other.lang, other.refset, other.d_model, other.d_ffn,
                other.content_hash)

    def __hash__(self) -> int:
        return hash((self.model, self.lang, self.refset, self.content_hash))

    # -- sizes -------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def per_layer(self) -> np.ndarray:
        """Number of neurons in each layer."""
        return np.array([len(a) for a in self.layers], dtype=np.int64)

    @property
    def n_neurons(self) -> int:
        return int(self.per_layer.sum())

    @property
    def trainable_params(self) -> int:
        """Parameters a sparse fine-tune trains: a gate row, an up row, a down column each."""
        return 3 * self.d_model * self.n_neurons

    @property
    def share(self) -> float | None:
        """Trainable parameters as a share of the whole model (None if the size is unknown)."""
        return self.trainable_params / self.total_params if self.total_params else None

    # -- identity ----------------------------------------------------------------
    @property
    def content_hash(self) -> str:
        """sha256 over the (layer, neuron) pairs: equal sets have equal hashes."""
        h = hashlib.sha256(f"{self.n_layers}:{self.d_ffn}|".encode())
        for layer, idx in enumerate(self.layers):
            h.update(f"{layer}:".encode())
            h.update(np.ascontiguousarray(idx, dtype="<i8").tobytes())
        return h.hexdigest()

    def global_ids(self) -> np.ndarray:
        """Flat ids ``layer * d_ffn + neuron``, sorted."""
        parts = [layer * self.d_ffn + idx for layer, idx in enumerate(self.layers)]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(layer, neuron) columns, sorted by layer then neuron."""
        layer = np.repeat(np.arange(self.n_layers, dtype=np.int32), self.per_layer)
        neuron = np.concatenate(self.layers) if self.layers else np.zeros(0, np.int64)
        return layer, neuron.astype(np.int32)

    @classmethod
    def from_pairs(cls, model: str, lang: str, layer: np.ndarray, neuron: np.ndarray, *,
                   n_layers: int, d_model: int, d_ffn: int, **kw: Any) -> "NeuronSet":
        """Build from parallel (layer, neuron) arrays (any order)."""
        layer = np.asarray(layer, dtype=np.int64)
        neuron = np.asarray(neuron, dtype=np.int64)
        if layer.size and (layer.min() < 0 or layer.max() >= n_layers):
            raise ValueError(f"layer index out of range [0, {n_layers}) in {lang}")
        layers = [neuron[layer == i] for i in range(n_layers)]
        return cls(model, lang, layers, d_model=d_model, d_ffn=d_ffn, **kw)

    def to_arrow(self) -> "pa.Table":
        """One row per neuron: ``model, refset, lang, layer, neuron`` (sorted)."""
        import pyarrow as pa

        layer, neuron = self.pairs()
        n = layer.size
        return pa.table({
            "model": pa.array([self.model] * n, pa.string()),
            "refset": pa.array([self.refset] * n, pa.string()),
            "lang": pa.array([self.lang] * n, pa.string()),
            "layer": pa.array(layer, pa.int32()),
            "neuron": pa.array(neuron, pa.int32()),
        })

    def to_pandas(self) -> "pandas.DataFrame":
        """:meth:`to_arrow` as a pandas DataFrame (needs pandas)."""
        from lape_hub.errors import require

        require("pandas", "plots", purpose="to_pandas()")
        return self.to_arrow().to_pandas()

    def histogram(self, width: int = 40) -> str:
        """Per-layer bar chart for the terminal."""
        counts = self.per_layer
        top = max(int(counts.max()) if counts.size else 0, 1)
        lines = []
        for layer, c in enumerate(counts):
            bar = "█" * int(round(width * c / top))
            lines.append(f"  L{layer:<3d} {bar:<{width}s} {c}")
        return "\n".join(lines)

    def summary(self) -> str:
        share = f"{100 * self.share:.2f} %" if self.share is not None else "n/a"
        sig = self.metadata.get("signature")
        head = [
            f"{self.model} · {self.lang}" + (f" · refset {self.refset}" if self.refset else ""),
            f"neurons: {self.n_neurons:,}   trainable parameters: {self.trainable_params:,} "
            f"({self.trainable_params / 1e6:.1f}M, {share} of the model)",
        ]
        if sig:
            head.append(f"signature: {sig}")
        return "\n".join(head + ["per layer:", self.histogram()])
