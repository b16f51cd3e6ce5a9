"""The evaluator: run any task on any model (base, with an adapter, or a merged folder).

:func:`load_system` loads what is evaluated and refuses an adapter made for another base
model *before* anything loads; :func:`evaluate` runs the tasks (a task whose data is missing
is skipped with one line, the others run), turns every result into an ``evals`` row and
writes the rows to the catalog.

Example::

    >>> system = load_system("gemma-3-270m", adapter="runs/mlt/adapter")          # doctest: +SKIP
    >>> run = evaluate(system, "mlt_Latn", ["translation", "topic"], limit=16)     # doctest: +SKIP
    >>> run.skipped                                                                # doctest: +SKIP
    {}
"""
from __future__ import annotations

import importlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from lape_hub.errors import AdapterMismatchError, LapeHubError
from lape_hub.evaluation.results import BASE, adapter_run_id, record_evals
from lape_hub.evaluation.tasks import EvalContext, Result, TaskSkipped, default_data_dir

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn
    from transformers import PreTrainedTokenizerBase

    from lape_hub.catalog import Catalog
    from lape_hub.evaluation.generation import GenerationSettings

#: task name -> module (each has ``run(ctx) -> list[Result]``), imported when it runs.
TASKS: dict[str, str] = {
    "translation": "lape_hub.evaluation.translation",
    "topic": "lape_hub.evaluation.topic",
    "belebele": "lape_hub.evaluation.belebele",
    "perplexity": "lape_hub.evaluation.perplexity",
    "general": "lape_hub.evaluation.general",
}
DEFAULT_TASKS = ("translation", "topic", "belebele", "perplexity")

#: tasks that also run on a control language (the forgetting check); translation and
#: perplexity already measure English from the target language's run.
CONTROL_TASKS = ("topic", "belebele", "general")

__all__ = ["TASKS", "DEFAULT_TASKS", "CONTROL_TASKS", "System", "EvalRun", "load_system",
           "evaluate", "evaluate_suite", "suite_plan", "done_tasks", "result_row", "adapter_run_id",
           "check_adapter_base"]


@dataclass
class System:
    """A loaded model to evaluate and who it is (base model, adapter run)."""

    model: "nn.Module"
    tokenizer: "PreTrainedTokenizerBase"
    name: str
    revision: str
    run_id: str = BASE
    method: str = BASE
    adapter_signature: str | None = None
    source: str = ""
    dtype: str = "float32"
    device: str = "cpu"


@dataclass
class EvalRun:
    """What :func:`evaluate` returns: the rows (as written) and what was skipped and why."""

    rows: list[dict[str, Any]]
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)


# ----------------------------------------------------------------------------- loading
def _identity(model: str) -> tuple[str, str]:
    """(name, revision): the registry alias and revision, or a local folder's name."""
    from lape_hub.registry import resolve_model

    try:
        spec = resolve_model(model)
    except LapeHubError:
        p = Path(model)
        return (p.name if p.exists() else model), "local" if p.exists() else "main"
    from lape_hub.builder import model_revision

    return spec.alias, model_revision(spec)


def check_adapter_base(adapter: str | os.PathLike, model: str) -> Any:
    """The adapter's config, or :class:`AdapterMismatchError` if it was made for another
    base model (by name, or for a local folder by its ``config.json``): nothing is loaded."""
    from lape_hub.sparse_adapter import AdapterConfig, _same_model

    cfg = AdapterConfig.load(adapter)
    folder = Path(model)
    if (folder / "config.json").is_file():
        try:
            mc = json.loads((folder / "config.json").read_text())
        except ValueError:
            raise AdapterMismatchError(f"{folder}/config.json is not valid JSON") from None
        mc = mc.get("text_config", mc)
        if cfg.model_type and mc.get("model_type") and \
                mc["model_type"].replace("_text", "") != cfg.model_type.replace("_text", ""):
            raise AdapterMismatchError(f"adapter was made for {cfg.model} (a {cfg.model_type} "
                                       f"model), not {folder} (a {mc['model_type']} model)")
        got = (mc.get("num_hidden_layers"), mc.get("hidden_size"), mc.get("intermediate_size"))
        want = (cfg.n_layers, cfg.d_model, cfg.d_ffn)
        if cfg.n_layers and None not in got and got != want:
            raise AdapterMismatchError(
                f"adapter was made for {cfg.model} ({want[0]} layers, d_model {want[1]}, d_ffn "
                f"{want[2]}); {folder} has {got[0]} layers, d_model {got[1]}, d_ffn {got[2]}")
    elif not _same_model(cfg, model):
        raise AdapterMismatchError(f"adapter was made for {cfg.model}, not {model}")
    return cfg


def load_system(model: str, *, adapter: str | os.PathLike | None = None,
                merged: str | os.PathLike | None = None, device: str = "cpu",
                dtype: str | None = None, catalog: "Catalog | None" = None) -> System:
    """Load the base ``model`` (alias, repo id or folder), with ``adapter`` applied
    (lape_hub.sparse_adapter), or the ``merged`` model folder instead.

    An adapter for another base model is refused before the model loads.
    """
    from lape_hub.evaluation.generation import ensure_pad_token, preferred_dtype
    from lape_hub.models import load_model

    if adapter is not None and merged is not None:
        raise LapeHubError("give --adapter or --merged, not both")
    dtype = dtype or preferred_dtype(device)
    name, revision = _identity(model)
    run_id, method, sig, source = BASE, BASE, None, str(model)
    cfg = None
    if adapter is not None:
        cfg = check_adapter_base(adapter, model)
        run_id, method, sig = adapter_run_id(adapter, catalog), cfg.method, cfg.signature
        source = str(adapter)
    if merged is not None:
        from lape_hub.sparse_adapter import ADAPTER_CONFIG_NAME

        merged = Path(merged)
        if not (merged / "config.json").is_file():
            raise LapeHubError(f"{merged} is not a model folder (no config.json)")
        if (merged / ADAPTER_CONFIG_NAME).is_file():
            cfg = check_adapter_base(merged, model)
            run_id, method, sig = adapter_run_id(merged, catalog), cfg.method, cfg.signature
        else:
            run_id, method = f"merged:{merged.name}", "merged"
        source = str(merged)
    lm, tok = load_model(str(merged) if merged is not None else model, device=device, dtype=dtype)
    if adapter is not None:
        from lape_hub.sparse_adapter import apply_adapter

        lm = apply_adapter(lm, adapter, model_name=None if Path(model).exists() else model)
    ensure_pad_token(tok)
    return System(lm, tok, name, revision, run_id, method, sig, source, dtype, device)


# ----------------------------------------------------------------------------- running
def result_row(system: System, lang: str, r: Result, *, params: dict[str, Any],
               created_at: datetime | None = None) -> dict[str, Any]:
    """One ``evals`` row for result ``r`` of ``system``."""
    from lape_hub import __version__
    from lape_hub.signature import signature

    sig = signature(system.name, system.revision, lang=lang, task=r.task, dir=r.direction,
                    split=r.split, n=r.n, prompt=r.prompt_hash or "-",
                    adapter=system.run_id)
    return {
        "model": system.name, "run_id": system.run_id, "lang": lang, "task": r.task,
        "direction": r.direction, "metric": r.metric, "split": r.split, "method": system.method,
        "revision": system.revision, "adapter_signature": system.adapter_signature,
        "value": float(r.value), "ci_low": r.ci[0] if r.ci else None,
        "ci_high": r.ci[1] if r.ci else None, "n_examples": int(r.n), "dataset": r.dataset,
        "dataset_config": r.dataset_config, "prompt_hash": r.prompt_hash,
        "generation": json.dumps(r.generation, sort_keys=True) if r.generation else None,
        "metric_signature": r.metric_signature, "signature": sig, "seconds": float(r.seconds),
        "tokens_per_s": r.tokens_per_s, "items": json.dumps(r.items, ensure_ascii=False)
        if r.items is not None else None, "lape_hub_version": __version__,
        "created_at": created_at or datetime.now(timezone.utc),
        "params": json.dumps(params, sort_keys=True),
    }


def evaluate(system: System, lang: str, tasks: Sequence[str] = DEFAULT_TASKS, *,
             split: str = "test", limit: int | None = None, data_dir: str | os.PathLike | None = None,
             generation: "GenerationSettings | None" = None, batch_size: int = 8,
             perplexity_langs: Sequence[str] = (), general_tasks: Sequence[str] = (),
             general_include: str | os.PathLike | None = None,
             belebele_dir: str | os.PathLike | None = None, directions: str = "both",
             catalog: "Catalog | str | os.PathLike | None" = None, record: bool = True,
             log: Callable[[str], None] | None = None) -> EvalRun:
    """Run ``tasks`` on ``system`` for ``lang``; write the rows to ``catalog`` (``record``).

    A task whose data is missing is skipped (``EvalRun.skipped[task]`` says what is missing,
    and ``log`` gets one line); the other tasks run.
    """
    from lape_hub.languages import resolve_language

    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise LapeHubError(f"unknown task {unknown[0]!r}; use {', '.join(TASKS)}")
    if limit is not None and limit < 1:
        raise LapeHubError("--limit must be >= 1")
    lang = resolve_language(lang).code
    data = Path(data_dir) if data_dir is not None else default_data_dir()
    ctx = EvalContext(model=system.model, tokenizer=system.tokenizer, lang=lang, split=split,
                      limit=limit, data_dir=data, generation=generation, batch_size=batch_size,
                      perplexity_langs=[resolve_language(x).code for x in perplexity_langs],
                      general_tasks=list(general_tasks),
                      general_include=Path(general_include) if general_include else None,
                      belebele_dir=Path(belebele_dir) if belebele_dir else data.parent / "belebele",
                      directions=directions)
    params = {"device": system.device, "dtype": system.dtype, "batch_size": batch_size,
              "limit": limit, "data": str(data), "source": system.source}
    run = EvalRun(rows=[])
    for task in tasks:
        start = time.perf_counter()
        try:
            results = importlib.import_module(TASKS[task]).run(ctx)
        except TaskSkipped as e:
            run.skipped[task] = str(e)
            if log:
                log(f"skipped {task}: {e}")
            continue
        for r in results:
            run.rows.append(result_row(system, lang, r, params=params))
        if log:
            log(f"{task}: {len(results)} results in {time.perf_counter() - start:.1f} s")
    run.notes = list(ctx.notes)
    if log:
        for note in run.notes:
            log(note)
    if record and run.rows:
        run.paths = record_evals(run.rows, catalog)
    return run


def done_tasks(model: str, run_id: str, lang: str, *, split: str, limit: int | None,
               catalog: "Catalog | str | os.PathLike | None" = None) -> set[str]:
    """Tasks of system ``run_id`` (an adapter run or ``base``) of ``model`` on ``lang`` already
    in the catalog's ``evals`` table with the same split and ``limit`` (so an interrupted
    suite resumes without redoing them); nothing is loaded."""
    from lape_hub.evaluation.results import read_evals

    try:
        rows = read_evals(catalog, model=model, lang=lang, run_id=run_id, split=split)
    except LapeHubError:
        return set()
    done = set()
    for row in rows:
        try:
            same = json.loads(row.get("params") or "{}").get("limit") == limit
        except ValueError:
            same = False
        if same:
            done.add(row["task"])
    return done


def suite_plan(lang: str, tasks: Sequence[str],
               control_langs: Sequence[str] = ("eng_Latn",)) -> list[tuple[str, list[str]]]:
    """``[(language, tasks)]`` a suite runs: ``tasks`` on ``lang``, then the
    :data:`CONTROL_TASKS` among them on each other control language (none left: no entry).

    >>> suite_plan("mt", ["translation", "topic"])
    [('mlt_Latn', ['translation', 'topic']), ('eng_Latn', ['topic'])]
    """
    from lape_hub.languages import resolve_language

    lang = resolve_language(lang).code
    plan = [(lang, list(tasks))]
    for control in control_langs:
        code = resolve_language(control).code
        controlled = [t for t in tasks if t in CONTROL_TASKS]
        if code != lang and controlled:
            plan.append((code, controlled))
    return plan


def evaluate_suite(system: System, lang: str, tasks: Sequence[str] = DEFAULT_TASKS, *,
                   control_langs: Sequence[str] = ("eng_Latn",), resume: bool = False,
                   split: str = "test", limit: int | None = None,
                   catalog: "Catalog | str | os.PathLike | None" = None, record: bool = True,
                   log: Callable[[str], None] | None = None, **kwargs: Any) -> list[EvalRun]:
    """:func:`evaluate` ``tasks`` on ``lang``, then the :data:`CONTROL_TASKS` among them on
    every control language (the forgetting check: did the target language cost English?).

    ``resume`` skips tasks whose rows (same split and limit) are already in the catalog.
    ``kwargs`` go to :func:`evaluate`. One :class:`EvalRun` per language evaluated.

    >>> runs = evaluate_suite(system, "mlt_Latn", ["translation", "topic", "perplexity"],
    ...                       limit=32)                                   # doctest: +SKIP
    >>> [r.rows[0]["lang"] for r in runs]                                  # doctest: +SKIP
    ['mlt_Latn', 'eng_Latn']
    """
    runs = []
    for code, todo in suite_plan(lang, tasks, control_langs):
        if resume and record:
            done = done_tasks(system.name, system.run_id, code, split=split, limit=limit,
                              catalog=catalog)
            if log and done & set(todo):
                log(f"{code}: already evaluated: {', '.join(t for t in todo if t in done)}")
            todo = [t for t in todo if t not in done]
        if todo:
            runs.append(evaluate(system, code, todo, split=split, limit=limit, catalog=catalog,
                                 record=record, log=log, **kwargs))
    return runs
