"""CLI: fetch / sql / overlap / list / import / export, and bad input (exit 2, one line)."""
import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from lape_hub.cli import cli
from lape_hub.formats import read_neuron_sets

from conftest import shared_data


def run(*args, catalog=None):
    env = {"LAPE_HUB_CATALOG": str(catalog.root)} if catalog is not None else {}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False,
                              standalone_mode=True)


def run_main(*args, env=None):
    """Through the console entry point (error mapping included), in a subprocess."""
    import os

    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "lape_hub.cli", *args], capture_output=True,
                          text=True, env=e)


def test_fetch_writes_and_summarizes(catalog, tmp_path):
    out = tmp_path / "mt.json"
    r = run("fetch", "--model", "gemma-3-270m", "--lang", "Maltese", "-o", str(out), catalog=catalog)
    assert r.exit_code == 0, r.output
    ns = catalog.neuron_set("gemma-3-270m", "mt")
    assert f"neurons: {ns.n_neurons:,}" in r.output
    assert f"{ns.trainable_params:,}" in r.output and "L17" in r.output
    assert read_neuron_sets(out)[0] == ns


@pytest.mark.parametrize("fmt", ["parquet", "json", "pt"])
def test_export_round_trip_exact(catalog, tmp_path, fmt):
    out = tmp_path / f"all.{fmt}"
    r = run("export", "--model", "gemma-3-270m", "--refset", "test-4", "-o", str(out), catalog=catalog)
    assert r.exit_code == 0, r.output
    langs = ["afr_Latn", "isl_Latn", "mlt_Latn", "npi_Deva"]
    want = [catalog.neuron_set("gemma-3-270m", x) for x in langs]
    got = read_neuron_sets(out, model="gemma-3-270m", langs=langs, refset="test-4")
    assert [g.content_hash for g in got] == [w.content_hash for w in want]
    # the torch list format round-trips exactly: re-import into a fresh catalog (a registry
    # refset holding these languages) and export again gives the same bytes
    if fmt == "pt":
        fresh = tmp_path / "fresh"
        r = run("import", str(out), "--model", "gemma-3-270m", "--langs", ",".join(langs),
                "--refset", "paper-12", "--catalog", str(fresh))
        assert r.exit_code == 0, r.output
        again = tmp_path / "again.pt"
        r = run("export", "--model", "gemma-3-270m", "--refset", "paper-12", "--langs",
                ",".join(langs), "--catalog", str(fresh), "-o", str(again))
        assert r.exit_code == 0, r.output
        assert again.read_bytes() == out.read_bytes()
    if fmt == "pt":
        import torch

        a = torch.load(out, weights_only=True)
        assert len(a) == 4 and len(a[0]) == 18 and a[0][0].dtype == torch.long
        assert [[t.tolist() for t in lang] for lang in a] == [
            [list(map(int, layer)) for layer in w.layers] for w in want]


def test_sql_read_only(catalog):
    r = run("sql", "SELECT lang, count(*) AS n FROM neurons GROUP BY lang ORDER BY lang",
            "--format", "csv", catalog=catalog)
    assert r.exit_code == 0 and r.output.splitlines()[1].startswith('"afr_Latn"')
    before = sorted(p.stat().st_mtime_ns for p in catalog.root.rglob("*"))
    for q in ["INSERT INTO neurons SELECT * FROM neurons", "DELETE FROM neurons",
              "COPY neurons TO 'x.csv'", f"ATTACH '{catalog.root}/x.db'", "CREATE TABLE t AS SELECT 1",
              "INSTALL httpfs", "LOAD httpfs", "SET enable_external_access=true",
              "SELECT 1; DROP VIEW neurons", "PRAGMA version"]:
        r = run_main("sql", q, env={"LAPE_HUB_CATALOG": str(catalog.root)})
        assert r.returncode == 2, q
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    after = sorted(p.stat().st_mtime_ns for p in catalog.root.rglob("*"))
    assert before == after and not (catalog.root / "x.db").exists()


def test_sql_cannot_read_outside_catalog(catalog):
    r = run_main("sql", "SELECT * FROM read_csv('/etc/passwd')",
                 env={"LAPE_HUB_CATALOG": str(catalog.root)})
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_sql_formats(catalog, tmp_path):
    q = "SELECT lang, count(*) AS n FROM neurons GROUP BY lang ORDER BY lang"
    r = run("sql", q, "--format", "json", catalog=catalog)
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert rows[0]["lang"] == "afr_Latn" and rows[0]["n"] > 0
    out = tmp_path / "r.parquet"
    r = run("sql", q, "--format", "parquet", "-o", str(out), catalog=catalog)
    assert pq.read_table(out).num_rows == 4
    r = run("sql", q, catalog=catalog)
    assert "afr_Latn" in r.output


def test_overlap_matrix(catalog):
    r = run("overlap", "--model", "gemma-3-270m", "--refset", "test-4", "--format", "csv",
            catalog=catalog)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "lang,afr_Latn,isl_Latn,mlt_Latn,npi_Deva"
    sizes = {x: catalog.neuron_set("gemma-3-270m", x).n_neurons for x in ["afr_Latn", "mlt_Latn"]}
    assert lines[1].split(",")[1] == str(sizes["afr_Latn"])  # diagonal = set size
    a = set(catalog.neuron_set("gemma-3-270m", "af").global_ids())
    m = set(catalog.neuron_set("gemma-3-270m", "mt").global_ids())
    assert lines[1].split(",")[3] == str(len(a & m))
    r = run("overlap", "--model", "gemma-3-270m", "--refset", "test-4", "--metric", "jaccard",
            "--langs", "af,mt", "--format", "csv", catalog=catalog)
    assert r.output.splitlines()[1].split(",")[2] == f"{len(a & m) / len(a | m):.4f}"


def test_list(catalog):
    r = run("list", catalog=catalog)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == f"catalog: {catalog.root}"
    rows = [ln.split() for ln in lines[3:]]
    # one row per (table, model, set): 4 languages counted, LAPE and neurons over test-4
    by_table = {row[0]: row for row in rows}
    assert sorted(by_table) == ["activation_counts", "lape", "neurons"]
    assert by_table["activation_counts"][1:3] == ["gemma-3-270m", "synthetic"]
    assert by_table["activation_counts"][3:5] == ["4", "4"]          # langs, files
    assert by_table["neurons"][1:5] == ["gemma-3-270m", "test-4", "top0.05-f0.95-b0.95", "4"]
    assert by_table["lape"][1:3] == ["gemma-3-270m", "test-4"]


@pytest.mark.parametrize("args,needle", [
    (["fetch", "--model", "lama-3.1", "--lang", "ne"], "did you mean: llama-3.1-8b"),
    (["fetch", "--model", "gemma-3-270m", "--lang", "qqq"], "unknown language 'qqq'"),
    (["fetch", "--model", "gemma-3-270m", "--lang", "eng_Latn"], "lape-hub build --model gemma-3-270m"),
    (["overlap", "--model", "gemma-3-270m", "--refset", "nope"], "unknown reference set"),
])
def test_bad_input_one_line_exit_2(catalog, args, needle):
    r = run_main(*args, env={"LAPE_HUB_CATALOG": str(catalog.root)})
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_corrupt_parquet_names_file(catalog):
    path = next(catalog.root.glob("neurons/**/data.parquet"))
    path.write_bytes(b"garbage")
    for args in (["fetch", "--model", "gemma-3-270m", "--lang", "mt"], ["sql", "SELECT 1"],
                 ["list"], ["overlap", "--model", "gemma-3-270m", "--refset", "test-4"]):
        r = run_main(*args, env={"LAPE_HUB_CATALOG": str(catalog.root)})
        assert r.returncode == 2 and str(path) in r.stderr and r.stderr.count("\n") == 1


def test_import_paper_release_matches_table_1(tmp_path):
    pth = shared_data("paper-neurons", "llama-3.1-8b.top5.pth")
    r = run_main("import", str(pth), "--model", "llama-3.1-8b", "--langs",
                 "mt af is cy mk lv lt sl sk et ka ne", "--refset", "paper-12",
                 env={"LAPE_HUB_CATALOG": str(tmp_path / "cat")})
    assert r.returncode == 0, r.stderr
    for line in ["afr_Latn: 2,581 neurons, 31.7M parameters (0.39 %)",
                 "cym_Latn: 6,020 neurons, 74.0M", "kat_Geor: 1,150 neurons, 14.1M"]:
        assert line in r.stdout
    out = tmp_path / "back.pt"
    r = run_main("export", "--model", "llama-3.1-8b", "--langs", "mt af is cy mk lv lt sl sk et ka ne",
                 "-o", str(out), env={"LAPE_HUB_CATALOG": str(tmp_path / "cat")})
    assert r.returncode == 0, r.stderr
    import torch

    a, b = torch.load(pth, weights_only=True), torch.load(out, weights_only=True)
    assert all(torch.equal(x.sort().values, y) for la, lb in zip(a, b) for x, y in zip(la, lb))


def test_import_validates_against_registry(tmp_path):
    import torch

    bad = tmp_path / "bad.pt"
    torch.save([[torch.tensor([1, 2])] * 18, [torch.tensor([3, 4000])] * 18], bad)
    env = {"LAPE_HUB_CATALOG": str(tmp_path / "cat")}
    r = run_main("import", str(bad), "--model", "gemma-3-270m", "--langs", "mt af",
                 "--refset", "paper-12", env=env)
    assert r.returncode == 2 and "outside [0, 2048)" in r.stderr
    r = run_main("import", str(bad), "--model", "llama-3.1-8b", "--langs", "mt af",
                 "--refset", "paper-12", env=env)
    assert r.returncode == 2 and "18 layers" in r.stderr
    r = run_main("import", str(bad), "--model", "gemma-3-270m", "--langs", "mt",
                 "--refset", "paper-12", env=env)
    assert r.returncode == 2 and "2 languages" in r.stderr

    evil = tmp_path / "evil.pt"  # a pickle that would run code: weights_only refuses it
    torch.save({"x": subprocess.Popen}, evil)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x04\x95not a torch file")
    for path, why in ((evil, "refused by weights_only"), (garbage, "corrupt or not")):
        r = run_main("import", str(path), "--model", "gemma-3-270m", "--langs", "mt",
                     "--refset", "paper-12", env=env)
        assert r.returncode == 2 and why in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "cat" / "neurons").exists()


def test_read_commands_do_not_import_torch(catalog, tmp_path):
    code = ("import sys; from lape_hub.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n")
    import os

    env = dict(os.environ, LAPE_HUB_CATALOG=str(catalog.root))
    for args in (["fetch", "--model", "gemma-3-270m", "--lang", "mt", "-o", str(tmp_path / "x.json")],
                 ["sql", "SELECT count(*) FROM lape"], ["list"],
                 ["overlap", "--model", "gemma-3-270m", "--refset", "test-4"],
                 ["report", "--model", "gemma-3-270m", "--lang", "mt"]):   # exit 2: no evals
        r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
