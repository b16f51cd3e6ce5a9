"""Registry diffs between git revisions -> build requests and the workflow's matrix."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from lape_hub.errors import LapeHubError
from lape_hub.paths import registry_dir
from lape_hub.registry_changes import changed_since, format_requests, github_matrix

BIG_MODEL = """
[models."big-9b"]
repo_id = "org/big-9b"
revision = "main"
family = "llama"
n_layers = 2
d_model = 8
d_ffn = 16
total_params = 9000000000
activation = "silu"
"""


def _git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git repo holding a copy of the registry, one commit."""
    shutil.copytree(registry_dir(), tmp_path / "registry")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "add", ".")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "base")
    monkeypatch.setenv("LAPE_HUB_REGISTRY", str(tmp_path / "registry"))
    return tmp_path


def _commit(repo, msg="change"):
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", msg)
    return _git(repo, "rev-parse", "HEAD")


def _edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_no_change_asks_for_nothing(repo):
    base = _git(repo, "rev-parse", "HEAD")
    assert changed_since(base, repo=repo) == []
    assert format_requests([], "text") == "the registry change asks for nothing new"
    assert format_requests([], "github-matrix") == "matrix=[]"


def test_added_language_is_requested_for_every_model(repo):
    base = _git(repo, "rev-parse", "HEAD")
    _edit(repo / "registry/refsets.toml", '"ka", "ne"]', '"ka", "ne", "Basque"]')
    _commit(repo)
    reqs = changed_since(base, repo=repo)
    from lape_hub.registry import models as registry_models
    models = sorted(registry_models())
    assert [(r.model, r.refset, r.langs) for r in reqs] == [(m, "paper-12", ("eus_Latn",)) for m in models]
    rows = github_matrix(reqs, gpu_runner="gpu-box")
    gemma = next(r for r in rows if r["model"] == "gemma-3-270m")
    assert gemma == {"model": "gemma-3-270m", "refset": "paper-12", "langs": "eus_Latn",
                     "runner": "ubuntu-latest", "device": "cpu", "dtype": "auto"}
    llama = next(r for r in rows if r["model"] == "llama-3.1-8b")
    assert llama["runner"] == "gpu-box" and llama["device"] == "cuda" and llama["dtype"] == "bfloat16"


def test_renaming_a_language_to_its_code_is_no_change(repo):
    base = _git(repo, "rev-parse", "HEAD")
    _edit(repo / "registry/refsets.toml", '"mt", "af"', '"mlt_Latn", "Afrikaans"')
    _commit(repo)
    assert changed_since(base, repo=repo) == []


def test_new_model_builds_its_whole_set_and_needs_a_gpu_runner(repo, capsys):
    base = _git(repo, "rev-parse", "HEAD")
    with open(repo / "registry/models.toml", "a") as f:
        f.write(BIG_MODEL)
    _edit(repo / "registry/refsets.toml", '"ka", "ne"]', '"ka", "ne", "eu"]')
    _commit(repo)
    reqs = {(r.model, r.refset): r for r in changed_since(base, repo=repo)}
    assert reqs[("big-9b", "paper-12")].langs == ()           # all of it, not just Basque
    assert reqs[("gemma-3-270m", "paper-12")].langs == ("eus_Latn",)
    rows = github_matrix(list(reqs.values()))                 # no GPU runner configured
    assert "big-9b" not in {r["model"] for r in rows}
    assert "skipping big-9b" in capsys.readouterr().err
    out = format_requests(list(reqs.values()), "github-matrix", gpu_runner="g")
    assert out.startswith("matrix=") and {"model": "big-9b", "refset": "paper-12", "langs": "",
                                          "runner": "g", "device": "cuda",
                                          "dtype": "bfloat16"} in json.loads(out[7:])


def test_first_push_and_bad_revisions(repo):
    # a branch's first push (before = zeros): every model is new, its whole paper-12 set
    from lape_hub.registry import models
    reqs = changed_since("0" * 40, repo=repo)
    assert [(r.model, r.refset, r.langs) for r in reqs] == [(m, "paper-12", ()) for m in sorted(models())]
    with pytest.raises(LapeHubError, match="not a git revision"):
        changed_since("HEAD; rm -rf /", repo=repo)
    with pytest.raises(LapeHubError, match="git show"):
        changed_since("no-such-branch", repo=repo)


def test_plan_changed_since_prints_the_matrix(repo):
    from click.testing import CliRunner

    from lape_hub.cli import cli

    base = _git(repo, "rev-parse", "HEAD")
    _edit(repo / "registry/refsets.toml", '"ka", "ne"]', '"ka", "ne", "eu"]')
    _commit(repo)
    r = CliRunner().invoke(cli, ["plan", "--changed-since", base, "--format", "github-matrix",
                                 "--gpu-runner", "gpu"])
    assert r.exit_code == 0, r.output
    line = r.output.strip().splitlines()[-1]
    rows = json.loads(line.removeprefix("matrix="))
    assert {(x["model"], x["langs"], x["runner"]) for x in rows} >= {
        ("gemma-3-270m", "eus_Latn", "ubuntu-latest"), ("llama-3.1-8b", "eus_Latn", "gpu")}
    r = CliRunner().invoke(cli, ["plan", "--model", "GEMMA-3-270M", "--refset", "paper-12",
                                 "--langs", "mt, ne", "--format", "github-matrix"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().removeprefix("matrix=")) == [
        {"model": "gemma-3-270m", "refset": "paper-12", "langs": "mlt_Latn npi_Deva",
         "runner": "ubuntu-latest", "device": "cpu", "dtype": "auto"}]
    r = CliRunner().invoke(cli, ["plan", "--format", "json"])
    assert r.exit_code == 2 and "--changed-since" in r.output


def test_every_lape_hub_call_in_the_workflow_uses_real_options():
    """The publish workflow is a thin caller: each `lape-hub CMD --opt` it runs must exist."""
    import re

    import click

    from lape_hub.cli import cli
    from lape_hub.paths import ROOT

    text = (ROOT / ".github/workflows/publish-language.yml").read_text()
    text = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    text = re.sub(r"\\\n\s*", " ", text)              # join continued shell lines
    calls = re.findall(r"lape-hub (\w[\w-]*)([^\n]*)", text)
    assert {c for c, _ in calls} >= {"plan", "pull", "build", "finetune", "publish"}
    ctx = click.Context(cli)
    for name, rest in calls:
        cmd = cli.get_command(ctx, name)
        assert cmd is not None, name
        known = {o for p in cmd.params for o in p.opts + p.secondary_opts}
        for opt in re.findall(r"(?:^|\s)(--?[a-z][\w-]*)", rest):
            assert opt in known, f"lape-hub {name} has no option {opt}"
