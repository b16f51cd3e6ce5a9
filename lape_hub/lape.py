"""LAPE selection: language-specific neurons from activation counts (a pure function).

Exactly the paper's reference procedure (Tang et al. 2024, ``identify.py``):

1. ``p = over_zero / n_tokens``: per layer, neuron and language, the share of the
   language's tokens where ``act_fn(gate_proj(h)) > 0``;
2. normalize ``p`` over languages (0/0 -> 0) and take its entropy (0·log 0 = 0): LAPE;
3. ``tau_filter`` = the ``filter_rate`` quantile of all ``p`` (``kthvalue`` with
   ``k = round(n * filter_rate)`` on the flattened [layers × neurons × languages] tensor);
   a neuron whose ``p`` exceeds ``tau_filter`` for no language gets entropy +inf;
4. keep the ``round(n_neurons * top_rate)`` lowest entropies over all layers;
5. ``tau_bar`` = the ``bar_rate`` quantile of all ``p``; a kept neuron belongs to language
   k when ``p_k > tau_bar`` (a neuron may belong to several languages).

Arithmetic is float32 like the reference (torch's default dtype). Where entropies tie at
the cut, the lower flat index (layer-major) wins, so results are deterministic.

Example::

    >>> import numpy as np
    >>> over_zero = np.array([[[90, 1], [50, 50], [1, 80], [0, 0]]])  # 1 layer, 4 neurons, 2 langs
    >>> r = select_lape(over_zero, np.array([100, 100]), top_rate=0.5, filter_rate=0.75,
    ...                 bar_rate=0.75)
    >>> [(ln, r.neurons(k)) for k, ln in enumerate(["aa", "bb"])]
    [('aa', [(0, 0)]), ('bb', [(0, 2)])]
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SelectionParams:
    top_rate: float = 0.05
    filter_rate: float = 0.95
    bar_rate: float = 0.95

    def __post_init__(self) -> None:
        for name in ("top_rate", "filter_rate", "bar_rate"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {v}")

    @property
    def key(self) -> str:
        """Folder-safe id of the parameters, e.g. ``top0.05-f0.95-b0.95``."""
        return f"top{self.top_rate:g}-f{self.filter_rate:g}-b{self.bar_rate:g}"

    @classmethod
    def from_key(cls, key: str) -> "SelectionParams":
        try:
            top, f, b = key.split("-")
            return cls(float(top[3:]), float(f[1:]), float(b[1:]))
        except (ValueError, IndexError):
            raise ValueError(f"not a selection key: {key!r}") from None


@dataclass(frozen=True)
class LapeResult:
    probs: np.ndarray      # [layers, neurons, langs] float32 activation probabilities
    entropy: np.ndarray    # [layers, neurons] float32; +inf where filtered out
    selected: np.ndarray   # [layers, neurons] bool: kept (lowest entropies, not filtered)
    member: np.ndarray     # [n_kept, langs] bool: kept neuron -> language membership
    kept: np.ndarray       # [n_kept, 2] int64 (layer, neuron) of the kept neurons, sorted
    tau_filter: float
    tau_bar: float
    params: SelectionParams

    def neurons(self, lang_index: int) -> list[tuple[int, int]]:
        """Sorted (layer, neuron) pairs of one language's neuron set."""
        rows = self.kept[self.member[:, lang_index]]
        return [(int(a), int(b)) for a, b in rows]

    def layers(self, lang_index: int) -> list[np.ndarray]:
        """One language's neuron set as per-layer index arrays (the paper's list format)."""
        rows = self.kept[self.member[:, lang_index]]
        return [rows[rows[:, 0] == layer, 1] for layer in range(self.probs.shape[0])]


def kth_value(flat: np.ndarray, rate: float) -> float:
    """``torch.kthvalue(flat, round(len(flat) * rate))``: the k-th smallest, 1-based."""
    k = max(1, min(len(flat), round(len(flat) * rate)))
    return float(np.partition(flat, k - 1)[k - 1])


def activation_probs(over_zero: np.ndarray, n_tokens: np.ndarray) -> np.ndarray:
    """``over_zero / n_tokens`` in float32; ``over_zero`` is [layers, neurons, langs]."""
    n = np.asarray(n_tokens, dtype=np.float32)
    if (n <= 0).any():
        raise ValueError("every language needs n_tokens > 0")
    return np.asarray(over_zero, dtype=np.float32) / n


def lape_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy over the last axis of the normalized probabilities (0/0 -> 0, 0·log 0 = 0)."""
    total = probs.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        normed = np.where(total > 0, probs / total, np.float32(0)).astype(np.float32)
        logs = np.log(np.where(normed > 0, normed, np.float32(1)))
    return -(normed * logs).sum(axis=-1, dtype=np.float32)


def select_lape(over_zero: np.ndarray, n_tokens: np.ndarray, top_rate: float = 0.05,
                filter_rate: float = 0.95, bar_rate: float = 0.95) -> LapeResult:
    """Select language-specific neurons from ``over_zero`` [layers, neurons, langs]."""
    params = SelectionParams(top_rate, filter_rate, bar_rate)
    over_zero = np.asarray(over_zero)
    if over_zero.ndim != 3:
        raise ValueError("over_zero must be [layers, neurons, langs]")
    if over_zero.shape[-1] < 2:
        raise ValueError("LAPE needs at least two languages")
    probs = activation_probs(over_zero, n_tokens)
    entropy = lape_entropy(probs)
    flat_p = probs.reshape(-1)
    tau_filter = kth_value(flat_p, filter_rate)
    entropy = np.where((probs > tau_filter).any(axis=-1), entropy, np.float32(np.inf))

    flat_e = entropy.reshape(-1)
    n_keep = round(flat_e.size * top_rate)
    order = np.argsort(flat_e, kind="stable")[:n_keep]
    order.sort()
    n_neurons = entropy.shape[1]
    kept = np.stack([order // n_neurons, order % n_neurons], axis=1).astype(np.int64)
    tau_bar = kth_value(flat_p, bar_rate)
    member = probs[kept[:, 0], kept[:, 1]] > tau_bar
    selected = np.zeros(flat_e.size, dtype=bool)
    selected[order] = np.isfinite(flat_e[order])
    return LapeResult(probs, entropy, selected.reshape(entropy.shape), member, kept,
                      tau_filter, tau_bar, params)
