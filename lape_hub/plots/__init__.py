"""Pictures of the catalog and of fine-tuning, with the data behind each one.

One module per picture; each has a function computing the data (a dataclass with
``to_arrow()``/``to_pandas()``) and a ``plot_*`` function drawing it to PNG with matplotlib
(Agg, imported on first use) and writing the data beside it (``.parquet`` or ``.csv``):

- :mod:`~lape_hub.plots.layers`: a language's neurons per layer; many languages as a heatmap
  ordered by family (the paper's Figure 2).
- :mod:`~lape_hub.plots.overlap`: the pairwise Jaccard/count heatmap, clustered or grouped.
- :mod:`~lape_hub.plots.zeroing`: ``verify``'s matrix on a log scale, diagonal outlined.
- :mod:`~lape_hub.plots.weight_change`: |change| per layer and projection (Figure 5).
- :mod:`~lape_hub.plots.alignment`: cosine of parallel sentences' hidden states (Figure 6).

Example::

    >>> from lape_hub import Catalog
    >>> from lape_hub.plots import layer_counts, plot_layers
    >>> plot_layers(layer_counts(Catalog(), "gemma-3-270m", "flores-200"), "layers.png")  # doctest: +SKIP
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the lazy names below are, for type checkers
    from lape_hub.plots.alignment import (Alignment, corpus_alignment, plot_alignment,
                                          read_parallel)
    from lape_hub.plots.layers import LayerCounts, layer_counts, plot_layers
    from lape_hub.plots.overlap import cluster_order, group_order, plot_overlap
    from lape_hub.plots.weight_change import (WeightChange, adapter_weight_change,
                                              merged_weight_change, plot_weight_change)
    from lape_hub.plots.zeroing import (ZeroingMatrix, compute_zeroing, plot_zeroing,
                                        read_verify_result)

_LAZY = {
    "LayerCounts": "layers", "layer_counts": "layers", "plot_layers": "layers",
    "cluster_order": "overlap", "group_order": "overlap", "plot_overlap": "overlap",
    "ZeroingMatrix": "zeroing", "read_verify_result": "zeroing",
    "compute_zeroing": "zeroing", "plot_zeroing": "zeroing",
    "WeightChange": "weight_change",
    "adapter_weight_change": "weight_change", "merged_weight_change": "weight_change",
    "plot_weight_change": "weight_change",
    "Alignment": "alignment", "corpus_alignment": "alignment",
    "read_parallel": "alignment", "plot_alignment": "alignment",
}

# (the functions ``alignment`` and ``weight_change`` share their module's name: import them
# from ``lape_hub.plots.alignment`` and ``lape_hub.plots.weight_change``)
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"lape_hub.plots.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'lape_hub.plots' has no attribute {name!r}")
