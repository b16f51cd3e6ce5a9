"""Where lape-hub's data lives: registry/, schemas/, the embedded catalog/, the cache.

The three folders sit at the top of the source tree (next to ``lape_hub/``); each can be
moved with an environment variable.

Example::

    >>> from lape_hub import paths
    >>> paths.registry_dir().name
    'registry'
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def registry_dir() -> Path:
    return Path(os.environ.get("LAPE_HUB_REGISTRY", ROOT / "registry"))


def schemas_dir() -> Path:
    return Path(os.environ.get("LAPE_HUB_SCHEMAS", ROOT / "schemas"))


def default_catalog_dir() -> Path:
    """The catalog used when none is named: $LAPE_HUB_CATALOG, else the embedded catalog/
    (an empty variable counts as unset, as click reads it, not as the current folder)."""
    return Path(os.environ.get("LAPE_HUB_CATALOG") or ROOT / "catalog")


def cache_dir() -> Path:
    """User cache (models, remote catalog partitions): $LAPE_HUB_CACHE or the platform's."""
    env = os.environ.get("LAPE_HUB_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("lape-hub"))
