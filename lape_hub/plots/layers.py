"""Where a language's neurons sit: neurons per layer (the paper's Figure 2).

One language draws as bars; many draw as a heatmap (languages x layers) ordered by
family (``registry/languages.toml``), so related languages sit in adjacent rows.

Example::

    >>> from lape_hub.catalog import Catalog
    >>> data = layer_counts(Catalog(), "gemma-3-270m", "paper-12", langs=["mt"])  # doctest: +SKIP
    >>> data.counts[0].tolist()[-4:]                                               # doctest: +SKIP
    [23, 41, 52, 75]
    >>> plot_layers(data, "mlt_layers.png")                                        # doctest: +SKIP
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from lape_hub.catalog import DEFAULT_SELECTION
from lape_hub.plots._figure import label_size, pyplot, save_picture, to_pandas

if TYPE_CHECKING:
    import pandas
    import pyarrow as pa

    from lape_hub.catalog import Catalog

ORDERS = ("family", "given", "code")


@dataclass(frozen=True)
class LayerCounts:
    """``counts[i, l]``: neurons of ``langs[i]``'s set in layer ``l``."""

    model: str
    refset: str
    langs: list[str]
    families: list[str]
    counts: np.ndarray  # [n_langs, n_layers] int64

    @property
    def shares(self) -> np.ndarray:
        """Each row divided by the language's set size (0 for an empty set)."""
        total = self.counts.sum(axis=1, keepdims=True)
        return np.divide(self.counts, np.maximum(total, 1), dtype=np.float64)

    def to_arrow(self) -> "pa.Table":
        """Long format: ``model, refset, lang, family, layer, neurons, share``."""
        import pyarrow as pa

        n, n_layers = self.counts.shape
        return pa.table({
            "model": pa.array([self.model] * (n * n_layers), pa.string()),
            "refset": pa.array([self.refset] * (n * n_layers), pa.string()),
            "lang": pa.array(np.repeat(self.langs, n_layers).tolist(), pa.string()),
            "family": pa.array(np.repeat(self.families, n_layers).tolist(), pa.string()),
            "layer": pa.array(np.tile(np.arange(n_layers), n), pa.int32()),
            "neurons": pa.array(self.counts.reshape(-1), pa.int64()),
            "share": pa.array(self.shares.reshape(-1), pa.float64()),
        })

    def to_pandas(self) -> "pandas.DataFrame":
        return to_pandas(self.to_arrow())


def family_order(codes: Sequence[str]) -> list[str]:
    """``codes`` sorted by (family, code): related languages end up next to each other."""
    from lape_hub.languages import resolve_language

    return sorted(codes, key=lambda c: (resolve_language(c).family, c))


def layer_counts(catalog: "Catalog", model: str, refset: str = "paper-12",
                 langs: Sequence[str] | None = None, *, order: str = "family",
                 selection: str = DEFAULT_SELECTION) -> LayerCounts:
    """Neurons per layer of each language's set (default: every language of the entry).

    ``order``: ``family`` (by family, then code), ``given`` (as ``langs``), ``code``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lape_hub.errors import NotInCatalogError, SchemaError
    from lape_hub.languages import resolve_language
    from lape_hub.registry import resolve_model
    from lape_hub.schemas import table_schema

    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}")
    spec = resolve_model(model)
    refset = catalog.refset_name(spec.alias, refset)
    path = catalog.entry_path("neurons", {"model": spec.alias, "refset": refset,
                                          "selection": selection})
    if not path.exists():
        raise NotInCatalogError(f"no neuron sets for {spec.alias} · refset {refset} in "
                                f"{catalog.root}")
    try:
        table_schema("neurons").check_file(path)
        t = pq.ParquetFile(path).read(columns=["lang", "layer"])
    except (pa.ArrowInvalid, OSError) as e:
        raise SchemaError(f"corrupt Parquet file {path}: {str(e).splitlines()[0]}") from None
    lang_col = np.asarray(t.column("lang").to_pylist(), dtype=object)
    layer_col = t.column("layer").to_numpy()
    present = sorted(set(lang_col.tolist()))
    wanted = [resolve_language(x).code for x in langs] if langs else present
    missing = sorted(set(wanted) - set(present))
    if missing:
        raise NotInCatalogError(f"{spec.alias} · {refset} has no neuron set for "
                                f"{', '.join(missing)}")
    if order == "family":
        wanted = family_order(wanted)
    elif order == "code":
        wanted = sorted(wanted)
    counts = np.zeros((len(wanted), spec.n_layers), dtype=np.int64)
    for i, code in enumerate(wanted):
        counts[i] = np.bincount(layer_col[lang_col == code], minlength=spec.n_layers)
    families = [resolve_language(c).family for c in wanted]
    return LayerCounts(spec.alias, refset, list(wanted), families, counts)


def plot_layers(data: LayerCounts, png: str | os.PathLike, *, value: str = "auto",
                data_format: str = "parquet") -> tuple[Path, Path | None]:
    """Draw ``data``: bars for one language, a languages x layers heatmap for several.

    ``value``: ``count`` or ``share`` (of the language's set) in the heatmap; ``auto`` is
    ``share`` above 12 languages (set sizes differ a lot), else ``count``.
    Writes ``png`` and the data beside it; returns both paths.
    """
    plt = pyplot()
    n, n_layers = data.counts.shape
    if value == "auto":
        value = "share" if n > 12 else "count"
    if value not in ("count", "share"):
        raise ValueError("value must be count, share or auto")
    title = f"{data.model} · refset {data.refset}"
    if n == 1:
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        ax.bar(np.arange(n_layers), data.counts[0], color="#3b6ea8")
        ax.set_xticks(np.arange(n_layers))
        ax.set_xlabel("layer")
        ax.set_ylabel("neurons")
        ax.set_title(f"{data.langs[0]}: {int(data.counts[0].sum())} neurons in "
                     f"{int((data.counts[0] > 0).sum())} of {n_layers} layers\n{title}",
                     fontsize=10)
        return save_picture(fig, png, data.to_arrow(), data_format=data_format)
    height = min(max(3.0, 0.075 * n + 1.5), 20.0)
    fig, ax = plt.subplots(figsize=(7.5, height))
    grid = data.shares if value == "share" else data.counts
    im = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(np.arange(n))
    ax.set_yticklabels(data.langs, fontsize=label_size(n, height - 1.2))
    ax.set_xticks(np.arange(n_layers))
    ax.set_xticklabels([str(i) for i in range(n_layers)], fontsize=7)
    ax.set_xlabel("layer")
    # family blocks: a line between families and the family's name on the right
    starts = [i for i in range(n) if i == 0 or data.families[i] != data.families[i - 1]]
    for s, e in zip(starts, starts[1:] + [n]):
        if s:
            ax.axhline(s - 0.5, color="white", linewidth=0.6)
        if e - s >= (1 if n <= 40 else max(2, n // 60)):
            ax.text(n_layers - 0.3, (s + e - 1) / 2, data.families[s], va="center", ha="left",
                    fontsize=min(7.0, label_size(n, height - 1.2) * 1.1), clip_on=False)
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.2)
    cb.set_label("share of the language's set" if value == "share" else "neurons")
    ax.set_title(f"{title}: neurons per layer, {n} languages by family", fontsize=10)
    return save_picture(fig, png, data.to_arrow(), data_format=data_format,
                        dpi=150 if n > 60 else 110)  # small labels stay legible
