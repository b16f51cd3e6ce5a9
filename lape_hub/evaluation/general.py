"""General ability through lm-evaluation-harness (``lm-eval``): MMLU, HellaSwag, ARC, PIQA,
Winogrande... on the already-loaded (adapted) model.

Each lm-eval task runs with ``lm_eval.simple_evaluate`` and its ``HFLM`` wrapper around the
model in memory, one task at a time, so a task whose data is unreachable (no network, no
local copy) is skipped with one line saying why while the others run. ``include`` names a
folder of lm-eval task YAML files (local tasks, e.g. on local JSON files: how the wiring is
tested offline).

lm-eval is optional (``pip install 'lape-hub[eval]'``); without it the task is skipped.

Example::

    >>> results, skipped = run_lm_eval(model, tok, ["arc_easy", "piqa"], limit=100)  # doctest: +SKIP
    >>> skipped                                                                       # doctest: +SKIP
    {'piqa': 'dataset baber/piqa unreachable (ConnectionError)'}
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from lape_hub.evaluation.tasks import EvalContext, Result, TaskSkipped

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn
    from transformers import PreTrainedTokenizerBase

NAME = "general"
#: The paper's general-ability tasks (lm-eval names).
PAPER_TASKS = ("mmlu", "hellaswag", "arc_easy", "arc_challenge", "piqa", "winogrande")

__all__ = ["NAME", "PAPER_TASKS", "run_lm_eval", "run"]


def _task_manager(names: Sequence[str], include: Path | None) -> Any:
    """A TaskManager that knows ``names``: the local folder alone when it holds them all
    (indexing lm-eval's own thousands of YAML files takes seconds), else both."""
    from lm_eval.tasks import TaskManager

    if include is not None:
        tm = TaskManager(include_path=str(include), include_defaults=False)
        if all(n in tm.all_tasks for n in names):
            return tm
    return TaskManager(include_path=str(include) if include else None)


def run_lm_eval(model: "nn.Module", tokenizer: "PreTrainedTokenizerBase", tasks: Sequence[str], *,
                limit: int | None = None, batch_size: int = 8, include: Path | None = None,
                seed: int = 0) -> tuple[list[Result], dict[str, str]]:
    """Run each lm-eval task on ``model``; ``(results, {skipped task: why})``."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise TaskSkipped("general: lm-eval is not installed (pip install 'lape-hub[eval]')"
                          ) from None
    from lape_hub.evaluation.generation import ensure_pad_token

    for name in ("lm-eval", "lm_eval", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ensure_pad_token(tokenizer)
    device = str(next(model.parameters()).device)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
    from lape_hub.evaluation.tasks import hub_unreachable

    tm = _task_manager(tasks, include)
    offline = hub_unreachable()
    results: list[Result] = []
    skipped: dict[str, str] = {}
    for name in tasks:
        if name not in tm.all_tasks:
            skipped[name] = "not an lm-eval task here"
            continue
        entry = tm.task_index.get(name)
        path = str(getattr(entry, "yaml_path", None) or "")
        local = include is not None and path.startswith(str(Path(include).resolve()))
        if offline and not local:
            skipped[name] = f"its data is on the Hub, which is unreachable ({offline})"
            continue
        start = time.perf_counter()
        try:
            out = lm_eval.simple_evaluate(
                model=lm, tasks=[name], task_manager=tm, limit=limit, bootstrap_iters=1000,
                log_samples=False, random_seed=seed, numpy_random_seed=seed + 1234,
                torch_random_seed=seed + 1234, fewshot_random_seed=seed + 1234,
                verbosity="ERROR")
        except Exception as e:  # unreachable data (no network), a broken task: skip, say why
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            skipped[name] = f"{type(e).__name__}: {first}"
            continue
        seconds = time.perf_counter() - start
        res = out["results"].get(name, {})
        cfg = out.get("configs", {}).get(name, {})
        n = out.get("n-samples", {}).get(name, {}).get("effective")
        version = out.get("versions", {}).get(name)
        dataset = str(cfg.get("dataset_path") or name)
        split = str(cfg.get("test_split") or cfg.get("validation_split") or "test")
        for key, value in sorted(res.items()):
            if "," not in key or "_stderr" in key or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            stderr = res.get(f"{metric}_stderr,{filt}")
            ci = ((100 * (value - 1.96 * stderr), 100 * (value + 1.96 * stderr))
                  if isinstance(stderr, (int, float)) else None)
            results.append(Result(
                task=NAME, direction=name, metric=metric, value=100 * float(value),
                n=int(n) if n is not None else 0, split=split, dataset=dataset,
                dataset_config=cfg.get("dataset_name"), ci=ci,
                prompt_hash=f"lm-eval:{name}@v{version}",
                metric_signature=f"lm-eval:{lm_eval.__version__}|task:{name}|v:{version}|"
                                 f"filter:{filt}|fewshot:{cfg.get('num_fewshot') or 0}",
                seconds=seconds))
    return results, skipped


def run(ctx: EvalContext) -> list[Result]:
    """The evaluator's entry point: ``ctx.general_tasks`` (default: the paper's)."""
    tasks = list(ctx.general_tasks or PAPER_TASKS)
    results, skipped = run_lm_eval(ctx.model, ctx.tokenizer, tasks, limit=ctx.limit,
                                   batch_size=ctx.batch_size, include=ctx.general_include)
    if not results:
        raise TaskSkipped("general: every task was skipped: " +
                          "; ".join(f"{k} ({v})" for k, v in skipped.items()))
    ctx.notes += [f"general: {name} skipped ({why})" for name, why in skipped.items()]
    return results
