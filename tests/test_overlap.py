"""Overlap of language neuron sets: bitset counts against plain Python sets, both metrics,
every export form, and the catalog front end on a tiny catalog."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from hub_server import build_catalog

from lape_hub.errors import NotInCatalogError
from lape_hub.overlap import OverlapMatrix, overlap_matrix, shared_counts


def reference(lang_index, neuron_id, n_langs):
    """Shared counts from Python sets: the definition, independent of the bitsets."""
    sets = [set() for _ in range(n_langs)]
    for lang, nid in zip(lang_index.tolist(), neuron_id.tolist()):
        sets[lang].add(nid)
    return np.array([[len(a & b) for b in sets] for a in sets], dtype=np.int64)


@pytest.mark.parametrize("n_langs, n_neurons, step, seed", [
    (1, 5, 8, 0), (3, 70, 1, 1), (5, 130, 2, 2), (9, 300, 4, 3), (10, 1000, 8, 4),
    (17, 64, 3, 5), (4, 65, 100, 6),
])
def test_shared_counts_match_sets(n_langs, n_neurons, step, seed):
    rng = np.random.default_rng(seed)
    lang_index, neuron_id = [], []
    for lang in range(n_langs):
        k = int(rng.integers(0, n_neurons // 2 + 2))
        ids = rng.choice(n_neurons * 7, size=k, replace=False)  # sparse, large ids
        lang_index += [lang] * k
        neuron_id += ids.tolist()
    lang_index, neuron_id = np.array(lang_index, np.int32), np.array(neuron_id, np.int64)
    got = shared_counts(lang_index, neuron_id, n_langs, rows_per_step=step)
    assert got.dtype == np.int64 and got.shape == (n_langs, n_langs)
    np.testing.assert_array_equal(got, reference(lang_index, neuron_id, n_langs))


def test_shared_counts_every_bit_position():
    """Neurons at bits 0..130 of the packed words (word borders included)."""
    ids = np.arange(131)
    lang_index = np.concatenate([np.zeros(131, int), np.ones(66, int)])
    neuron_id = np.concatenate([ids, ids[::2]])
    got = shared_counts(lang_index, neuron_id, 2)
    np.testing.assert_array_equal(got, [[131, 66], [66, 66]])


def test_shared_counts_empty_and_absent_language():
    empty = shared_counts(np.array([], int), np.array([], int), 3)
    assert empty.dtype == np.int64  # exact integers, as when there are neurons
    np.testing.assert_array_equal(empty, np.zeros((3, 3), np.int64))
    got = shared_counts(np.array([0, 0, 2]), np.array([5, 9, 9]), 3)
    np.testing.assert_array_equal(got, [[2, 0, 1], [0, 0, 0], [1, 0, 1]])


def matrix(metric="count"):
    shared = np.array([[4, 2, 0], [2, 3, 0], [0, 0, 0]])
    return OverlapMatrix(["aaa", "bbb", "ccc"], np.array([4, 3, 0]), shared, metric)


def test_values_count_and_jaccard():
    np.testing.assert_array_equal(matrix().values, matrix().shared)
    j = matrix("jaccard").values
    # union(a, b) = 4 + 3 - 2 = 5; an empty set against anything (even itself) is 0
    np.testing.assert_allclose(j, [[1, 2 / 5, 0], [2 / 5, 1, 0], [0, 0, 0]])
    assert matrix("jaccard").value("aaa", "bbb") == pytest.approx(0.4)
    assert matrix().value("bbb", "aaa") == 2.0 and matrix().value("ccc", "aaa") == 0.0


def test_to_csv():
    assert matrix().to_csv() == "lang,aaa,bbb,ccc\naaa,4,2,0\nbbb,2,3,0\nccc,0,0,0\n"
    assert matrix("jaccard").to_csv().splitlines()[1] == "aaa,1.0000,0.4000,0.0000"


@pytest.mark.parametrize("metric", ["count", "jaccard"])
def test_to_arrow_long_form(metric):
    t = matrix(metric).to_arrow()
    assert t.column_names == ["lang_a", "lang_b", "size_a", "size_b", "shared", "jaccard"]
    rows = t.to_pylist()
    assert len(rows) == 9
    assert rows[1] == {"lang_a": "aaa", "lang_b": "bbb", "size_a": 4, "size_b": 3,
                       "shared": 2, "jaccard": pytest.approx(0.4)}
    assert rows[5] == {"lang_a": "bbb", "lang_b": "ccc", "size_a": 3, "size_b": 0,
                       "shared": 0, "jaccard": 0.0}
    assert rows[8]["jaccard"] == 0.0 and rows[0]["jaccard"] == 1.0
    assert [str(f.type) for f in t.schema] == ["string"] * 2 + ["int64"] * 3 + ["double"]


def test_jaccard_of_single_neuron_sets():
    m = OverlapMatrix(["aaa", "bbb"], np.array([1, 1]), np.array([[1, 1], [1, 1]]), "jaccard")
    assert m.to_arrow().column("jaccard").to_pylist() == [1.0] * 4  # union 1, not 2
    np.testing.assert_array_equal(m.values, np.ones((2, 2)))


def test_to_pandas():
    pytest.importorskip("pandas")
    df = matrix().to_pandas()
    assert list(df["shared"]) == [4, 2, 0, 2, 3, 0, 0, 0, 0]


LANGS = ("npi_Deva", "mlt_Latn", "afr_Latn", "slk_Latn")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_catalog(tmp_path_factory.mktemp("overlap") / "catalog", LANGS, counts=False,
                         per_layer=40)


def sets_from_file(cat):
    path = cat.entry_path("neurons", {"model": "gemma-3-270m", "refset": "paper-12",
                                      "selection": "top0.05-f0.95-b0.95"})
    sets: dict[str, set] = {}
    for r in pq.read_table(path, columns=["lang", "layer", "neuron"]).to_pylist():
        sets.setdefault(r["lang"], set()).add((r["layer"], r["neuron"]))
    return sets


def test_overlap_matrix_from_catalog(tiny):
    sets = sets_from_file(tiny)
    m = overlap_matrix(tiny, "gemma-3-270m")
    assert m.langs == sorted(LANGS) and m.metric == "count"
    for a in m.langs:
        assert m.sizes[m.langs.index(a)] == len(sets[a])
        for b in m.langs:
            assert m.value(a, b) == len(sets[a] & sets[b])
    # (layer, neuron) pairs that differ only in layer must not collide
    assert sum(m.sizes) > len(set().union(*sets.values()))


def test_overlap_matrix_subset_order_and_jaccard(tiny):
    sets = sets_from_file(tiny)
    m = overlap_matrix(tiny, "gemma-3-270m", langs=["slk_Latn", "npi_Deva"], metric="jaccard")
    assert m.langs == ["slk_Latn", "npi_Deva"]
    a, b = sets["slk_Latn"], sets["npi_Deva"]
    assert m.value("slk_Latn", "npi_Deva") == pytest.approx(len(a & b) / len(a | b))
    assert list(m.sizes) == [len(a), len(b)]


def test_overlap_matrix_errors(tiny, tmp_path):
    with pytest.raises(ValueError, match="^metric must be count or jaccard$"):
        overlap_matrix(tiny, "gemma-3-270m", metric="cosine")
    with pytest.raises(NotInCatalogError, match="^gemma-3-270m · paper-12 has no neuron set "
                                                 "for kat_Geor, slv_Latn$"):
        overlap_matrix(tiny, "gemma-3-270m", langs=["slv_Latn", "npi_Deva", "kat_Geor"])
    empty = build_catalog(tmp_path / "other", ("npi_Deva",), counts=False, refset="flores-200")
    with pytest.raises(NotInCatalogError, match="no neuron sets for gemma-3-270m .* paper-12"):
        overlap_matrix(empty, "gemma-3-270m")


def test_overlap_matrix_corrupt_data_pages(tmp_path):
    """A file whose footer is intact but whose pages are not: one line naming the file."""
    from lape_hub.errors import SchemaError

    cat = build_catalog(tmp_path / "c", ("npi_Deva", "mlt_Latn"), counts=False, per_layer=40)
    path = cat.entry_path("neurons", {"model": "gemma-3-270m", "refset": "paper-12",
                                      "selection": "top0.05-f0.95-b0.95"})
    data = bytearray(path.read_bytes())
    for i in range(8, len(data) // 2):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(SchemaError) as info:
        overlap_matrix(cat, "gemma-3-270m")
    msg = str(info.value)
    assert msg.startswith(f"corrupt Parquet file {path}: ") and "\n" not in msg
    assert len(msg) > len(f"corrupt Parquet file {path}: None")  # the reader's own words


def test_custom_refset_belongs_to_its_model(tmp_path):
    """A custom reference set another model holds is unknown for this one."""
    from lape_hub.errors import UnknownRefsetError

    cat = build_catalog(tmp_path / "c", ("npi_Deva", "mlt_Latn"), counts=False,
                        refset="my-set")
    m = overlap_matrix(cat, "gemma-3-270m", refset="MY-SET")
    assert m.langs == ["mlt_Latn", "npi_Deva"]
    other = build_catalog(tmp_path / "d", ("npi_Deva",), counts=False, refset="my-set",
                          model="llama-3.1-8b", per_layer=1)
    with pytest.raises(UnknownRefsetError):
        overlap_matrix(other, "gemma-3-270m", refset="my-set")


def test_to_pandas_without_pandas(monkeypatch):
    import sys

    from lape_hub.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(MissingExtraError, match=r"^to_pandas\(\) needs pandas, which is not "
                                                r"installed: pip install 'lape-hub\[plots\]'$"):
        matrix().to_pandas()
