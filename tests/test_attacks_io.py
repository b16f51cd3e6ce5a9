"""Attacks on output paths and imports (issue 9): every bad path or hostile file is one
line on stderr, exit 2, no traceback, and the catalog's files are byte-identical after.

Output paths: ``fetch -o``, ``export -o`` (``sql -o``, ``finetune -o``, ``merge`` and
``publish --dry-run`` use the same :mod:`lape_hub.output_paths` checks). Imports: torch,
JSON and Parquet files that lie about their content, plus re-imports (identical: a no-op;
changed: refused without ``--replace``).
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from attack_helpers import assert_one_line_error, run_cli, tree_hashes

MODEL, N_LAYERS, D_FFN = "gemma-3-270m", 18, 2048
IMPORT = ("--model", MODEL, "--refset", "paper-12")


def sets_doc(sets: dict[str, list], **header) -> dict:
    """A lape-hub neuron-set JSON document (what ``export -o x.json`` writes)."""
    doc = {"model": MODEL, "refset": "paper-12", "n_layers": N_LAYERS, "d_model": 640,
           "d_ffn": D_FFN, "langs": list(sets), "sets": {k: {"layers": v} for k, v in sets.items()}}
    doc.update(header)
    return doc


def layers(*first, n=N_LAYERS) -> list[list[int]]:
    return [list(first)] + [[7 + i] for i in range(n - 1)]


@pytest.fixture(scope="module")
def cat(tmp_path_factory):
    """A catalog holding gemma-3-270m · paper-12 sets for mlt_Latn and afr_Latn (imported)."""
    from lape_hub.catalog import Catalog
    from lape_hub.formats import import_neuron_sets

    root = tmp_path_factory.mktemp("io")
    src = root / "seed.json"
    src.write_text(json.dumps(sets_doc({"mlt_Latn": layers(1, 2), "afr_Latn": layers(3)})))
    catalog = Catalog(root / "catalog")
    import_neuron_sets(catalog, src, model=MODEL, langs=["mt", "af"], refset="paper-12")
    return catalog


@pytest.fixture
def env(cat, tmp_path):
    return {"LAPE_HUB_CATALOG": str(cat.root), "LAPE_HUB_CACHE": str(tmp_path / "cache")}


def attack(cat, *args, env, needle, code=2, cwd=None) -> str:
    before = tree_hashes(cat.root)
    r = run_cli(*args, env=env, cwd=cwd)
    line = assert_one_line_error(r, code=code, needle=needle)
    assert len(line) < 500, line  # a hostile name is shortened, not echoed in full
    assert tree_hashes(cat.root) == before
    return line


FETCH = ("fetch", "--model", MODEL, "--lang", "mt", "--refset", "paper-12")


# -- output paths ------------------------------------------------------------------------

def test_fetch_into_the_catalog_is_refused(cat, env):
    attack(cat, *FETCH, "-o", str(cat.root / "neurons" / "x.json"), env=env,
           needle="inside the catalog")


def test_fetch_through_a_symlink_into_the_catalog_is_refused(cat, env, tmp_path):
    (tmp_path / "innocent").symlink_to(cat.root)
    attack(cat, *FETCH, "-o", str(tmp_path / "innocent" / "CATALOG.json"), env=env,
           needle="inside the catalog")


def test_output_file_that_links_into_the_catalog_is_refused(cat, env, tmp_path):
    """A symlink named like an ordinary output, pointing at a catalog file (even one that does
    not exist yet): writing it would change the catalog."""
    for target in (cat.root / "CATALOG.json", cat.root / "neurons" / "new.json"):
        link = tmp_path / f"out-{target.stem}.json"
        link.symlink_to(target)
        attack(cat, "export", *IMPORT, "-o", str(link), env=env, needle="inside the catalog")
        assert link.is_symlink()


def test_fetch_default_output_in_the_catalog_folder_is_refused(cat, env):
    """Run from inside the catalog, the default ./MODEL.LANG.parquet would land in it."""
    attack(cat, *FETCH, env=env, cwd=cat.root, needle="inside the catalog")


def test_export_into_the_cache_is_refused(cat, env, tmp_path):
    (tmp_path / "cache" / "hub").mkdir(parents=True)
    attack(cat, "export", *IMPORT, "-o", str(tmp_path / "cache" / "hub" / "x.parquet"),
           env=env, needle="inside the lape-hub cache")


def test_suffix_disagreeing_with_format_is_refused(cat, env, tmp_path):
    line = attack(cat, *FETCH, "-o", str(tmp_path / "x.json"), "--format", "parquet", env=env,
                  needle="ends in .json but --format is parquet")
    assert not (tmp_path / "x.json").exists(), line


def test_suffix_that_names_no_format_is_refused(cat, env, tmp_path):
    attack(cat, "export", *IMPORT, "-o", str(tmp_path / "sets.txt"), env=env,
           needle="tells no format")
    assert not (tmp_path / "sets.txt").exists()


def test_folder_given_for_a_file_is_refused(cat, env, tmp_path):
    attack(cat, *FETCH, "-o", str(tmp_path), env=env, needle="is a folder")


def test_missing_parent_folder_is_refused_not_created(cat, env, tmp_path):
    attack(cat, "export", *IMPORT, "-o", str(tmp_path / "no" / "such" / "x.json"), env=env,
           needle="does not exist")
    assert not (tmp_path / "no").exists()


def test_parent_that_is_a_file_is_refused(cat, env, tmp_path):
    (tmp_path / "plain").write_text("x")
    attack(cat, *FETCH, "-o", str(tmp_path / "plain" / "x.json"), env=env,
           needle="not a folder")
    assert (tmp_path / "plain").read_text() == "x"


def test_pipe_as_output_is_refused(cat, env, tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    attack(cat, *FETCH, "-o", str(fifo), env=env, needle="not a regular file")
    assert fifo.exists() and not fifo.is_file()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_folder_is_refused(cat, env, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        attack(cat, *FETCH, "-o", str(ro / "x.json"), env=env, needle="not writable")
    finally:
        ro.chmod(0o700)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_write_refused_by_the_os_is_one_line(cat, env):
    """The checks pass (even as root) but the kernel refuses the write itself."""
    attack(cat, *FETCH, "-o", "/proc/lape-hub-x.json", env=env, needle="cannot write")
    if "torch" in sys.modules or _has_torch():
        attack(cat, *FETCH, "-o", "/proc/lape-hub-x.pt", env=env, needle="cannot write")


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def test_good_output_is_written_atomically(cat, env, tmp_path):
    """The control case: the same command with a good path works and leaves no temp file."""
    before = tree_hashes(cat.root)
    r = run_cli(*FETCH, "-o", str(tmp_path / "mt.json"), env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "mt.json").read_text())["langs"] == ["mlt_Latn"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []
    assert tree_hashes(cat.root) == before


def test_sql_result_into_the_catalog_is_refused(cat, env):
    attack(cat, "sql", "SELECT lang FROM neurons", "-o", str(cat.root / "neurons" / "x.csv"),
           env=env, needle="inside the catalog")


def test_merge_never_replaces_a_folder_it_did_not_write(cat, env, tmp_path):
    """merge replaces its output folder wholesale: a folder of other files is refused."""
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    mine = tmp_path / "my-work"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    attack(cat, "merge", str(adapter), "-o", str(mine), env=env, needle="has no config.json")
    assert (mine / "thesis.tex").read_text() == "years of work"
    attack(cat, "merge", str(adapter), "-o", str(tmp_path), env=env,
           needle="holds the lape-hub cache")  # env's cache lies in tmp_path
    attack(cat, "merge", str(adapter), "-o", str(cat.root / "merged"), env=env,
           needle="inside the catalog")


def test_finetune_run_folder_in_the_catalog_is_refused(cat, env, tmp_path):
    pytest.importorskip("torch")
    attack(cat, "finetune", "--model", MODEL, "--lang", "mt", "--corpus", str(tmp_path),
           "--no-record", "-o", str(cat.root / "runs"), env=env, needle="inside the catalog")


# -- torch not installed ------------------------------------------------------------------

def run_without_torch(*args, env, cwd=None) -> subprocess.CompletedProcess:
    """``lape-hub ARGS`` in a process where ``import torch`` fails as if not installed."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "from lape_hub.cli import main; main(sys.argv[1:])")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=dict(os.environ, **env), cwd=cwd, timeout=120)


@pytest.mark.parametrize("args", [
    ["fetch", "--model", MODEL, "--lang", "mt", "--refset", "paper-12", "-o", "{tmp}/x.pt"],
    ["export", *IMPORT, "-o", "{tmp}/x.pt"],
    ["import", "{tmp}/x.pt", *IMPORT, "--langs", "mt"],
], ids=["fetch", "export", "import"])
def test_torch_formats_without_torch_name_the_extra(cat, env, tmp_path, args):
    (tmp_path / "x.pt").write_bytes(b"not read")
    before = tree_hashes(cat.root)
    r = run_without_torch(*[a.format(tmp=tmp_path) for a in args], env=env)
    assert_one_line_error(r, needle="pip install 'lape-hub[build]'")
    assert tree_hashes(cat.root) == before
    assert (tmp_path / "x.pt").read_bytes() == b"not read"


def test_json_import_works_without_torch(tmp_path):
    src = tmp_path / "mt.json"
    src.write_text(json.dumps(sets_doc({"mlt_Latn": layers(4, 5)})))
    r = run_without_torch("import", str(src), *IMPORT, "--langs", "mt",
                          env={"LAPE_HUB_CATALOG": str(tmp_path / "cat")})
    assert r.returncode == 0, r.stderr
    assert "imported 1 neuron sets" in r.stdout


# -- hostile import files -----------------------------------------------------------------

def import_attack(cat, env, path, langs, needle):
    return attack(cat, "import", str(path), *IMPORT, "--langs", langs, env=env, needle=needle)


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("make, needle", [
    (lambda t: t.ones(3, dtype=t.bool), "dtype bool"),
    (lambda t: t.tensor([1.0, 2.0]), "dtype float32"),
    (lambda t: t.tensor([1 + 2j]), "dtype complex"),
    (lambda t: t.tensor([[1, 2], [3, 4]]), "2-D tensor"),
    (lambda t: t.tensor(5), "0-D tensor"),
    (lambda t: t.tensor([1, 2]).to_sparse(), "sparse"),
    (lambda t: t.tensor([-1, 2]), "-1 outside [0, 2048)"),
    (lambda t: t.tensor([2 ** 62]), "outside [0, 2048)"),
    (lambda t: t.tensor([2048]), "2048 outside [0, 2048)"),
    (lambda t: t.tensor([5, 5]), "twice"),
], ids=["bool", "float", "complex", "2d", "0d", "sparse", "negative", "huge", "d_ffn", "dup"])
def test_torch_list_with_bad_ids_is_refused(cat, env, tmp_path, torch, make, needle):
    bad = make(torch)
    path = tmp_path / "bad.pt"
    torch.save([[bad] + [torch.tensor([1])] * (N_LAYERS - 1)], path)
    line = import_attack(cat, env, path, "is", needle)
    assert "isl_Latn layer 0" in line


def test_torch_list_with_wrong_layer_count_is_refused(cat, env, tmp_path, torch):
    path = tmp_path / "short.pt"
    torch.save([[torch.tensor([1])] * (N_LAYERS - 1)], path)
    import_attack(cat, env, path, "is", f"17 layers, {MODEL} has 18")


def test_truncated_torch_file_is_refused(cat, env, tmp_path, torch):
    path = tmp_path / "cut.pt"
    torch.save([[torch.arange(100)] * N_LAYERS], path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    import_attack(cat, env, path, "is", "corrupt or not a tensor list")


def test_pickle_with_code_is_refused_and_not_run(cat, env, tmp_path, torch):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps([[Evil()]], protocol=2))  # GLOBAL builtins.exec
    import_attack(cat, env, path, "is", "refused by weights_only: it references code")
    path.write_bytes(pickle.dumps([[Evil()]], protocol=4))  # STACK_GLOBAL: refused as well
    import_attack(cat, env, path, "is", "cannot load as a torch neuron list")
    assert not marker.exists()


def test_text_file_named_pt_is_refused(cat, env, tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("this is not a torch file\n")
    import_attack(cat, env, path, "is", "cannot load as a torch neuron list")


@pytest.mark.parametrize("doc, needle", [
    ([1, 2, 3], "expected an object"),
    ({"sets": {"mlt_Latn": [[1]]}}, "no \"layers\" list"),
    (sets_doc({"mlt_Latn": "abc"}), "expected a list of layers"),
    (sets_doc({"mlt_Latn": layers(True)}), "holds bool"),
    (sets_doc({"mlt_Latn": layers(1.0)}), "holds float"),
    (sets_doc({"mlt_Latn": layers("3")}), "holds str"),
    (sets_doc({"mlt_Latn": layers([1, 2])}), "holds list"),
    (sets_doc({"mlt_Latn": layers(10 ** 30)}), "outside [0, 2048)"),
    (sets_doc({"mlt_Latn": layers(1)}, d_ffn=4096), "says d_ffn = 4096, gemma-3-270m has 2048"),
    (sets_doc({"mlt_Latn": layers(1)}, d_ffn="2048"), "says d_ffn = '2048'"),
    (sets_doc({"mlt_Latn": layers(1)}, model="llama-3.1-8b"), "not gemma-3-270m"),
    (sets_doc({"mlt_Latn": layers(1)}, model="x" * 5000), "not in the registry"),
    (sets_doc({"mlt_Latn": layers(1, n=17)}), "17 layers"),
    (sets_doc({"fra_Latn": layers(1)}), "not in reference set paper-12"),
    (sets_doc({"klingon": layers(1)}), "unknown language 'klingon'"),
    (sets_doc({"mt": layers(1), "mlt_Latn": layers(2)}), "mlt_Latn more than once"),
], ids=["array", "no-layers", "string-layers", "bool", "float", "str", "nested", "huge",
        "d_ffn", "d_ffn-str", "other-model", "unknown-model", "layers", "refset", "language", "dup-lang"])
def test_json_that_lies_is_refused(cat, env, tmp_path, doc, needle):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    langs = " ".join(doc["sets"]) if isinstance(doc, dict) and doc.get("langs") else "mt"
    import_attack(cat, env, path, langs, needle)


def test_deeply_nested_json_is_refused(cat, env, tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    import_attack(cat, env, path, "mt", "not JSON")


def test_parquet_with_another_schema_is_refused(cat, env, tmp_path):
    """A catalog file (the neurons table itself) is not an export: no lape_hub header."""
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), path)
    import_attack(cat, env, path, "mt", "not a lape-hub neuron-set Parquet")


def test_parquet_with_float_ids_is_refused(cat, env, tmp_path):
    header = {k: v for k, v in sets_doc({"mlt_Latn": []}).items() if k != "sets"}
    table = pa.table({"lang": ["mlt_Latn"], "layer": pa.array([0.5]), "neuron": [3]})
    pq.write_table(table.replace_schema_metadata({"lape_hub": json.dumps(header)}),
                   tmp_path / "f.parquet")
    import_attack(cat, env, tmp_path / "f.parquet", "mt", "layer")


def test_parquet_with_rows_outside_its_languages_is_refused(cat, env, tmp_path):
    header = {k: v for k, v in sets_doc({"mlt_Latn": []}).items() if k != "sets"}
    table = pa.table({"lang": ["mlt_Latn", "afr_Latn"], "layer": [0, 0], "neuron": [3, 4]})
    pq.write_table(table.replace_schema_metadata({"lape_hub": json.dumps(header)}),
                   tmp_path / "x.parquet")
    import_attack(cat, env, tmp_path / "x.parquet", "mt", "does not list")


def test_truncated_parquet_is_refused(cat, env, tmp_path):
    r = run_cli("export", *IMPORT, "-o", str(tmp_path / "all.parquet"), env=env)
    assert r.returncode == 0, r.stderr
    data = (tmp_path / "all.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) - 20])
    import_attack(cat, env, tmp_path / "cut.parquet", "mt", "not a Parquet file")


def test_langs_named_twice_are_refused(cat, env, tmp_path):
    path = tmp_path / "two.json"
    path.write_text(json.dumps(sets_doc({"mlt_Latn": layers(1), "afr_Latn": layers(2)})))
    import_attack(cat, env, path, "mt mlt_Latn", "names mlt_Latn more than once")


@pytest.mark.parametrize("selection", ["../../escape", "x" * 300, "a/b", ".hidden"])
def test_selection_that_is_not_a_key_is_refused(cat, env, tmp_path, selection):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(sets_doc({"mlt_Latn": layers(1)})))
    attack(cat, "import", str(path), *IMPORT, "--langs", "mt", "--selection", selection,
           env=env, needle="not a selection key")


def test_folder_as_import_file_is_refused(cat, env, tmp_path):
    import_attack(cat, env, tmp_path, "mt", "is a folder")


# -- re-imports ----------------------------------------------------------------------------

@pytest.fixture
def fresh(tmp_path):
    from lape_hub.catalog import Catalog

    src = tmp_path / "mt-af.json"
    src.write_text(json.dumps(sets_doc({"mlt_Latn": layers(1, 2), "afr_Latn": layers(3)})))
    cat = Catalog(tmp_path / "catalog")
    env = {"LAPE_HUB_CATALOG": str(cat.root)}
    r = run_cli("import", str(src), *IMPORT, "--langs", "mt af", env=env)
    assert r.returncode == 0, r.stderr
    return cat, env, src


def test_importing_the_same_file_twice_changes_nothing(fresh, tmp_path):
    cat, env, src = fresh
    before = tree_hashes(cat.root)
    r = run_cli("import", str(src), *IMPORT, "--langs", "mt af", env=env)
    assert r.returncode == 0, r.stderr
    assert "already in the catalog" in r.stdout and "(unchanged)" in r.stdout
    assert tree_hashes(cat.root) == before
    # the same content in another format is the same content
    r = run_cli("export", *IMPORT, "--langs", "af", "-o", str(tmp_path / "af.parquet"), env=env)
    assert r.returncode == 0, r.stderr
    r = run_cli("import", str(tmp_path / "af.parquet"), *IMPORT, "--langs", "af", env=env)
    assert r.returncode == 0 and "(unchanged)" in r.stdout, r.stderr
    assert tree_hashes(cat.root) == before


def test_changed_content_needs_replace(fresh, tmp_path):
    cat, env, _ = fresh
    changed = tmp_path / "mt2.json"
    changed.write_text(json.dumps(sets_doc({"mlt_Latn": layers(9, 10, 11)})))
    line = attack(cat, "import", str(changed), *IMPORT, "--langs", "mt", env=env,
                  needle="--replace")
    assert "gemma-3-270m · paper-12 · top0.05-f0.95-b0.95" in line and "mlt_Latn" in line
    afr = cat.neuron_set(MODEL, "af", refset="paper-12")

    r = run_cli("import", str(changed), *IMPORT, "--langs", "mt", "--replace", env=env)
    assert r.returncode == 0, r.stderr
    assert "replaced mlt_Latn" in r.stdout
    mt = cat.neuron_set(MODEL, "mt", refset="paper-12")
    assert mt.layers[0].tolist() == [9, 10, 11] and mt.n_neurons == 3 + N_LAYERS - 1
    assert cat.neuron_set(MODEL, "af", refset="paper-12") == afr  # the other language kept
    assert [p.name for p in cat.root.rglob(".tmp*")] == []
