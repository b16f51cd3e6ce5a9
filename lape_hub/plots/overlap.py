"""How languages share neurons: the pairwise Jaccard (or count) heatmap.

Readable at 205 languages: rows are ordered so that languages sharing neurons sit
together, either by hierarchical clustering of ``1 - Jaccard`` (scipy, average linkage,
optimal leaf order) or grouped by family and script; the label size follows the number
of languages.

Example::

    >>> from lape_hub.catalog import Catalog
    >>> from lape_hub.overlap import overlap_matrix
    >>> m = overlap_matrix(Catalog(), "gemma-3-270m", "flores-200", metric="jaccard")  # doctest: +SKIP
    >>> plot_overlap(m, "overlap.png", order="cluster")                                # doctest: +SKIP
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from lape_hub.plots._figure import label_size, pyplot, save_picture

if TYPE_CHECKING:
    from lape_hub.overlap import OverlapMatrix

ORDERS = ("cluster", "family", "given")


def _jaccard(matrix: "OverlapMatrix") -> np.ndarray:
    union = matrix.sizes[:, None] + matrix.sizes[None, :] - matrix.shared
    return np.where(union > 0, matrix.shared / np.maximum(union, 1), 0.0)


def group_order(langs: Sequence[str]) -> list[int]:
    """Indices of ``langs`` grouped by (family, script, code)."""
    from lape_hub.languages import resolve_language

    def key(i: int) -> tuple[str, str, str]:
        lang = resolve_language(langs[i])
        return lang.family, lang.script, lang.code

    return sorted(range(len(langs)), key=key)


def cluster_order(matrix: "OverlapMatrix") -> list[int]:
    """Leaf order of an average-linkage clustering of ``1 - Jaccard`` (deterministic).

    Without scipy, falls back to :func:`group_order`.
    """
    try:
        from scipy.cluster.hierarchy import leaves_list, linkage
        from scipy.spatial.distance import squareform
    except ImportError:
        return group_order(matrix.langs)
    n = len(matrix.langs)
    if n < 3:
        return list(range(n))
    dist = 1.0 - _jaccard(matrix)
    np.fill_diagonal(dist, 0.0)
    dist = (dist + dist.T) / 2
    z = linkage(squareform(dist, checks=False), method="average", optimal_ordering=True)
    return [int(i) for i in leaves_list(z)]


def ordered(matrix: "OverlapMatrix", order: str = "cluster") -> "OverlapMatrix":
    """``matrix`` with rows and columns permuted (``cluster``, ``family`` or ``given``)."""
    from dataclasses import replace

    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}")
    if order == "given":
        return matrix
    idx = cluster_order(matrix) if order == "cluster" else group_order(matrix.langs)
    ix = np.asarray(idx)
    return replace(matrix, langs=[matrix.langs[i] for i in idx], sizes=matrix.sizes[ix],
                   shared=matrix.shared[np.ix_(ix, ix)])


def plot_overlap(matrix: "OverlapMatrix", png: str | os.PathLike, *, order: str = "cluster",
                 title: str | None = None, data_format: str = "parquet",
                 ) -> tuple[Path, Path | None]:
    """Draw the overlap heatmap (``matrix.metric``: Jaccard or shared counts) in ``order``.

    The data beside the PNG is ``matrix.to_arrow()`` in the drawn order.
    """
    from lape_hub.languages import resolve_language

    plt = pyplot()
    m = ordered(matrix, order)
    n = len(m.langs)
    side = float(min(max(5.0, 0.075 * n + 2.0), 18.0))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    vals = np.asarray(m.values, dtype=np.float64)
    shown = vals.copy()
    # 20 colour levels: as readable, and a large matrix's PNG compresses ~3x better
    cmap = plt.get_cmap("magma_r", 20 if n > 40 else 256)
    if m.metric == "jaccard":
        np.fill_diagonal(shown, np.nan)  # always 1: it would flatten the colour scale
        im = ax.imshow(shown, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    else:
        im = ax.imshow(shown, cmap=cmap, interpolation="nearest")
    fs = label_size(n, side - 1.0)
    ticks = np.arange(n)
    if n <= 40:
        names = [f"{c} ({resolve_language(c).name})" if n <= 16 else c for c in m.langs]
    else:
        names = list(m.langs)
    ax.set_xticks(ticks)
    ax.set_xticklabels(names, rotation=90, fontsize=fs)
    ax.set_yticks(ticks)
    ax.set_yticklabels(names, fontsize=fs)
    ax.tick_params(length=1.5 if n > 40 else 3, pad=1)
    if order == "family":
        fams = [resolve_language(c).family for c in m.langs]
        for i in range(1, n):
            if fams[i] != fams[i - 1]:
                ax.axhline(i - 0.5, color="#888", linewidth=0.3)
                ax.axvline(i - 0.5, color="#888", linewidth=0.3)
    if n <= 16:
        for i in range(n):
            for j in range(n):
                v = vals[i, j]
                txt = f"{v:.2f}" if m.metric == "jaccard" else f"{int(v)}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=7,
                        color="white" if (m.metric == "jaccard" and i != j and v > 0.5) else "black")
    cb = fig.colorbar(im, ax=ax, fraction=0.035, pad=0.01)
    cb.set_label("Jaccard index" + (" (diagonal left blank)" if m.metric == "jaccard" else "")
                 if m.metric == "jaccard" else "shared neurons")
    how = {"cluster": "clustered (average linkage on 1 - Jaccard)",
           "family": "grouped by family and script", "given": "in the given order"}[order]
    ax.set_title(title or f"{n} languages, {how}", fontsize=10)
    return save_picture(fig, png, m.to_arrow(), data_format=data_format,
                        dpi=110 if n <= 60 else 140)
