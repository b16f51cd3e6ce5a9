"""Add a language end to end: plan → count → LAPE and neuron sets → sparse fine-tune →
evaluate → publish what the Hub lacks.

Each stage composes the module that owns it (:mod:`lape_hub.builder`,
:mod:`lape_hub.finetune`, :mod:`lape_hub.evaluation.evaluator`, :mod:`lape_hub.publisher`)
and skips what is already done, so a rerun after a crash resumes where it stopped:

1. **counts + LAPE**: :func:`lape_hub.builder.plan`, then :func:`~lape_hub.builder.build`
   only when the plan is not up to date (it counts just the reference-set languages the
   catalog lacks; a language's counts also resume from their checkpoint).
2. **fine-tune**: lape-sparse on the language's neurons; skipped when the run's folder
   (:func:`lape_hub.finetune.default_out_dir`) already holds ``run.json`` (an interrupted
   run resumes from its checkpoint).
3. **evaluate**: the adapter and the base model (so cards can compare); tasks whose rows are
   in the catalog's ``evals`` table are skipped without loading the model.
4. **publish**: the catalog's new entries and the adapter, each only if the remote lacks it
   (``missing_only``); only with ``publish=True``, or staged offline with ``dry_run=DIR``.

Every input is checked before any model loads (model, language, reference set, corpus
splits, tasks, Hub repo and token, staging folder). Each stage prints one line when it
starts and one when it ends; long stages show the builder's and fine-tuning's progress
bars (with their ETA).

Example::

    >>> r = add_language("gemma-3-270m", "mt", corpus="../shared/data/sib200",
    ...                  train_tokens=20_000, eval_tasks=["perplexity"],
    ...                  dry_run="/tmp/stage")                         # doctest: +SKIP
    >>> print("\\n".join(r.summary_lines()))                           # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from lape_hub.errors import LapeHubError

if TYPE_CHECKING:  # pragma: no cover
    from lape_hub.catalog import Catalog
    from lape_hub.publisher import PublishResult

__all__ = ["STAGES", "StageReport", "AddLanguageResult", "add_language", "default_refset",
           "default_corpus", "with_eta"]

STAGES = ("counts + LAPE", "fine-tune", "evaluate", "publish")


@dataclass
class StageReport:
    """One stage's outcome: ``ran``, ``skipped`` (already done) or ``off`` (not asked for)."""

    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0


@dataclass
class AddLanguageResult:
    """What :func:`add_language` did, stage by stage, and where its outputs are."""

    model: str
    lang: str
    refset: str
    corpus: str                                  # the counts' corpus id
    stages: list[StageReport] = field(default_factory=list)
    n_neurons: int = 0
    run_id: str | None = None
    run_dir: Path | None = None
    adapter_dir: Path | None = None
    best_val_loss: float | None = None
    evals: dict[str, int] = field(default_factory=dict)      # run id -> rows written now
    published: list["PublishResult"] = field(default_factory=list)

    def stage(self, name: str) -> StageReport:
        return next(s for s in self.stages if s.name == name)

    def summary_lines(self) -> list[str]:
        """The closing summary: one line per stage, then where to find each output."""
        out = [f"{self.model} · {self.lang} · refset {self.refset} · corpus {self.corpus}"]
        for s in self.stages:
            out.append(f"  {s.name}: {s.status}" + (f" ({s.detail})" if s.detail else ""))
        out.append(f"  neuron set: {self.n_neurons:,} neurons · lape-hub fetch --model "
                   f"{self.model} --lang {self.lang} --refset {self.refset}")
        if self.adapter_dir is not None:
            loss = f" · best val loss {self.best_val_loss:.4f}" if self.best_val_loss is not None \
                else ""
            out.append(f"  adapter: {self.adapter_dir} (run {self.run_id}{loss})")
        if self.stage("evaluate").status != "off":
            out.append(f"  evaluations: lape-hub sql \"SELECT run_id, task, direction, metric, "
                       f"value FROM evals WHERE model = '{self.model}' AND lang = '{self.lang}'\"")
        for p in self.published:
            out.append(f"  {p.plan.repo_type} repo {p.plan.repo_id}: {p.summary()}")
        return out


def default_refset(lang: str) -> str:
    """The smallest registry reference set that holds ``lang`` (paper-12 first on a tie).

    >>> default_refset("mt")                                   # doctest: +SKIP
    'paper-12'
    """
    from lape_hub.languages import resolve_language
    from lape_hub.registry import refsets

    code = resolve_language(lang).code
    holding = [r for r in refsets().values() if code in r.langs]
    if not holding:
        raise LapeHubError(f"no reference set in the registry holds {code}: add it to one in "
                           "registry/refsets.toml")
    return min(holding, key=lambda r: (len(r.langs), r.name != "paper-12", r.name)).name


def default_corpus() -> Path:
    """``../shared/data/sib200`` next to the repo (the folder ``lape-hub eval`` reads)."""
    from lape_hub.paths import ROOT

    return ROOT.parent / "shared" / "data" / "sib200"


# ---------------------------------------------------------------------------- checks
def _check_refset(code: str, refset: str | None) -> str:
    from lape_hub.registry import resolve_refset

    if refset is None:
        return default_refset(code)
    ref = resolve_refset(refset)
    if code not in ref.langs:
        raise LapeHubError(
            f"{code} is not in reference set {ref.name} ({len(ref.langs)} languages): LAPE "
            f"picks a language's neurons against the other languages of its set, so add {code} "
            f"to [refsets.{ref.name}] in registry/refsets.toml, or leave --refset out "
            f"(the smallest set holding {code})")
    return ref.name


def _check_corpus(corpus: str, code: str, splits: Sequence[str]) -> None:
    from lape_hub.corpus import iter_documents
    from lape_hub.errors import CorpusError

    for split in splits:
        if next(iter_documents(corpus, code, split), None) is None:
            raise CorpusError(f"corpus {corpus} has no {split} text for {code}")


def _stage_line(echo: Callable[[str], None], k: int, text: str) -> None:
    echo(f"[{k}/{len(STAGES)}] {STAGES[k - 1]}: {text}")


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min``, ``2.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def with_eta(echo: Callable[[str], None], start: float) -> Callable[[str], None]:
    """``echo`` that adds the stage's ETA to the builder's per-language lines
    (``[i/n] lang: ...``): the mean time of the languages done so far times those left.

    >>> lines = []
    >>> say = with_eta(lines.append, time.time() - 20)
    >>> say("[3/5] mlt_Latn: 1,500 tokens")
    >>> lines
    ['[3/5] mlt_Latn: 1,500 tokens · stage ETA 30 s']
    """
    import re

    def say(line: str) -> None:
        m = re.match(r"\[(\d+)/(\d+)\] ", line)
        if m and int(m[1]) > 1:
            i, n = int(m[1]), int(m[2])
            line += f" · stage ETA {_duration((time.time() - start) / (i - 1) * (n - i + 1))}"
        echo(line)

    return say


# ---------------------------------------------------------------------------- the command
def add_language(model: str, lang: str, *, refset: str | None = None,
                 corpus: str | os.PathLike | None = None, split: str = "train",
                 max_tokens: int | None = None, finetune: bool = True,
                 train_tokens: int | None = None, val_split: str = "dev",
                 seq_len: int = 512, batch_size: int = 2, eval_every: int = 50, seed: int = 0,
                 eval_tasks: Sequence[str] = (), eval_limit: int | None = None,
                 eval_split: str = "test", eval_data: str | os.PathLike | None = None,
                 control_langs: Sequence[str] = ("eng_Latn",),
                 publish: bool = False, dry_run: str | os.PathLike | None = None,
                 hub_repo: str | None = None, namespace: str | None = None,
                 device: str = "cpu", dtype: str = "auto", bos: str = "count",
                 catalog: "Catalog | str | os.PathLike | None" = None, progress: bool = True,
                 echo: Callable[[str], None] = print) -> AddLanguageResult:
    """Give ``lang`` a neuron set, a sparse adapter and evaluations for ``model``, and
    publish them (see the module docstring for the stages).

    ``refset`` (default: the smallest registry set holding ``lang``) must contain ``lang``.
    ``corpus`` (default :func:`default_corpus`) is counted on ``split`` (at most
    ``max_tokens`` per language) and fine-tuned on (``train_tokens``, validated on
    ``val_split``). ``eval_tasks`` run on ``eval_data`` (default: the evaluator's folder).
    ``publish`` pushes to the Hub; ``dry_run`` stages the repos in that folder instead.

    >>> add_language("gemma-3-270m", "mt", corpus="../shared/data/sib200",
    ...              finetune=False, eval_tasks=["perplexity"])        # doctest: +SKIP
    """
    from lape_hub.builder import corpus_id, plan, resolve_counting_dtype
    from lape_hub.catalog import Catalog
    from lape_hub.languages import resolve_language
    from lape_hub.registry import resolve_model

    # -- every input is checked before any model loads ----------------------------------
    if publish and dry_run is not None:
        raise LapeHubError("give --publish or --dry-run DIR, not both")
    spec = resolve_model(model)
    code = resolve_language(lang).code
    ref_name = _check_refset(code, refset)
    tasks = list(dict.fromkeys(eval_tasks))
    if tasks:
        from lape_hub.evaluation.evaluator import TASKS

        bad = [t for t in tasks if t not in TASKS]
        if bad:
            raise LapeHubError(f"unknown task {bad[0]!r}; use {', '.join(TASKS)}")
    if eval_limit is not None and eval_limit < 1:
        raise LapeHubError("the eval limit must be >= 1")
    controls = [resolve_language(x).code for x in control_langs]
    corpus = str(corpus) if corpus is not None else str(default_corpus())
    _check_corpus(corpus, code, [split] + ([val_split] if finetune else []))
    cat = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
    stage_root = repo_id = ns = None
    if publish or dry_run is not None:
        from lape_hub.config import hub_token, load_settings, resolve_hub_repo
        from lape_hub.publisher import check_stage_dir

        repo_id = resolve_hub_repo(hub_repo)
        ns = namespace or load_settings().adapter_namespace or repo_id.split("/")[0]
        stage_root = check_stage_dir(dry_run, cat.root)
        if publish:
            hub_token(None, required=True)
    if str(dtype).lower() == "auto" and str(device).startswith("cuda"):
        import torch  # a GPU without bfloat16 (before Ampere) counts in float32, as build does

        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            dtype = "float32"
    count_dtype = resolve_counting_dtype(dtype, device)
    cid = corpus_id(corpus, split, max_tokens, dtype=count_dtype, bos=bos)
    result = AddLanguageResult(spec.alias, code, ref_name, cid)

    # -- 1. plan, count what is missing, LAPE and neuron sets ---------------------------
    t0 = time.time()
    p = plan(cat, spec.alias, ref_name, corpus=cid, source=corpus)
    if p.up_to_date:
        _stage_line(echo, 1, f"already done ({len(p.langs)} languages counted, LAPE current)")
        result.stages.append(StageReport(STAGES[0], "skipped", "already done"))
    else:
        _stage_line(echo, 1, f"{len(p.missing_counts)} of {len(p.langs)} languages to count "
                             f"({p.key.describe() if p.key else cid}); LAPE {p.lape_status}")
        from lape_hub.builder import build

        report = build(cat, spec.alias, ref_name, corpus, split=split, max_tokens=max_tokens,
                       seq_len=seq_len, device=device, dtype=count_dtype, bos=bos,
                       progress=progress, echo=with_eta(echo, time.time()))
        if report.waiting_for:  # build counts every missing language: only a bug lands here
            raise LapeHubError(f"LAPE for {ref_name} still waits for "
                               f"{', '.join(report.waiting_for[:8])}")
        seconds = time.time() - t0
        detail = f"counted {len(report.counted)} languages"
        _stage_line(echo, 1, f"done in {seconds:.0f} s: {detail}, LAPE and neuron sets updated")
        result.stages.append(StageReport(STAGES[0], "ran", detail, seconds))
    neuron_set = cat.neuron_set(spec.alias, code, refset=ref_name)
    result.n_neurons = neuron_set.n_neurons
    if finetune and not neuron_set.n_neurons:
        raise LapeHubError(f"LAPE selected no neuron of {spec.alias} for {code} in {ref_name}: "
                           "nothing to fine-tune (use --no-finetune, or another reference set)")

    # -- 2. sparse fine-tune ------------------------------------------------------------
    if not finetune:
        _stage_line(echo, 2, "off (--no-finetune)")
        result.stages.append(StageReport(STAGES[1], "off", "--no-finetune"))
    else:
        _finetune_stage(result, spec.alias, code, ref_name, corpus, neuron_set, cat,
                        train_split=split, val_split=val_split, train_tokens=train_tokens,
                        seq_len=seq_len, batch_size=batch_size, eval_every=eval_every,
                        seed=seed, device=device, dtype=dtype, progress=progress, echo=echo)

    # -- 3. evaluate the adapter and the base model ---------------------------------------
    if not tasks:
        _stage_line(echo, 3, "off (no --eval-tasks)")
        result.stages.append(StageReport(STAGES[2], "off", "no eval tasks"))
    else:
        _evaluate_stage(result, spec.alias, code, tasks, controls, cat,
                        limit=eval_limit, split=eval_split, data_dir=eval_data, device=device,
                        echo=echo)

    # -- 4. publish what the Hub lacks ------------------------------------------------------
    if repo_id is None:
        _stage_line(echo, 4, "off (pass --publish, or --dry-run DIR to stage offline)")
        result.stages.append(StageReport(STAGES[3], "off", "no --publish"))
    else:
        _publish_stage(result, cat, repo_id, ns, stage_root, echo=echo)
    return result


def _finetune_stage(result: AddLanguageResult, alias: str, code: str, refset: str, corpus: str,
                    neuron_set: Any, cat: "Catalog", *, train_split: str, val_split: str,
                    train_tokens: int | None, seq_len: int, batch_size: int, eval_every: int,
                    seed: int, device: str, dtype: str, progress: bool,
                    echo: Callable[[str], None]) -> None:
    from lape_hub.finetune import FinetuneConfig, _identity, default_out_dir, run_id
    from lape_hub.finetune import finetune as run_finetune

    t0 = time.time()
    cfg = FinetuneConfig(model=alias, lang=code, corpus=corpus, method="lape-sparse",
                         refset=refset, train_split=train_split, val_split=val_split,
                         train_tokens=train_tokens, seq_len=seq_len, batch_size=batch_size,
                         eval_every=eval_every, seed=seed, dtype=dtype, device=device)
    rid = run_id(cfg, _identity(cfg), neuron_set.content_hash)
    out = default_out_dir(cfg, rid)
    result.run_id, result.run_dir, result.adapter_dir = rid, out, out / "adapter"
    done = out / "run.json"
    if done.is_file():
        try:
            result.best_val_loss = float(json.loads(done.read_text())["best_val_loss"])
        except (ValueError, KeyError, TypeError):
            result.best_val_loss = None
        _stage_line(echo, 2, f"already done (run {rid}: {done})")
        result.stages.append(StageReport(STAGES[1], "skipped", f"run {rid} already done"))
        return
    resumes = (out / "checkpoint" / "last.pt").is_file()
    _stage_line(echo, 2, f"lape-sparse on {neuron_set.n_neurons:,} neurons, run {rid}"
                         + (" (resuming its checkpoint)" if resumes else "") + f" → {out}")
    res = run_finetune(cfg, out, neuron_set=neuron_set, catalog=cat, record=True,
                       progress=progress)
    result.best_val_loss = res.best_val_loss
    detail = f"run {rid}: {res.steps} steps, {res.tokens:,} tokens, best val loss " \
             f"{res.best_val_loss:.4f}"
    seconds = time.time() - t0
    _stage_line(echo, 2, f"done in {seconds:.0f} s: {detail}")
    result.stages.append(StageReport(STAGES[1], "ran", detail, seconds))


def _evaluate_stage(result: AddLanguageResult, alias: str, code: str,
                    tasks: list[str], controls: list[str], cat: "Catalog", *,
                    limit: int | None, split: str, data_dir: str | os.PathLike | None,
                    device: str, echo: Callable[[str], None]) -> None:
    from lape_hub.evaluation.evaluator import done_tasks, evaluate_suite, load_system, suite_plan
    from lape_hub.evaluation.results import BASE, adapter_run_id

    t0 = time.time()
    systems: list[tuple[str, Path | None]] = []
    if result.adapter_dir is not None:
        systems.append((adapter_run_id(result.adapter_dir, cat), result.adapter_dir))
    systems.append((BASE, None))   # the base model's rows, so the card can compare
    todo_langs = suite_plan(code, tasks, controls)
    parts, ran = [], False
    for rid, adapter in systems:
        who = "base model" if adapter is None else f"adapter {rid}"
        missing = {c: [t for t in ts if t not in done_tasks(alias, rid, c, split=split, limit=limit,
                                                            catalog=cat)]
                   for c, ts in todo_langs}
        n_missing = sum(len(ts) for ts in missing.values())
        if not n_missing:
            echo(f"  {who}: already evaluated ({', '.join(tasks)})")
            parts.append(f"{who}: already done")
            continue
        ran = True
        echo(f"  {who}: {n_missing} task runs to do")
        system = load_system(alias, adapter=adapter, device=device, catalog=cat)
        runs = evaluate_suite(system, code, tasks, control_langs=controls, resume=True,
                              split=split, limit=limit, data_dir=data_dir, catalog=cat,
                              record=True, log=lambda line: echo(f"    {line}"))
        n = sum(len(r.rows) for r in runs)
        result.evals[system.run_id] = n
        skipped = sorted({t for r in runs for t in r.skipped})
        parts.append(f"{who}: {n} rows" + (f", skipped {', '.join(skipped)}" if skipped else ""))
    seconds = time.time() - t0
    detail = "; ".join(parts)
    _stage_line(echo, 3, (f"done in {seconds:.0f} s: " if ran else "already done: ") + detail)
    result.stages.append(StageReport(STAGES[2], "ran" if ran else "skipped", detail, seconds))


def _publish_stage(result: AddLanguageResult, cat: "Catalog", repo_id: str, ns: str,
                   stage_root: Path | None, *, echo: Callable[[str], None]) -> None:
    from lape_hub.cards import AdapterInfo
    from lape_hub.publisher import adapter_repo_id, publish_adapter, publish_catalog

    t0 = time.time()
    how = f"staging in {stage_root} (dry run)" if stage_root is not None else "to the Hub"
    _stage_line(echo, 4, f"what the Hub lacks, {how}")
    result.published.append(publish_catalog(
        cat, repo_id, missing_only=True,
        dry_run=stage_root / "catalog" if stage_root is not None else None))
    if result.adapter_dir is not None:
        target = adapter_repo_id(AdapterInfo.from_dir(result.adapter_dir), None, ns)
        result.published.append(publish_adapter(
            result.adapter_dir, target, catalog=cat, catalog_repo=repo_id, missing_only=True,
            dry_run=stage_root / target.replace("/", "--") if stage_root is not None else None))
    for p in result.published:
        for line in p.plan.report_lines():
            echo(f"  {line}")
        echo(f"  {p.summary()}")
    pending = sum(len(p.plan.pending) for p in result.published)
    seconds = time.time() - t0
    if stage_root is not None:
        status, detail = "ran", f"dry run: {pending} files would change"
    elif pending:
        status, detail = "ran", f"{pending} files published"
    else:
        status, detail = "skipped", "the Hub already has everything"
    _stage_line(echo, 4, f"done in {seconds:.0f} s: {detail}")
    result.stages.append(StageReport(STAGES[3], status, detail, seconds))
