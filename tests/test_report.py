"""``lape-hub report``: the paper-style comparison of one model · language from a catalog's
``evals`` and ``adapters`` rows (synthetic here), as Markdown, PNG and data; means and sds
over seeds checked against numpy; the CLI's errors; no torch import."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import numpy as np
import pyarrow.parquet as pq
import pytest
from attack_helpers import assert_one_line_error, run_cli, tree_hashes

MODEL, X, EN = "gemma-3-270m", "mlt_Latn", "eng_Latn"
SEEDS = {"aaaa00000000": 0, "aaaa11111111": 1, "aaaa22222222": 2}     # lape-sparse runs
LORA, RANDOM = "bbbb00000000", "cccc00000000"


def _eval_row(run_id, method, task, direction, metric, value, *, lang=X, split="test",
              ci=None, model=MODEL):
    from lape_hub.schemas import table_schema

    row = {c: None for c in table_schema("evals").columns}
    row.update(model=model, run_id=run_id, lang=lang, task=task, direction=direction,
               metric=metric, split=split, method=method, revision="r", value=float(value),
               ci_low=None if ci is None else float(ci[0]),
               ci_high=None if ci is None else float(ci[1]), n_examples=16,
               dataset="openlanguagedata/flores_plus", metric_signature="sig", signature="s",
               seconds=1.0, lape_hub_version="0", params="{}",
               created_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    return row


def _adapter_row(run_id, method, seed, *, lang=X, trainable=36_864, tokens=100_000,
                 lr=1e-3):
    hp = {"seed": seed, "lr": lr, "train_tokens": tokens, "batch_size": 8}
    return {"model": MODEL, "lang": lang, "method": method, "run_id": run_id, "revision": "r",
            "repo_id": "google/gemma-3-270m", "refset": None, "components": None,
            "neuron_set_hash": None, "n_neurons": None, "trainable_params": trainable,
            "share": 0.01, "tokens": tokens, "steps": 10, "best_step": 10, "best_val_loss": 2.0,
            "artifact_path": f"runs/{run_id}", "artifact_sha256": run_id * 5, "signature": "s",
            "lape_hub_version": "0", "created_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
            "params": json.dumps({"hyperparameters": hp, "corpus": "sib200"})}


def _values(rng):
    """Random values of every report metric of one run (lang rows, English rows)."""
    return {"x2en_bleu": rng.uniform(1, 30), "x2en_chrf": rng.uniform(10, 60),
            "en2x_bleu": rng.uniform(1, 30), "en2x_chrf": rng.uniform(10, 60),
            "topic_gen": rng.uniform(0, 100), "topic_ll": rng.uniform(0, 100),
            "ppl": rng.uniform(5, 500), "en_ppl": rng.uniform(5, 50),
            "en_topic_ll": rng.uniform(0, 100)}


def _rows_of(run_id, method, v, *, drop=()):
    spec = {"x2en_bleu": ("translation", f"{X}->{EN}", "bleu_sent", X),
            "x2en_chrf": ("translation", f"{X}->{EN}", "chrf++", X),
            "en2x_bleu": ("translation", f"{EN}->{X}", "bleu_sent", X),
            "en2x_chrf": ("translation", f"{EN}->{X}", "chrf++", X),
            "topic_gen": ("topic", X, "acc_gen", X), "topic_ll": ("topic", X, "acc_ll", X),
            "ppl": ("perplexity", X, "ppl", X), "en_ppl": ("perplexity", EN, "ppl", X),
            "en_topic_ll": ("topic", EN, "acc_ll", EN)}
    out = []
    for key, (task, direction, metric, lang) in spec.items():
        if key in drop:
            continue
        ci = None if metric == "ppl" else (v[key] - 2.5, v[key] + 3.0)
        out.append(_eval_row(run_id, method, task, direction, metric, v[key], lang=lang, ci=ci))
    return out


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A catalog with base + 3 lape-sparse seeds + LoRA + random for mlt_Latn, and rows that
    must stay out of the report (another model, another language, another split)."""
    from lape_hub.catalog import Catalog
    from lape_hub.evaluation.results import record_evals
    from lape_hub.schemas import table_schema
    import pyarrow as pa

    cat = Catalog(tmp_path_factory.mktemp("report") / "cat")
    rng = np.random.default_rng(7)
    values = {"base": _values(rng)}
    rows = _rows_of("base", "base", values["base"])
    for rid in SEEDS:
        values[rid] = _values(rng)
        # seed 2 was never scored on topic by generation: its mean counts 2 seeds
        rows += _rows_of(rid, "lape-sparse", values[rid],
                         drop=("topic_gen",) if SEEDS[rid] == 2 else ())
    for rid, method in ((LORA, "lora"), (RANDOM, "random")):
        values[rid] = _values(rng)
        rows += _rows_of(rid, method, values[rid])
    # noise: another model, another language's adapter (with English rows), a dev-only run
    rows += [_eval_row("base", "base", "topic", X, "acc_ll", 99.0, model="other-model"),
             _eval_row("dddd00000000", "lora", "topic", "fra_Latn", "acc_ll", 98.0,
                       lang="fra_Latn"),
             _eval_row("dddd00000000", "lora", "topic", EN, "acc_ll", 97.0, lang=EN),
             _eval_row("eeee00000000", "full", "topic", X, "acc_ll", 96.0, split="dev")]
    record_evals(rows, cat)
    schema = table_schema("adapters")
    adapters = [_adapter_row(rid, "lape-sparse", s) for rid, s in SEEDS.items()]
    adapters += [_adapter_row(LORA, "lora", 0, trainable=40_000),
                 _adapter_row(RANDOM, "random", 0),
                 _adapter_row("dddd00000000", "lora", 0, lang="fra_Latn")]
    for a in adapters:
        cat.write("adapters", pa.Table.from_pylist([a], schema=schema.arrow),
                  key={k: str(a[k]) for k in schema.partition_by})
    return cat, values


def _table(md):
    """The report's Markdown table as {"system run": {column: cell}}."""
    lines = [l for l in md.splitlines() if l.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    out = {}
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        out[f"{cells[0]} {cells[2]}"] = dict(zip(header, cells))
    return header, out


def test_markdown_values_means_and_sds(synthetic):
    from lape_hub.evaluation.report import build_report

    cat, values = synthetic
    rep = build_report(cat, MODEL, X)
    header, table = _table(rep.to_markdown())
    labels = list(table)
    assert labels[0] == "base model —"
    seeds = [f"lape-sparse `{rid}`" for rid in SEEDS]
    assert labels[1:5] == seeds + ["lape-sparse (mean of 3 seeds) mean"]
    assert set(labels[5:]) == {f"random `{RANDOM}`", f"lora `{LORA}`"}
    assert not any("dddd" in l or "eeee" in l for l in labels)          # other lang, dev split
    base = table["base model —"]
    v = values["base"]
    assert base[f"{X}→en chrF++"] == f"{v['x2en_chrf']:.2f} [{v['x2en_chrf'] - 2.5:.1f}, " \
                                     f"{v['x2en_chrf'] + 3.0:.1f}]"
    assert base[f"ppl {X} ↓"] == f"{v['ppl']:.2f}"                       # no interval stored
    assert base["EN: ppl eng ↓"] == f"{v['en_ppl']:.2f}"
    assert base["EN: topic acc_ll"].startswith(f"{v['en_topic_ll']:.2f} [")
    assert "EN: topic acc_gen" not in header and "belebele acc_ll" not in header  # no data
    assert table[seeds[1]]["seed"] == "1" and table[seeds[1]]["trainable params"] == "36,864"
    assert table[f"lora `{LORA}`"]["trainable params"] == "40,000"
    mean = table["lape-sparse (mean of 3 seeds) mean"]
    assert mean["seed"] == "3 seeds" and mean["run"] == "mean"
    for key, col in (("x2en_bleu", f"{X}→en BLEU"), ("en2x_chrf", f"en→{X} chrF++"),
                     ("ppl", f"ppl {X} ↓"), ("en_topic_ll", "EN: topic acc_ll")):
        xs = np.array([values[rid][key] for rid in SEEDS])
        assert mean[col] == f"{xs.mean():.2f} ± {xs.std(ddof=1):.2f}", col
    two = np.array([values[rid]["topic_gen"] for rid, s in SEEDS.items() if s != 2])
    assert mean["topic acc_gen"] == f"{two.mean():.2f} ± {two.std(ddof=1):.2f} (n=2)"
    assert table[seeds[2]]["topic acc_gen"] == "—"


def test_seeds_with_other_settings_are_not_averaged(tmp_path):
    from lape_hub.evaluation.report import report_from_rows

    rows = [_eval_row(r, "lora", "topic", X, "acc_ll", v) for r, v in (("r1", 10), ("r2", 20))]
    adapters = [_adapter_row("r1", "lora", 0), _adapter_row("r2", "lora", 1, lr=5e-4)]
    rep = report_from_rows(MODEL, X, "test", rows, adapters)
    assert [r.seeds for r in rep.rows] == [1, 1]                       # lr differs: two runs
    adapters[1] = _adapter_row("r2", "lora", 1)
    rep = report_from_rows(MODEL, X, "test", rows, adapters)
    assert rep.rows[-1].is_mean and rep.rows[-1].cells["topic_ll"].value == pytest.approx(15)
    assert rep.rows[-1].cells["topic_ll"].sd == pytest.approx(np.std([10, 20], ddof=1))


def test_png_and_data_written(synthetic, tmp_path):
    from lape_hub.evaluation.report import build_report, write_report

    cat, _ = synthetic
    rep = build_report(cat, MODEL, X)
    paths = write_report(rep, tmp_path / "out", catalog_root=cat.root)
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    md = paths["markdown"].read_text()
    assert f"![{MODEL} · {X}]({paths['png'].name})" in md and "| base model |" in md
    data = pq.read_table(paths["data"]).to_pylist()
    assert len(data) == sum(len(r.cells) for r in rep.rows)
    mean = next(d for d in data if d["seeds"] == 3 and d["metric"] == "x2en_chrf")
    assert mean["value"] == pytest.approx(np.mean([d["value"] for d in data if d["seeds"] == 1
                                                   and d["method"] == "lape-sparse"
                                                   and d["metric"] == "x2en_chrf"]))


def test_cli_writes_report_and_imports_no_torch(synthetic, tmp_path):
    cat, values = synthetic
    code = ("import sys; from lape_hub.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy'\n")
    env = dict(os.environ, LAPE_HUB_CATALOG=str(cat.root))
    out = tmp_path / "rep"
    r = subprocess.run([sys.executable, "-c", code, "report", "--model", MODEL, "--lang", "mt",
                        "-o", str(out), "--data-format", "csv"], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0, r.stderr
    assert (out / f"{MODEL}.{X}.test.png").stat().st_size > 0
    assert (out / f"{MODEL}.{X}.test.csv").is_file()
    assert "7 systems × 9 metrics" in r.stdout          # base, 3 seeds, mean, lora, random
    r = run_cli("report", "--model", MODEL, "--lang", "Maltese", "--catalog", str(cat.root))
    assert r.returncode == 0 and "| base model |" in r.stdout
    assert f"{values['base']['x2en_chrf']:.2f}" in r.stdout


def test_cli_errors_one_line_exit_2(synthetic, tmp_path):
    cat, _ = synthetic
    before = tree_hashes(cat.root)
    c = ("--catalog", str(cat.root))
    r = run_cli("report", "--model", MODEL, "--lang", "af", *c)
    assert_one_line_error(r, needle="no test results of gemma-3-270m · afr_Latn")
    r = run_cli("report", "--model", "nope", "--lang", "mt", *c)
    assert_one_line_error(r, needle="no test results of nope · mlt_Latn")
    r = run_cli("report", "--model", MODEL, "--lang", "mt", "--split", "train", *c)
    assert_one_line_error(r, needle="it has dev, test results: use --split test")
    r = run_cli("report", "--model", MODEL, "--lang", "xx-nolang", *c)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = run_cli("report", "--model", MODEL, "--lang", "mt", "-o", str(cat.root / "reports"), *c)
    assert_one_line_error(r, needle="refusing to write inside the catalog")
    (tmp_path / "file").write_text("x")
    r = run_cli("report", "--model", MODEL, "--lang", "mt", "-o", str(tmp_path / "file"), *c)
    assert_one_line_error(r, needle="is a file")
    assert tree_hashes(cat.root) == before


def test_one_system_with_an_infinite_perplexity_still_plots(tmp_path):
    from lape_hub.evaluation.report import plot_report, report_from_rows

    rows = [_eval_row("base", "base", "perplexity", X, "ppl", float("inf")),
            _eval_row("base", "base", "perplexity", EN, "ppl", 12.5)]
    rep = report_from_rows(MODEL, X, "test", rows)
    assert [c.key for c in rep.columns] == ["ppl", "en_ppl"] and len(rep.rows) == 1
    assert "| base model | — | — | — | — | inf | 12.50 |" in rep.to_markdown()
    png, data = plot_report(rep, tmp_path / "one.png", data_format="csv")
    assert png.stat().st_size > 0 and data.suffix == ".csv"
