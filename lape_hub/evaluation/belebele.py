"""Reading comprehension on Belebele (multiple choice, 4 answers per question).

Data, first found wins: ``<belebele_dir>/<lang>.jsonl`` or ``<belebele_dir>/<lang>/test.jsonl``
(rows as in the Hub dataset: ``flores_passage, question, mc_answer1..4, correct_answer_num``),
else the Hub dataset ``facebook/belebele`` (config ``<lang>``, split ``test``) when it is
reachable. Otherwise the task is skipped with one line naming what is missing.

Scoring: ``acc_ll``, the answer whose text has the highest summed log-likelihood after
the passage and question (:data:`TEMPLATE`); a seeded bootstrap interval.

Example::

    >>> run(ctx)                                           # doctest: +SKIP
    TaskSkipped: belebele: no belebele/mlt_Latn.jsonl and facebook/belebele is unreachable
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lape_hub.evaluation.tasks import (BELEBELE_DATASET, EvalContext, Result, TaskSkipped,
                                       bootstrap_interval, hub_unreachable, sequence_logprobs,
                                       template_hash)

NAME = "belebele"
DATASET = BELEBELE_DATASET
TEMPLATE = "Passage: {passage}\nQuestion: {question}\nAnswer:"
PROMPT_HASH = template_hash(TEMPLATE)
FIELDS = ("flores_passage", "question", "mc_answer1", "mc_answer2", "mc_answer3", "mc_answer4",
          "correct_answer_num")

__all__ = ["NAME", "TEMPLATE", "load_questions", "run"]


def _local_file(folder: Path | None, lang: str) -> Path | None:
    if folder is None:
        return None
    for p in (folder / f"{lang}.jsonl", folder / lang / "test.jsonl"):
        if p.is_file():
            return p
    return None


def load_questions(lang: str, folder: Path | None = None) -> tuple[list[dict[str, Any]], str]:
    """``(rows, source)``; :class:`TaskSkipped` when neither local files nor the Hub have them."""
    path = _local_file(folder, lang)
    if path is not None:
        rows = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rows.append({k: row[k] for k in FIELDS})
            except (ValueError, KeyError, TypeError):
                raise TaskSkipped(f"belebele: {path} line {i} lacks {', '.join(FIELDS)}") from None
        return rows, str(path)
    where = f"no {folder / (lang + '.jsonl')} and " if folder is not None else ""
    offline = hub_unreachable()
    if offline:
        raise TaskSkipped(f"belebele: {where}the Hub dataset {DATASET} is unreachable ({offline})")
    try:
        from datasets import load_dataset

        ds = load_dataset(DATASET, lang, split="test")
        return [{k: r[k] for k in FIELDS} for r in ds], f"hf:{DATASET}"
    except Exception as e:  # no network, no such config, datasets missing: skip, say why
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise TaskSkipped(f"belebele: {where}the Hub dataset {DATASET} ({lang}) is "
                          f"unreachable ({first})") from None


def run(ctx: EvalContext) -> list[Result]:
    rows, source = load_questions(ctx.lang, ctx.belebele_dir)
    rows = rows[:ctx.limit]
    if not rows:
        raise TaskSkipped(f"belebele: {source} has no questions")
    pairs = []
    for r in rows:
        ctx_text = TEMPLATE.format(passage=r["flores_passage"], question=r["question"])
        pairs += [(ctx_text, " " + str(r[f"mc_answer{k}"])) for k in range(1, 5)]
    scores = sequence_logprobs(ctx.model, ctx.tokenizer, pairs, batch_size=ctx.batch_size)
    correct = []
    for i, r in enumerate(rows):
        s = scores[4 * i:4 * i + 4]
        pred = max(range(4), key=lambda j: s[j]) + 1
        correct.append(float(pred == int(r["correct_answer_num"])))
    return [Result(task=NAME, direction=ctx.lang, metric="acc_ll",
                   value=100 * sum(correct) / len(correct), n=len(correct), split="test",
                   dataset=DATASET, dataset_config=ctx.lang, prompt_hash=PROMPT_HASH,
                   metric_signature="acc|choices:4|ll:sum|source:" + source.split("/")[-1],
                   ci=tuple(100 * x for x in bootstrap_interval(correct)),
                   items={"ids": list(range(len(rows))), "correct": correct})]
