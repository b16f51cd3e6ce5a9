"""What fine-tuning changed: absolute weight changes per layer and projection (the paper's
Figure 5), and the down / (up, gate) ratio in the late layers (the paper saw 3-5x).

For every FFN layer and projection (gate, up, down) the change is ``|W_tuned - W_base|``.
The distribution is summarised over the entries that changed (a sparse adapter changes
only its neurons' rows and columns; over all entries its boxes would sit at zero); the
ratio uses the mean over all entries of each matrix, so a projection that changed fewer
entries counts for less. "Late layers" are the last third.

Example::

    >>> wc = adapter_weight_change("runs/finetune/gemma-3-270m/mlt_Latn/lape-sparse-0")  # doctest: +SKIP
    >>> wc.late_ratio()                                                                  # doctest: +SKIP
    1.02
    >>> plot_weight_change(wc, "weight_change.png")                                      # doctest: +SKIP
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from lape_hub.plots._figure import pyplot, save_picture, to_pandas

if TYPE_CHECKING:
    import pandas
    import pyarrow as pa
    import torch
    from torch import nn

COMPONENTS = ("gate", "up", "down")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_STATS = ("n_params", "n_changed", "mean_abs", "mean_abs_changed", "q05", "q25", "q50", "q75",
          "q95", "max_abs")


@dataclass(frozen=True)
class WeightChange:
    """``stats[name][l, c]`` for layer ``l`` and component ``COMPONENTS[c]``; names in
    ``_STATS`` (quantiles ``qXX`` and ``mean_abs_changed`` are over changed entries only)."""

    label: str
    stats: dict[str, np.ndarray]

    @property
    def n_layers(self) -> int:
        return int(self.stats["mean_abs"].shape[0])

    def late_layers(self) -> range:
        """The last third of the layers."""
        return range(self.n_layers - max(1, self.n_layers // 3), self.n_layers)

    def ratio_per_layer(self) -> np.ndarray:
        """Mean |change| of down over the mean of up's and gate's, per layer (nan: no change)."""
        m = self.stats["mean_abs"]
        denom = (m[:, 0] + m[:, 1]) / 2
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, m[:, 2] / np.where(denom > 0, denom, 1), np.nan)

    def late_ratio(self) -> float:
        """Down / mean(up, gate) of the mean |change| over the late layers together."""
        m = self.stats["mean_abs"][list(self.late_layers())]
        denom = (m[:, 0].mean() + m[:, 1].mean()) / 2
        return float(m[:, 2].mean() / denom) if denom > 0 else float("nan")

    def to_arrow(self) -> "pa.Table":
        """One row per (layer, component) with every statistic and the layer's ratio."""
        import pyarrow as pa

        n = self.n_layers
        cols: dict[str, Any] = {
            "label": pa.array([self.label] * (n * 3), pa.string()),
            "layer": pa.array(np.repeat(np.arange(n), 3), pa.int32()),
            "component": pa.array(list(COMPONENTS) * n, pa.string()),
        }
        for name in _STATS:
            v = self.stats[name].reshape(-1)
            cols[name] = pa.array(v, pa.int64() if name.startswith("n_") else pa.float64())
        cols["layer_down_over_up_gate"] = pa.array(np.repeat(self.ratio_per_layer(), 3),
                                                   pa.float64())
        return pa.table(cols)

    def to_pandas(self) -> "pandas.DataFrame":
        return to_pandas(self.to_arrow())

    @classmethod
    def from_arrow(cls, table: "pa.Table") -> "WeightChange":
        """Back from :meth:`to_arrow` (e.g. the data beside a picture, to redraw it)."""
        rows = table.to_pylist()
        n = 1 + max(r["layer"] for r in rows)
        stats = {name: np.zeros((n, 3), dtype=np.int64 if name.startswith("n_") else np.float64)
                 for name in _STATS}
        for r in rows:
            for name in _STATS:
                stats[name][r["layer"], COMPONENTS.index(r["component"])] = r[name]
        return cls(rows[0]["label"] if rows else "", stats)


def ffn_weights(model: "nn.Module") -> dict[tuple[int, str], "torch.Tensor"]:
    """Detached float32 CPU copies of every FFN projection, keyed ``(layer, component)``."""
    from lape_hub.ffn import find_ffn_layers

    out = {}
    for layer in find_ffn_layers(model):
        for comp in COMPONENTS:
            ref = getattr(layer, comp)
            out[(layer.index, comp)] = ref.weight.detach().to("cpu", dtype=_f32()).clone()
    return out


def _f32() -> Any:
    import torch

    return torch.float32


def _weights(x: "nn.Module | Mapping[tuple[int, str], Any]") -> Mapping[tuple[int, str], Any]:
    return x if isinstance(x, Mapping) else ffn_weights(x)


def weight_change(base: "nn.Module | Mapping[tuple[int, str], Any]",
                  tuned: "nn.Module | Mapping[tuple[int, str], Any]", *, label: str = "",
                  progress: bool = True) -> WeightChange:
    """Statistics of ``|tuned - base|`` per FFN layer and projection.

    ``base`` and ``tuned`` are models or :func:`ffn_weights` snapshots of the same shape.
    """
    from tqdm.auto import tqdm

    from lape_hub.errors import AdapterMismatchError

    b, t = _weights(base), _weights(tuned)
    if set(b) != set(t):
        raise AdapterMismatchError("the two models have different FFN layers")
    n_layers = 1 + max(layer for layer, _ in b)
    stats = {name: np.zeros((n_layers, 3), dtype=np.int64 if name.startswith("n_") else
                            np.float64) for name in _STATS}
    for layer, comp in tqdm(sorted(b), desc="weight change", disable=not progress):
        wb, wt = np.asarray(b[(layer, comp)], dtype=np.float32), np.asarray(t[(layer, comp)],
                                                                              dtype=np.float32)
        if wb.shape != wt.shape:
            raise AdapterMismatchError(f"layer {layer} {comp}: shapes {wb.shape} and {wt.shape}")
        d = np.abs(wt.astype(np.float64) - wb.astype(np.float64)).reshape(-1)
        changed = d[d > 0]
        c = COMPONENTS.index(comp)
        stats["n_params"][layer, c] = d.size
        stats["n_changed"][layer, c] = changed.size
        stats["mean_abs"][layer, c] = d.mean() if d.size else 0.0
        if changed.size:
            stats["mean_abs_changed"][layer, c] = changed.mean()
            qs = np.quantile(changed, QUANTILES)
            for q, v in zip(("q05", "q25", "q50", "q75", "q95"), qs):
                stats[q][layer, c] = v
            stats["max_abs"][layer, c] = changed.max()
    return WeightChange(label, stats)


def adapter_weight_change(adapter: str | os.PathLike, *, base: str | None = None,
                          progress: bool = True) -> WeightChange:
    """The change an adapter folder (any lape-hub method) makes to its base model.

    Loads the base (``base`` or the adapter's model), snapshots its FFN weights, merges the
    adapter in and compares.
    """
    from lape_hub.models import load_model
    from lape_hub.sparse_adapter import AdapterConfig, apply_adapter

    config = AdapterConfig.load(adapter)
    source = base or config.model
    model, _tok = load_model(source)
    before = ffn_weights(model)
    name = None if (base and os.path.exists(base)) else source
    merged = apply_adapter(model, adapter, model_name=name, merge=True)
    return weight_change(before, merged, label=f"{config.method} · {config.lang}",
                         progress=progress)


def merged_weight_change(merged: str | os.PathLike, base: str, *,
                         progress: bool = True) -> WeightChange:
    """The change between a merged model folder and its base (alias, repo id or folder)."""
    from lape_hub.models import load_model

    tuned, _ = load_model(merged)
    after = ffn_weights(tuned)
    del tuned
    base_model, _ = load_model(base)
    return weight_change(base_model, after, label=f"{Path(merged).name} vs {base}",
                         progress=progress)


def plot_weight_change(wc: WeightChange, png: str | os.PathLike, *, title: str | None = None,
                       data_format: str = "parquet") -> tuple[Path, Path | None]:
    """Top: per layer, boxes of |change| (5-25-50-75-95 %) for gate, up and down, over
    changed entries. Bottom: mean |change| over all entries and the down/(up, gate) ratio."""
    plt = pyplot()
    s = wc.stats
    n = wc.n_layers
    colors = {"gate": "#4c72b0", "up": "#55a868", "down": "#c44e52"}
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(max(7.0, 0.45 * n + 2), 7.2), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 2]})
    width = 0.26
    for c, comp in enumerate(COMPONENTS):
        boxes, pos = [], []
        for layer in range(n):
            if s["n_changed"][layer, c] == 0:
                continue
            boxes.append({"whislo": s["q05"][layer, c], "q1": s["q25"][layer, c],
                          "med": s["q50"][layer, c], "q3": s["q75"][layer, c],
                          "whishi": s["q95"][layer, c], "fliers": [], "label": ""})
            pos.append(layer + (c - 1) * width)
        if boxes:
            art = ax.bxp(boxes, positions=pos, widths=width * 0.9, patch_artist=True,
                         showfliers=False, manage_ticks=False)
            for patch in art["boxes"]:
                patch.set_facecolor(colors[comp])
                patch.set_alpha(0.8)
            for med in art["medians"]:
                med.set_color("black")
        ax.plot([], [], color=colors[comp], linewidth=6, label=comp)
    ax.set_yscale("log")
    ax.set_ylabel("|change| (changed entries)")
    ax.legend(fontsize=8, ncol=3, loc="upper left")
    for c, comp in enumerate(COMPONENTS):
        y = np.where(s["n_changed"][:, c] > 0, s["mean_abs"][:, c], np.nan)  # log scale: no 0
        ax2.plot(np.arange(n), y, marker="o", markersize=3, color=colors[comp],
                 label=f"{comp}: mean |change|, all entries")
    ax2.set_yscale("log")
    ax2.set_ylabel("mean |change|")
    ax2.set_xlabel("layer")
    ax2.set_xticks(np.arange(n))
    late = list(wc.late_layers())
    ax2.axvspan(late[0] - 0.5, late[-1] + 0.5, color="#eee", zorder=0)
    ratio = wc.late_ratio()
    ax2.set_title(f"late layers {late[0]}-{late[-1]}: down / mean(up, gate) = {ratio:.2f}x",
                  fontsize=9)
    ax2.legend(fontsize=7, loc="upper left")
    ax.set_title(title or f"absolute weight change per layer: {wc.label}", fontsize=10)
    fig.tight_layout()
    return save_picture(fig, png, wc.to_arrow(), data_format=data_format)
