"""Shared fixtures: a small synthetic catalog and the path to ../shared/data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data; skips the test when it is absent (users lack it)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path}")
    return path


@pytest.fixture
def synthetic_counts():
    """Random activation counts for gemma-3-270m's shape: 18 × 2048 × 4 languages."""
    rng = np.random.default_rng(0)
    langs = ["mlt_Latn", "afr_Latn", "isl_Latn", "npi_Deva"]
    n_tokens = np.array([5000, 4000, 4500, 6000])
    base = rng.beta(0.5, 2.0, size=(18, 2048, 1))
    spice = rng.random((18, 2048, 4)) < 0.02
    p = np.clip(base + spice * rng.uniform(0.3, 0.7, size=(18, 2048, 4)), 0, 1)
    over_zero = rng.binomial(n_tokens[None, None, :], p).astype(np.int64)
    return langs, n_tokens, over_zero


@pytest.fixture
def catalog(tmp_path, synthetic_counts):
    """A catalog holding gemma-3-270m counts, LAPE and neuron sets for 4 languages."""
    from lape_hub.builder import write_counts, update_lape
    from lape_hub.catalog import Catalog

    cat = Catalog(tmp_path / "catalog")
    langs, n_tokens, over_zero = synthetic_counts
    for k, lang in enumerate(langs):
        write_counts(cat, "gemma-3-270m", lang, over_zero[:, :, k], int(n_tokens[k]),
                     revision="test", corpus="synthetic")
    update_lape(cat, "gemma-3-270m", "test-4", langs=langs, revision="test", corpus="synthetic")
    return cat


def pytest_configure(config):
    """One torch thread per test process: tiny models gain nothing from two, and on a loaded
    2-core machine OpenMP oversubscription made the model tests ~3x slower."""
    try:
        import torch
    except ImportError:  # the read-only core is testable without torch
        return
    torch.set_num_threads(1)
