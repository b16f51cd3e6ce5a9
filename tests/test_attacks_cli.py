"""Errors a new user meets (issue 9): a missing extra, a missing catalog folder, option values
that can't work, help texts. Each attack runs the real entry point in a subprocess and asserts
the exit code, one line on stderr, no traceback and a catalog whose files are unchanged.

Option values are tried in a process where torch cannot be imported: the parser's refusal
must come first, so no model code (nor the missing-extra message) is ever reached.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from attack_helpers import assert_one_line_error, run_cli, tree_hashes

MODEL = "gemma-3-270m"

# `lape-hub ARGS` in a process where `import torch` / `import transformers` fail, as in an
# install without the build extra
NO_TORCH = ("import sys\n"
            "sys.modules['torch'] = None\n"
            "sys.modules['transformers'] = None\n"
            "from lape_hub.cli import main\n"
            "main(sys.argv[1:])\n")


def run_without_torch(*args: str, env: dict[str, str] | None = None,
                      cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-c", NO_TORCH, *args], capture_output=True,
                          text=True, env=e, cwd=cwd, timeout=120)


def _layers(*first: int) -> list[list[int]]:
    return [list(first)] + [[7 + i] for i in range(17)]


@pytest.fixture(scope="module")
def cat(tmp_path_factory) -> Path:
    """A catalog holding gemma-3-270m · paper-12 sets for mlt_Latn and afr_Latn."""
    from lape_hub.catalog import Catalog
    from lape_hub.formats import import_neuron_sets

    root = tmp_path_factory.mktemp("cli-attacks")
    doc = {"model": MODEL, "refset": "paper-12", "n_layers": 18, "d_model": 640, "d_ffn": 2048,
           "langs": ["mlt_Latn", "afr_Latn"],
           "sets": {"mlt_Latn": {"layers": _layers(1, 2)}, "afr_Latn": {"layers": _layers(3)}}}
    src = root / "seed.json"
    src.write_text(json.dumps(doc))
    import_neuron_sets(Catalog(root / "catalog"), src, model=MODEL, langs=["mt", "af"],
                       refset="paper-12")
    return root / "catalog"


@pytest.fixture
def env(cat):
    return {"LAPE_HUB_CATALOG": str(cat)}


# --------------------------------------------------------------------------- missing extra
NEEDS_TORCH = [
    (("build", "--model", MODEL, "--refset", "paper-12", "--corpus", "."), "lape-hub[build]"),
    (("verify", "--model", MODEL, "--corpus", "."), "lape-hub[build]"),
    (("finetune", "--model", MODEL, "--lang", "mt", "--corpus", "."), "lape-hub[finetune]"),
]


@pytest.mark.parametrize("args,extra", NEEDS_TORCH, ids=lambda a: a[0] if isinstance(a, tuple) else None)
def test_without_torch_one_line_names_the_extra(args, extra, cat, env, tmp_path):
    before = tree_hashes(cat)
    r = run_without_torch(*args, env=env, cwd=tmp_path)
    line = assert_one_line_error(r, needle=extra)
    assert "torch" in line
    assert tree_hashes(cat) == before
    assert not any(tmp_path.iterdir())  # no run folder, no output left behind


def test_merge_without_torch(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    r = run_without_torch("merge", str(adapter), "-o", str(tmp_path / "merged"))
    assert_one_line_error(r, needle="lape-hub[finetune]")
    assert not (tmp_path / "merged").exists()


def test_any_command_meeting_a_missing_extra_is_one_line(tmp_path):
    """The entry point's safety net: commands without their own check (eval, plot alignment)
    still name the extra instead of a traceback."""
    for args in (("eval", "--model", MODEL, "--lang", "mt", "--no-record", "--tasks", "topic"),
                 ("plot", "alignment", "--model", MODEL, "--corpus", str(tmp_path), "--target",
                  "mt", "-o", str(tmp_path / "a.png"))):
        r = run_without_torch(*args, cwd=tmp_path)
        assert_one_line_error(r, needle="pip install 'lape-hub[build]'")
    assert not (tmp_path / "a.png").exists()


def test_build_without_torch_creates_no_catalog(tmp_path):
    """The check comes before the catalog folder is made."""
    new = tmp_path / "new-catalog"
    r = run_without_torch("build", "--model", MODEL, "--refset", "paper-12", "--corpus", ".",
                          "--catalog", str(new))
    assert_one_line_error(r, needle="pip install")
    assert not new.exists()


def test_plan_needs_no_torch(cat, env):
    """plan reads the catalog only: it works in an install without the build extra."""
    before = tree_hashes(cat)
    r = run_without_torch("plan", "--model", MODEL, "--refset", "paper-12", env=env)
    assert r.returncode == 0, r.stderr
    assert "lape-hub build" in r.stdout
    assert tree_hashes(cat) == before


# ---------------------------------------------------------------------- missing catalog
READERS = [
    ("fetch", "--model", MODEL, "--lang", "mt", "-o", "x.json"),
    ("sql", "SELECT count(*) FROM neurons"),
    ("overlap", "--model", MODEL),
    ("list",),
    ("export", "--model", MODEL, "-o", "x.json"),
    ("plan", "--model", MODEL, "--refset", "paper-12"),
]


@pytest.mark.parametrize("args", READERS, ids=lambda a: a[0])
@pytest.mark.parametrize("how", ["flag", "env"])
def test_missing_catalog_is_refused_by_readers(args, how, tmp_path):
    nowhere = tmp_path / "no-such-catalog"
    if how == "flag":
        r = run_cli(*args, "--catalog", str(nowhere), cwd=tmp_path, env={"LAPE_HUB_REPO": ""})
    else:
        r = run_cli(*args, cwd=tmp_path, env={"LAPE_HUB_CATALOG": str(nowhere), "LAPE_HUB_REPO": ""})
    line = assert_one_line_error(r, needle="no catalog folder")
    assert str(nowhere) in line
    assert not nowhere.exists() and not (tmp_path / "x.json").exists()


def test_missing_catalog_is_refused_by_verify_before_loading(tmp_path):
    nowhere = tmp_path / "no-such-catalog"
    r = run_cli("verify", "--model", MODEL, "--corpus", str(tmp_path), "--catalog", str(nowhere))
    assert_one_line_error(r, needle="no catalog folder")
    assert not nowhere.exists()


def test_catalog_that_is_a_file_is_refused(tmp_path, cat):
    f = tmp_path / "catalog.txt"
    f.write_text("not a folder")
    for args in (("list",), ("build", "--model", MODEL, "--refset", "paper-12", "--corpus", ".")):
        r = run_cli(*args, "--catalog", str(f))
        assert_one_line_error(r, needle=str(f))
    assert f.read_text() == "not a folder"


def test_new_catalog_needs_an_existing_parent(tmp_path):
    deep = tmp_path / "missing-parent" / "catalog"
    r = run_cli("build", "--model", MODEL, "--refset", "paper-12", "--corpus", str(tmp_path),
                "--catalog", str(deep))
    assert_one_line_error(r, needle="parent folder")
    assert not deep.parent.exists()


def test_import_creates_a_new_catalog(tmp_path, cat):
    """The documented exception: import (like build) makes the catalog folder it writes."""
    out = tmp_path / "sets.json"
    r = run_cli("export", "--model", MODEL, "--refset", "paper-12", "-o", str(out),
                env={"LAPE_HUB_CATALOG": str(cat)})
    assert r.returncode == 0, r.stderr
    new = tmp_path / "fresh"
    r = run_cli("import", str(out), "--model", MODEL, "--langs", "mt,af", "--refset", "paper-12",
                "--catalog", str(new))
    assert r.returncode == 0, r.stderr
    assert list((new / "neurons").rglob("*.parquet"))


# --------------------------------------------------------------- option values that can't work
BUILD = ("build", "--model", MODEL, "--refset", "paper-12", "--corpus", ".")
VERIFY = ("verify", "--model", MODEL, "--corpus", ".")
FINETUNE = ("finetune", "--model", MODEL, "--lang", "mt", "--corpus", ".")
PLAN = ("plan", "--model", MODEL, "--refset", "paper-12")
BAD_VALUES = [
    (BUILD, ("--max-tokens", "-5"), "--max-tokens"),
    (BUILD, ("--max-tokens", "0"), "--max-tokens"),
    (BUILD, ("--max-tokens", "1e3"), "--max-tokens"),
    (BUILD, ("--seq-len", "0"), "--seq-len"),
    (BUILD, ("--batch-size", "0"), "--batch-size"),
    (BUILD, ("--checkpoint-every", "-1"), "--checkpoint-every"),
    (BUILD, ("--top-rate", "0"), "--top-rate"),
    (BUILD, ("--filter-rate", "1.5"), "--filter-rate"),
    (BUILD, ("--bar-rate", "-0.1"), "--bar-rate"),
    (BUILD, ("--top-rate", "nan"), "--top-rate"),
    (BUILD, ("--lang", " , "), "--lang"),
    (PLAN, ("--max-tokens", "-5"), "--max-tokens"),
    (PLAN, ("--top-rate", "2"), "--top-rate"),
    (VERIFY, ("--seq-len", "1"), "--seq-len"),
    (VERIFY, ("--max-tokens", "0"), "--max-tokens"),
    (VERIFY, ("--langs", ","), "--langs"),
    (FINETUNE, ("--lr", "0"), "--lr"),
    (FINETUNE, ("--lr", "-1e-4"), "--lr"),
    (FINETUNE, ("--lr", "inf"), "--lr"),
    (FINETUNE, ("--batch-size", "0"), "--batch-size"),
    (FINETUNE, ("--seq-len", "0"), "--seq-len"),
    (FINETUNE, ("--tokens", "-100"), "--tokens"),
    (FINETUNE, ("--val-tokens", "0"), "--val-tokens"),
    (FINETUNE, ("--eval-every", "0"), "--eval-every"),
    (FINETUNE, ("--checkpoint-every", "-1"), "--checkpoint-every"),
    (FINETUNE, ("--weight-decay", "-0.01"), "--weight-decay"),
    (FINETUNE, ("--grad-clip", "0"), "--grad-clip"),
    (FINETUNE, ("--seed", "-1"), "--seed"),
    (FINETUNE, ("--lora-rank", "0"), "--lora-rank"),
    (FINETUNE, ("--lora-alpha", "0"), "--lora-alpha"),
]


def main_without_torch(monkeypatch, capsys, *args: str) -> subprocess.CompletedProcess:
    """``lape-hub ARGS`` in this process (fast) with torch and transformers unimportable;
    the result reads like run_cli's."""
    from lape_hub.cli import main

    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, e.value.code, out.out, out.err)


@pytest.mark.parametrize("cmd,bad,option", BAD_VALUES,
                         ids=[f"{c[0]} {' '.join(b)}" for c, b, _o in BAD_VALUES])
def test_bad_option_values_are_refused_by_the_parser(cmd, bad, option, cat, monkeypatch, capsys,
                                                     tmp_path):
    before = tree_hashes(cat)
    monkeypatch.setenv("LAPE_HUB_CATALOG", str(cat))
    monkeypatch.chdir(tmp_path)
    r = main_without_torch(monkeypatch, capsys, *cmd, *bad)
    line = assert_one_line_error(r, needle=option)
    assert "pip install" not in line  # refused before the command body ran
    assert tree_hashes(cat) == before
    assert not any(tmp_path.iterdir())


# the same through the console entry point, for read-only commands too (a sample)
ENTRY_POINT = [
    (BUILD, ("--max-tokens", "-5"), "--max-tokens"),
    (FINETUNE, ("--lr", "0"), "--lr"),
    (("overlap", "--model", MODEL), ("--langs", ",,"), "--langs"),
    (("sql", "SELECT 1"), ("--timeout", "-1"), "--timeout"),
    (("sql", "SELECT 1"), ("--max-rows", "0"), "--max-rows"),
]


@pytest.mark.parametrize("cmd,bad,option", ENTRY_POINT,
                         ids=[f"{c[0]} {' '.join(b)}" for c, b, _o in ENTRY_POINT])
def test_bad_option_values_through_the_entry_point(cmd, bad, option, cat, env, tmp_path):
    before = tree_hashes(cat)
    r = run_without_torch(*cmd, *bad, env=env, cwd=tmp_path)
    line = assert_one_line_error(r, needle=option)
    assert "pip install" not in line
    assert tree_hashes(cat) == before
    assert not any(tmp_path.iterdir())


def test_wrong_script_is_one_line(cat, env, tmp_path):
    before = tree_hashes(cat)
    r = run_cli("fetch", "--model", MODEL, "--lang", "sr-Latn", "-o", str(tmp_path / "x.json"),
                env=env)
    line = assert_one_line_error(r, needle="srp_Cyrl")
    assert "Latin script" in line
    assert tree_hashes(cat) == before and not (tmp_path / "x.json").exists()


def test_wrong_script_in_an_import_changes_nothing(cat, env, tmp_path):
    out = tmp_path / "sets.json"
    assert run_cli("export", "--model", MODEL, "--refset", "paper-12", "-o", str(out),
                   env=env).returncode == 0
    before = tree_hashes(cat)
    r = run_cli("import", str(out), "--model", MODEL, "--langs", "mt_MT,sr-Latn",
                "--refset", "paper-12", env=env)
    assert_one_line_error(r, needle="sr-Latn")
    assert tree_hashes(cat) == before


def test_empty_catalog_variable_means_the_embedded_catalog(tmp_path):
    """LAPE_HUB_CATALOG= (set but empty) is unset, not the current folder."""
    from lape_hub.paths import ROOT

    r = run_cli("list", env={"LAPE_HUB_CATALOG": ""}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"catalog: {ROOT / 'catalog'}" in r.stdout


def test_unknown_option_is_one_line(env):
    r = run_cli("build", "--max-tokenz", "5", env=env)
    assert_one_line_error(r, needle="--max-tokens")


# ----------------------------------------------------------------------------- --langs syntax
def test_langs_separators_are_the_same_everywhere(cat, env):
    """Comma, spaces and repetition give the same result."""
    outs = set()
    for langs in (["--langs", "mt,af"], ["--langs", "mt af"], ["--langs", "mt", "--langs", "af"],
                  ["--langs", " mt , af "]):
        r = run_cli("overlap", "--model", MODEL, "--refset", "paper-12", "--format", "csv",
                    *langs, env=env)
        assert r.returncode == 0, r.stderr
        outs.add(r.stdout)
    assert len(outs) == 1 and "mlt_Latn" in outs.pop()


# ------------------------------------------------------------------------------- help texts
def _all_commands():
    from lape_hub.cli import COMMANDS

    for name, target in sorted(COMMANDS.items()):
        module, attr = target.split(":")
        cmd = getattr(importlib.import_module(module), attr)
        stack = [(name, cmd)]
        while stack:
            path, c = stack.pop()
            yield path, c
            if isinstance(c, click.Group):
                stack += [(f"{path} {n}", sub) for n, sub in c.commands.items()]


def test_every_option_of_every_command_has_help():
    missing = [f"{path} {p.opts[0]}" for path, cmd in _all_commands() for p in cmd.params
               if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()]
    assert not missing, f"options without help: {missing}"


def test_every_langs_option_parses_the_same_way():
    from lape_hub.cli._common import LANGS_SYNTAX, langs_callback

    seen = []
    for path, cmd in _all_commands():
        for p in cmd.params:
            if isinstance(p, click.Option) and p.multiple and (p.name or "").endswith("langs"):
                seen.append(f"{path} {p.opts[0]}")
                assert p.callback is langs_callback, f"{path} {p.opts[0]}"
                assert LANGS_SYNTAX in (p.help or ""), f"{path} {p.opts[0]}"
    assert len(seen) >= 5, seen  # build, verify (2), overlap, import, export


# ------------------------------------------------------------------------ first model load
class _FakeSpec:
    alias, repo_id, revision = "tiny-gguf", "org/tiny", "main"
    gguf_package, gguf_file, total_params = "tiny-gguf-pkg", None, 250_000_000


def test_first_load_says_where_and_how_big_before_writing(tmp_path, monkeypatch, capsys):
    from lape_hub import models

    monkeypatch.setenv("LAPE_HUB_CACHE", str(tmp_path / "cache"))
    said_before_write = []

    class Pkg:
        MODEL_NAME = "tiny.gguf"

        @staticmethod
        def assemble(path):
            said_before_write.append(capsys.readouterr().err)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"gguf")
            return path

    monkeypatch.setattr(models, "_import_gguf_package", lambda name: Pkg)
    monkeypatch.setattr(models, "_convert_gguf", lambda src, out: (out / "model.safetensors").write_bytes(b"w"))
    target = models.ensure_gguf_cache(_FakeSpec())
    msg = said_before_write[0]
    assert str(target) in msg and "1.1 GB" in msg  # 4 bytes x 250M parameters + tokenizer
    assert (target / "model.safetensors").is_file()
    models.ensure_gguf_cache(_FakeSpec())  # cached: silent
    assert capsys.readouterr().err == ""


def test_first_load_refuses_a_full_disk(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from lape_hub import models
    from lape_hub.errors import LapeHubError

    monkeypatch.setenv("LAPE_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "_import_gguf_package", lambda name: type("P", (), {"MODEL_NAME": "x"}))
    monkeypatch.setattr(models.shutil, "disk_usage",
                        lambda p: SimpleNamespace(total=10**12, used=10**12 - 10**8, free=10**8))
    with pytest.raises(LapeHubError, match="needs about 1.4 GB free"):
        models.ensure_gguf_cache(_FakeSpec())
    assert not models.model_cache_dir("tiny-gguf").exists()
