"""The DuckDB queries docs/publishing.md shows for reading a published catalog over ``hf://``
paths, run exactly as written against a local copy of the repo layout (a ``publish
--dry-run`` staging folder), the ``hf://datasets/ORG/NAME`` prefix replaced by its path.

The answers are checked against the NeuronSet objects the catalog was written from, so a
query that filters or joins on the wrong columns (or a layout DuckDB's hive partitioning
cannot read) fails here. DuckDB's ``hf://`` file system itself needs the network.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hub_server import SELECTION, hub  # noqa: F401 - fixture

from lape_hub.catalog import Catalog
from lape_hub.publisher import publish_catalog

duckdb = pytest.importorskip("duckdb")

DOC = Path(__file__).resolve().parents[1] / "docs" / "publishing.md"
SECTION = "## Reading a published catalog without lape-hub"
PREFIX = "hf://datasets/my-org/lape-hub-catalog"
REPO = "alice/lape-catalog"
SIZES = {"npi_Deva": 40, "mlt_Latn": 25, "afr_Latn": 25, "isl_Latn": 10}   # per layer


def doc_queries() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return re.findall(r"```sql\n(.*?)```", text[start:end], flags=re.S)


def neuron_sets(model: str, refset: str, sizes: dict[str, int], seed: int):
    from lape_hub.neuron_set import NeuronSet
    from lape_hub.registry import resolve_model

    spec = resolve_model(model)
    out = {}
    for i, (lang, k) in enumerate(sizes.items()):
        rng = np.random.default_rng(seed * 100 + i)
        # drawn from the first 120 neurons of each layer, so that languages share some
        layers = [np.sort(rng.choice(120, k, replace=False)) for _ in range(spec.n_layers)]
        out[lang] = NeuronSet(spec.alias, lang, layers, d_model=spec.d_model, d_ffn=spec.d_ffn,
                              refset=refset, total_params=spec.total_params)
    return out


def write(cat: Catalog, sets: dict) -> None:
    from lape_hub.formats import neurons_entry
    from lape_hub.signature import signature

    first = next(iter(sets.values()))
    sig = signature(first.model, "main", refset=first.refset, selection=SELECTION,
                    corpus="test", tokens=1000)
    cat.write("neurons", neurons_entry(list(sets.values()), revision="main",
                                       selection=SELECTION, signature=sig,
                                       params={"langs": list(sets)}))


@pytest.fixture
def staged(hub, tmp_path):
    """A catalog with the wanted sets and decoys (another model, another refset), staged."""
    cat = Catalog(tmp_path / "catalog")
    want = neuron_sets("gemma-3-270m", "paper-12", SIZES, seed=1)
    write(cat, want)
    write(cat, neuron_sets("gemma-3-270m", "flores-200", {"npi_Deva": 60, "mlt_Latn": 60},
                           seed=2))
    write(cat, neuron_sets("llama-3.1-8b", "paper-12", {"npi_Deva": 70, "mlt_Latn": 70}, seed=3))
    folder = tmp_path / "staged"
    publish_catalog(cat, REPO, dry_run=folder)
    return folder, want


def run(query: str, folder: Path) -> list[tuple]:
    assert PREFIX + "/" in query
    return duckdb.connect().execute(query.replace(PREFIX, folder.as_posix())).fetchall()


def test_the_doc_shows_the_hf_queries():
    queries = doc_queries()
    assert len(queries) == 2
    assert all(f"read_parquet('{PREFIX}/neurons/**/*.parquet'" in q for q in queries)


def test_neurons_per_language_query(staged):
    folder, want = staged
    rows = run(doc_queries()[0], folder)
    expected = sorted(((lang, ns.n_neurons) for lang, ns in want.items()),
                      key=lambda r: (-r[1], r[0]))
    assert rows == expected
    assert rows[0] == ("npi_Deva", 40 * 18)


def test_shared_neurons_query(staged):
    folder, want = staged
    rows = run(doc_queries()[1], folder)
    a, b = want["npi_Deva"], want["mlt_Latn"]
    expected = [(layer, len(np.intersect1d(a.layers[layer], b.layers[layer])))
                for layer in range(a.n_layers)]
    expected = [r for r in expected if r[1] > 0]
    assert rows == expected and sum(n for _, n in rows) > 18
