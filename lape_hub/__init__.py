"""lape-hub: the registry and publisher of language-specific neurons (LAPE) of open LLMs.

The data flow is visible in the module names::

    registry -> corpus -> activation_counts -> lape -> neuron_set -> sparse_adapter
             -> finetune -> cards -> publisher (Hub)

Everything the CLI does is available from Python, e.g.::

    >>> from lape_hub import Catalog
    >>> cat = Catalog()                                  # the embedded default catalog/
    >>> ns = cat.neuron_set("gemma-3-270m", "npi_Deva", refset="paper-12")  # doctest: +SKIP
    >>> ns.n_neurons, ns.trainable_params                                     # doctest: +SKIP

Importing this package is cheap: torch and transformers are only imported by the
modules that run models (builder, fine-tuning, verification).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:  # what the lazy names below are, for type checkers
    from lape_hub.catalog import Catalog
    from lape_hub.languages import resolve_language
    from lape_hub.lape import LapeResult, select_lape
    from lape_hub.neuron_set import NeuronSet
    from lape_hub.registry import resolve_model, resolve_refset

_LAZY = {
    "Catalog": "lape_hub.catalog",
    "NeuronSet": "lape_hub.neuron_set",
    "select_lape": "lape_hub.lape",
    "LapeResult": "lape_hub.lape",
    "resolve_model": "lape_hub.registry",
    "resolve_language": "lape_hub.languages",
    "resolve_refset": "lape_hub.registry",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lape_hub' has no attribute {name!r}")
