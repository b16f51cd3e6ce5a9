"""What a registry change asks the builder for: new models and new reference-set languages
between two git revisions, as build requests (and as a GitHub Actions matrix).

The publish-language workflow calls ``lape-hub plan --changed-since REV --format
github-matrix``; this module is what that command runs, so the diff logic is tested here
instead of living as inline Python in a workflow file.

Example::

    >>> reqs = changed_since("HEAD~1")                                    # doctest: +SKIP
    >>> [(r.model, r.refset, r.langs) for r in reqs]                      # doctest: +SKIP
    [('gemma-3-270m', 'paper-12', ('sco_Latn',))]
    >>> print(github_matrix(reqs, gpu_runner="gpu"))                      # doctest: +SKIP
    [{"model": "gemma-3-270m", "refset": "paper-12", "langs": "sco_Latn", ...}]
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from lape_hub.errors import LapeHubError, RegistryError
from lape_hub.paths import registry_dir

# models at or under this size count and fine-tune on a CPU runner in the job's time limit
CPU_MAX_PARAMS = 1_000_000_000
_REV = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/~^@{}-]{0,199}$")


@dataclass(frozen=True)
class BuildRequest:
    """One (model, reference set) the builder must bring up to date; ``langs`` empty means
    every language of the set the catalog lacks."""

    model: str
    refset: str
    langs: tuple[str, ...] = ()
    total_params: int = 0

    @property
    def device(self) -> str:
        return "cpu" if self.total_params <= CPU_MAX_PARAMS else "cuda"


def _toml_at(rev: str | None, name: str, repo: Path) -> dict[str, Any]:
    """registry/NAME as it was at ``rev`` (None or a missing file: empty)."""
    if rev is None:
        return {}
    from lape_hub.toml import tomllib

    rel = (registry_dir().resolve() / name).relative_to(repo.resolve()).as_posix()
    r = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=repo, capture_output=True, text=True)
    if r.returncode != 0:
        if "exists on disk, but not in" in r.stderr or "does not exist in" in r.stderr:
            return {}
        raise LapeHubError(f"git show {rev}:{rel} failed: {r.stderr.strip().splitlines()[0] if r.stderr.strip() else r.returncode}")
    try:
        return tomllib.loads(r.stdout)
    except tomllib.TOMLDecodeError as e:
        raise RegistryError(f"{rel} at {rev}: invalid TOML ({e})") from None


def _codes(langs: Any) -> list[str]:
    """Registry language names -> FLORES codes (a name that does not resolve stays as it is,
    so renaming ``mt`` to ``mlt_Latn`` is no change but a typo is still seen as new)."""
    from lape_hub.languages import resolve_language

    if not isinstance(langs, list):
        return []
    out = []
    for x in langs:
        try:
            out.append(resolve_language(str(x)).code)
        except LapeHubError:
            out.append(str(x))
    return out


def changed_since(before: str | None, *, head: str = "HEAD", repo: str | Path | None = None
                  ) -> list[BuildRequest]:
    """Build requests for what ``head``'s registry adds over ``before``'s: every model that is
    new (its ``paper-12`` set), and each language added to a listed reference set (for
    every model). ``before`` None or all zeros (a branch's first push): everything in head
    counts as new models only."""
    repo = Path(repo) if repo else registry_dir().resolve().parent
    for rev in (before, head):
        if rev is not None and not _REV.match(rev):
            raise LapeHubError(f"not a git revision: {rev!r}")
    if before is not None and set(before) == {"0"}:
        before = None
    new_models = _toml_at(head, "models.toml", repo).get("models", {})
    old_models = _toml_at(before, "models.toml", repo).get("models", {})
    new_sets = _toml_at(head, "refsets.toml", repo).get("refsets", {})
    old_sets = _toml_at(before, "refsets.toml", repo).get("refsets", {})
    want: dict[tuple[str, str], set[str]] = {}
    for model in sorted(set(new_models) - set(old_models)):
        want[(model, "paper-12")] = set()
    for name, rs in sorted(new_sets.items()):
        old = old_sets.get(name, {}).get("langs", [])
        if old == "all" or not isinstance(rs.get("langs"), list):
            continue
        old_codes = set(_codes(old))
        added = [c for c in _codes(rs["langs"]) if c not in old_codes]
        for model in sorted(new_models) if added else []:
            if (model, name) in want and not want[(model, name)]:
                continue  # a new model builds the whole set anyway
            want.setdefault((model, name), set()).update(added)
    return [BuildRequest(model, refset, tuple(sorted(langs)),
                         int(new_models.get(model, {}).get("total_params", 0)))
            for (model, refset), langs in sorted(want.items())]


def github_matrix(requests: list[BuildRequest], *, gpu_runner: str | None = None,
                  cpu_runner: str = "ubuntu-latest") -> list[dict[str, str]]:
    """The ``include`` list of a GitHub Actions matrix: one job per request, with the runner,
    device and dtype to count with. Models over 1B parameters need ``gpu_runner``; without
    one they are left out with a notice on stderr."""
    rows = []
    for r in requests:
        runner = cpu_runner if r.device == "cpu" else gpu_runner
        if not runner:
            print(f"::notice::skipping {r.model}: over 1B parameters and no GPU runner",
                  file=sys.stderr)
            continue
        rows.append({"model": r.model, "refset": r.refset, "langs": " ".join(r.langs),
                     "runner": runner, "device": r.device,
                     "dtype": "bfloat16" if r.device == "cuda" else "auto"})
    return rows


def format_requests(requests: list[BuildRequest], fmt: str = "text", *,
                    gpu_runner: str | None = None) -> str:
    """``text`` (one line each), ``json`` (the requests) or ``github-matrix``
    (``matrix=[...]``, ready to append to ``$GITHUB_OUTPUT``)."""
    if fmt == "github-matrix":
        return "matrix=" + json.dumps(github_matrix(requests, gpu_runner=gpu_runner))
    if fmt == "json":
        return json.dumps([asdict(r) for r in requests])
    if not requests:
        return "the registry change asks for nothing new"
    return "\n".join(f"{r.model} {r.refset}: {' '.join(r.langs) or 'all languages'} ({r.device})"
                     for r in requests)


def request_for(model: str, refset: str, langs: Sequence[str] = ()) -> BuildRequest:
    """One build request named by hand (the workflow's manual dispatch): the model and
    languages resolved through the registry."""
    from lape_hub.languages import resolve_language
    from lape_hub.registry import resolve_model, resolve_refset

    spec = resolve_model(model)
    return BuildRequest(spec.alias, resolve_refset(refset).name,
                        tuple(sorted({resolve_language(x).code for x in langs})),
                        spec.total_params)
