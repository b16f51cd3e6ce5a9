"""The shipped catalog/ is consistent: the Gemma-3-270M neuron sets are exactly what LAPE
selection gives on the stored activation counts, and plan finds nothing missing or stale."""
import numpy as np
import pytest

from lape_hub.builder import corpus_id, model_revision, parse_corpus_id, plan, read_counts
from lape_hub.catalog import Catalog
from lape_hub.lape import select_lape
from lape_hub.registry import resolve_model, resolve_refset

# The shipped counts' identity: SIB-200 train, 16,384 tokens, float32, every BOS counted
# (scripts/build_gemma_catalog.sh). Their id predates the dtype/BOS tags and reads as this.
CORPUS = corpus_id("sib200", "train", 16384, dtype="float32", bos="count")


@pytest.fixture(scope="module")
def embedded():
    return Catalog()  # the default: the repository's catalog/


@pytest.mark.parametrize("refset", ["paper-12", "flores-200"])
def test_gemma_sets_are_lape_of_the_stored_counts(embedded, refset):
    spec = resolve_model("gemma-3-270m")
    langs = list(resolve_refset(refset).langs)
    stored = read_counts(embedded, spec.alias, langs, revision=model_revision(spec), corpus=CORPUS)
    assert (stored.n_tokens == 16384).all()
    expected = select_lape(stored.over_zero, stored.n_tokens)
    for k, lang in enumerate(langs):
        ns = embedded.neuron_set(spec.alias, lang, refset=refset)
        got = [(layer, int(n)) for layer, idx in enumerate(ns.layers) for n in idx]
        assert got == expected.neurons(k), lang
        assert ns.n_neurons > 0
    assert plan(embedded, spec.alias, refset, corpus=CORPUS).up_to_date
    ids = {e.key["corpus"] for e in embedded.entries("activation_counts", model=spec.alias)}
    assert ids == {CORPUS} == {"sib200:train@16384"}
    key = parse_corpus_id(CORPUS)
    assert (key.dtype, key.bos, key.max_tokens) == ("float32", "count", 16384)


def test_plan_cli_finds_the_shipped_sets_current_with_their_identity():
    from click.testing import CliRunner

    from lape_hub.cli import cli

    args = ["plan", "--model", "gemma-3-270m", "--refset", "paper-12", "--corpus", "sib200",
            "--max-tokens", "16384"]
    r = CliRunner().invoke(cli, [*args, "--dtype", "float32", "--bos", "count"])
    assert r.exit_code == 0 and "nothing to build" in r.output, r.output
    # asked for bfloat16 counts, plan points at the stored float32 ones and the fix
    r = CliRunner().invoke(cli, [*args, "--dtype", "bfloat16"])
    assert "missing activation counts: 12 of 12" in r.output
    assert ("lape-hub plan --model gemma-3-270m --refset paper-12 --corpus sib200 --split train "
            "--max-tokens 16384 --dtype float32 --bos count") in r.output, r.output


def test_flores_sets_are_fewer_than_paper_sets(embedded):
    """More languages to be specific against: each paper language's set shrinks."""
    for lang in resolve_refset("paper-12").langs:
        small = embedded.neuron_set("gemma-3-270m", lang, refset="paper-12")
        large = embedded.neuron_set("gemma-3-270m", lang, refset="flores-200")
        assert large.n_neurons < small.n_neurons
        assert np.isin(large.global_ids(), small.global_ids()).mean() > 0.5


def test_overlap_of_205_languages_equals_sql_join(embedded):
    """The bitset overlap against the SQL join it replaces, on real sets."""
    import duckdb

    from lape_hub.overlap import overlap_matrix

    m = overlap_matrix(embedded, "gemma-3-270m", refset="flores-200")
    assert len(m.langs) == 205
    path = embedded.entry_path("neurons", {"model": "gemma-3-270m", "refset": "flores-200",
                                           "selection": "top0.05-f0.95-b0.95"})
    rows = duckdb.sql(f"""
        WITH n AS (SELECT lang, layer, neuron FROM read_parquet('{path}'))
        SELECT a.lang, b.lang, count(*) FROM n a JOIN n b USING (layer, neuron) GROUP BY ALL
    """).fetchall()
    want = np.zeros((205, 205), dtype=np.int64)
    pos = {x: i for i, x in enumerate(m.langs)}
    for a, b, c in rows:
        want[pos[a], pos[b]] = c
    assert (m.shared == want).all()
    sub = overlap_matrix(embedded, "gemma-3-270m", refset="flores-200", langs=["sl", "sk", "ka"])
    idx = [pos["slv_Latn"], pos["slk_Latn"], pos["kat_Geor"]]
    assert (sub.shared == want[np.ix_(idx, idx)]).all()
