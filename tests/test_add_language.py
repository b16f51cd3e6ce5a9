"""`lape-hub add-language` end to end on a tiny random-init model (no downloads, offline)."""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from hub_server import hub  # noqa: F401 - fixture
from test_build_cli import synthetic_corpus, tiny_registry  # noqa: F401 - fixture

LANGS = ["mlt_Latn", "npi_Deva", "mkd_Cyrl", "kat_Geor"]


def make_corpus(root):
    """Synthetic text with train/dev/test splits."""
    corpus = synthetic_corpus(root / "corpus", LANGS)
    held = synthetic_corpus(root / "held", LANGS, n_docs=12, seed=1)
    for lang in LANGS:
        for split in ("dev", "test"):
            shutil.copy(held / lang / "train.tsv", corpus / lang / f"{split}.tsv")
    return corpus


@pytest.fixture
def setup(tiny_registry, monkeypatch):  # noqa: F811 - the imported fixture
    """The tiny registry, a corpus with train/dev/test splits, cwd in tmp (runs/ goes
    there), the Hub offline."""
    root = tiny_registry
    corpus = make_corpus(root)
    monkeypatch.chdir(root)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(root / "hf"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("LAPE_HUB_REPO", raising=False)
    monkeypatch.setenv("LAPE_HUB_CONFIG", str(root / "config.toml"))
    return root, corpus


def common(corpus):
    return ["--model", "tiny-llama", "--lang", "ne", "--refset", "tiny-3", "--corpus",
            str(corpus), "--max-tokens", "1500", "--seq-len", "64", "--tokens", "512",
            "--eval-every", "2", "--eval-tasks", "perplexity", "--eval-data", str(corpus),
            "--eval-limit", "8", "--dtype", "float32", "--quiet", "--hub-repo", "alice/cat"]


def cli(*args):
    from lape_hub.cli import cli as group

    r = CliRunner().invoke(group, list(args))
    assert r.exit_code == 0, (r.output, r.exception)
    return r.output


def count_loads(monkeypatch):
    """Count model loads (every stage loads through lape_hub.models.load_model)."""
    import lape_hub.models as M

    calls = []
    real = M.load_model

    def counting(*a, **k):
        calls.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(M, "load_model", counting)
    return calls


def evals_rows():
    from lape_hub.evaluation.results import read_evals

    return read_evals(None, model="tiny-llama", lang="npi_Deva")


def test_no_finetune_then_finetune_then_rerun_skips_every_stage(setup, monkeypatch, capsys):
    from lape_hub.add_language import add_language
    from lape_hub.catalog import Catalog

    root, corpus = setup
    loads = count_loads(monkeypatch)
    stage = root / "stage"

    # 1. --no-finetune: counts, LAPE, the base model's evaluation, the catalog staged
    out = cli("add-language", *common(corpus), "--no-finetune", "--dry-run", str(stage))
    assert "[1/4] counts + LAPE: 3 of 3 languages to count" in out, out
    lines = [x for x in out.splitlines() if x.startswith(("[1/3] ", "[2/3] ", "[3/3] "))]
    assert len(lines) == 3 and "ETA" not in lines[0], lines   # the builder's languages
    assert all(" · stage ETA " in x for x in lines[1:]), lines
    assert "[2/4] fine-tune: off (--no-finetune)" in out
    assert "[4/4] publish: what the Hub lacks, staging in" in out
    assert not (root / "runs").exists()
    assert (stage / "catalog" / ".lape-hub-staging").is_file()
    assert sorted(p.name for p in stage.iterdir()) == ["catalog"]
    staged = {p.relative_to(stage / "catalog").as_posix()
              for p in (stage / "catalog").rglob("*.parquet")}
    assert any(p.startswith("neurons/") for p in staged) and any(p.startswith("evals/")
                                                                 for p in staged)
    rows = evals_rows()
    assert {(r["run_id"], r["task"]) for r in rows} == {("base", "perplexity")}
    n_base = len(rows)
    cat = Catalog()
    ns = cat.neuron_set("tiny-llama", "ne", refset="tiny-3")
    assert f"neuron set: {ns.n_neurons:,} neurons" in out
    counts = {p: p.stat().st_mtime_ns for p in cat.root.glob("activation_counts/**/*.parquet")}
    assert len(counts) == 3
    n_loads = len(loads)
    assert n_loads == 2  # counting, then the base model's evaluation

    # 2. with fine-tuning: counts and the base evaluation are not redone
    out = cli("add-language", *common(corpus), "--dry-run", str(stage))
    assert "[1/4] counts + LAPE: already done" in out, out
    assert "[2/4] fine-tune: lape-sparse on" in out
    assert "base model: already evaluated (perplexity)" in out
    assert all(p.stat().st_mtime_ns == t for p, t in counts.items())
    runs = list((root / "runs" / "finetune" / "tiny-llama" / "npi_Deva").glob("lape-sparse-*"))
    assert len(runs) == 1 and (runs[0] / "run.json").is_file()
    run_id = json.loads((runs[0] / "run.json").read_text())["run_id"]
    assert runs[0].name == f"lape-sparse-{run_id}"
    assert f"adapter: runs/finetune/tiny-llama/npi_Deva/lape-sparse-{run_id}/adapter" in out
    repo = stage / "alice--tiny-llama-npi_Deva-lape-sparse"
    assert (repo / "lape_adapter.json").is_file() and (repo / "README.md").is_file()
    # evaluated before publishing: the card carries the adapter's perplexity
    assert "name: perplexity npi_Deva ppl" in (repo / "README.md").read_text()
    rows = evals_rows()
    assert {r["run_id"] for r in rows} == {"base", run_id}
    assert sum(r["run_id"] == "base" for r in rows) == n_base
    adapters = cat.read("adapters", model="tiny-llama", lang="npi_Deva").to_pylist()
    assert [a["run_id"] for a in adapters] == [run_id]
    assert len(loads) == n_loads + 2  # fine-tuning, then the adapter's evaluation

    # 3. a rerun (Python API): no stage loads a model, trains or writes a row
    run_json = runs[0] / "run.json"
    before = (run_json.stat().st_mtime_ns, len(evals_rows()), len(loads))
    lines = []
    result = add_language("tiny-llama", "npi_Deva", refset="tiny-3", corpus=corpus,
                          max_tokens=1500, seq_len=64, train_tokens=512, eval_every=2,
                          eval_tasks=["perplexity"], eval_data=corpus, eval_limit=8,
                          dtype="float32", hub_repo="alice/cat", dry_run=stage,
                          progress=False, echo=lines.append)
    assert [s.status for s in result.stages] == ["skipped", "skipped", "skipped", "ran"], lines
    assert (run_json.stat().st_mtime_ns, len(evals_rows()), len(loads)) == before
    assert result.run_id == run_id and result.n_neurons == ns.n_neurons
    assert result.best_val_loss == json.loads(run_json.read_text())["best_val_loss"]
    assert len(result.published) == 2 and all(p.staged is not None for p in result.published)
    assert all(p.stat().st_mtime_ns == t for p, t in counts.items())

    # 4. a language whose set LAPE left empty (mt here): one line, no model loaded
    ns_mt = cat.neuron_set("tiny-llama", "mt", refset="tiny-3")
    if ns_mt.n_neurons == 0:
        args = common(corpus)
        args[args.index("--lang") + 1] = "mt"
        code, line = run_main(capsys, "add-language", *args)
        assert code == 2 and "LAPE selected no neuron of tiny-llama for mlt_Latn" in line, line
        assert len(loads) == before[2]


def run_main(capsys, *args):
    from lape_hub.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(args))
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return e.value.code, lines[0]


@pytest.mark.parametrize("change, needle", [
    ({"--lang": "xx-nolang"}, "unknown language"),
    ({"--refset": "tiny-99"}, "unknown reference set"),
    ({"--lang": "ka"}, "kat_Geor is not in reference set tiny-3"),
    ({"--model": "tiny-lama"}, "unknown model"),
    ({"--eval-tasks": "translate"}, "unknown task 'translate'"),
    ({"--refset": "tiny-12", "--lang": "de"}, "has no language 'deu_Latn'"),
    ({"--hub-repo": "not a repo"}, "repo"),
])
def test_bad_input_is_one_line_before_any_model_loads(setup, monkeypatch, capsys, change,
                                                      needle):
    import lape_hub.models as M

    root, corpus = setup
    monkeypatch.setattr(M, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    args = common(corpus) + ["--dry-run", str(root / "stage")]
    for opt, value in change.items():
        args[args.index(opt) + 1] = value
    code, line = run_main(capsys, "add-language", *args)
    assert code == 2 and line.startswith("error:") and needle in line, line
    assert not (root / "runs").exists() and not (root / "stage").exists()


def test_publish_token_dry_run_and_splits_are_checked_first(setup, monkeypatch, capsys):
    import lape_hub.models as M

    root, corpus = setup
    monkeypatch.setattr(M, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    code, line = run_main(capsys, "add-language", *common(corpus), "--publish")
    assert code == 2 and "no Hugging Face token" in line, line
    code, line = run_main(capsys, "add-language", *common(corpus), "--publish",
                          "--dry-run", str(root / "stage"))
    assert code == 2 and "not both" in line, line
    args = common(corpus)
    del args[args.index("--hub-repo"):args.index("--hub-repo") + 2]
    code, line = run_main(capsys, "add-language", *args, "--dry-run", str(root / "stage"))
    assert code == 2 and "no Hub repo given" in line, line
    (corpus / "npi_Deva" / "dev.tsv").unlink()   # fine-tuning validates on it
    code, line = run_main(capsys, "add-language", *common(corpus))
    assert code == 2 and "dev" in line and "npi_Deva" in line, line
    assert not list(root.glob("catalog/**/*.parquet"))


def test_publish_sends_what_the_hub_lacks_once(tiny_registry, hub, monkeypatch):  # noqa: F811
    root = tiny_registry
    corpus = make_corpus(root)
    monkeypatch.chdir(root)
    args = common(corpus)
    args[args.index("--hub-repo") + 1] = "alice/lape-catalog"
    args[args.index("--eval-tasks"):args.index("--eval-limit") + 2] = []   # no evaluation
    out = cli("add-language", *args, "--publish")
    assert "[3/4] evaluate: off" in out and "[4/4] publish: what the Hub lacks, to the Hub" in out
    catalog = hub.repo("alice/lape-catalog", "dataset")
    model = hub.repo("alice/tiny-llama-npi_Deva-lape-sparse", "model")
    n_commits = (len(catalog.commits), len(model.commits))
    assert n_commits == (2, 2), n_commits        # the repo's first commit, then lape-hub's
    assert f"{hub.url}/datasets/alice/lape-catalog" in out
    out = cli("add-language", *args, "--publish")
    assert "[4/4] publish: done" in out and "the Hub already has everything" in out, out
    assert (len(catalog.commits), len(model.commits)) == n_commits
