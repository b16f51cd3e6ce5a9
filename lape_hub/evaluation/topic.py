"""Topic classification on SIB-200 (7 topics), scored two ways.

- ``acc_gen``: as in the paper, the model generates the topic after the prompt (greedy);
  the prediction is the topic named first in the first line of the answer. At most
  :data:`MAX_NEW_TOKENS` tokens are generated (a topic name is 1-4 tokens; a first line
  that names none in 16 tokens is a miss), whatever the run's translation setting.
- ``acc_ll``: the topic whose name (``" " + topic``) has the highest summed
  log-likelihood after the prompt (lm-eval's multiple-choice ``acc``); robust for small
  models that do not follow the format.

The prompt (:data:`TEMPLATE`) is written in the style of the paper's Appendix E and lists
the topics; intervals are a seeded bootstrap over sentences.

Example::

    >>> parse_topic(" Sports. The sentence is about")
    'sports'
    >>> parse_topic("Science and technology")
    'science/technology'
"""
from __future__ import annotations

import re
from dataclasses import replace

from lape_hub.evaluation.generation import generate
from lape_hub.evaluation.tasks import (SIB_DATASET, EvalContext, Result, bootstrap_interval,
                                       read_split, sequence_logprobs, template_hash)

NAME = "topic"
DATASET = SIB_DATASET
TOPICS = ("science/technology", "travel", "politics", "sports", "health", "entertainment",
          "geography")
TEMPLATE = ("Classify the topic of the following sentence as one of: " + ", ".join(TOPICS) +
            ".\nSentence: {text}\nTopic:")
PROMPT_HASH = template_hash(TEMPLATE)
MAX_NEW_TOKENS = 16
_ALIASES = {"science": "science/technology", "technology": "science/technology"}

__all__ = ["NAME", "TOPICS", "TEMPLATE", "prompt", "parse_topic", "loglik_predictions", "run"]


def prompt(text: str) -> str:
    return TEMPLATE.format(text=text)


def parse_topic(answer: str) -> str | None:
    """The topic named first in ``answer`` (None when it names none)."""
    text = answer.strip().lower()
    best: tuple[int, str] | None = None
    for name in TOPICS + tuple(_ALIASES):
        m = re.search(r"\b" + re.escape(name) + r"\b", text)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), _ALIASES.get(name, name))
    return best[1] if best else None


def loglik_predictions(ctx: EvalContext, texts: list[str]) -> list[str]:
    """For each text, the topic with the highest log-likelihood after the prompt."""
    pairs = [(prompt(t), " " + topic) for t in texts for topic in TOPICS]
    scores = sequence_logprobs(ctx.model, ctx.tokenizer, pairs, batch_size=ctx.batch_size)
    k = len(TOPICS)
    out = []
    for i in range(len(texts)):
        row = scores[i * k:(i + 1) * k]
        out.append(TOPICS[max(range(k), key=lambda j: row[j])])
    return out


def run(ctx: EvalContext) -> list[Result]:
    examples = read_split(ctx.data_dir, ctx.lang, ctx.split)[:ctx.limit]
    texts = [e.text for e in examples]
    gold = [e.category for e in examples]
    settings = replace(ctx.generation, max_new_tokens=min(ctx.generation.max_new_tokens, MAX_NEW_TOKENS))
    gen = generate(ctx.model, ctx.tokenizer, [prompt(t) for t in texts], settings)
    by_gen = [parse_topic(t) for t in gen.texts]
    by_ll = loglik_predictions(ctx, texts)
    ids = [e.index_id for e in examples]
    out = []
    for metric, preds, extra in (("acc_gen", by_gen, {"generation": settings.to_dict(),
                                                      "seconds": gen.seconds,
                                                      "tokens_per_s": gen.tokens_per_s}),
                                 ("acc_ll", by_ll, {})):
        correct = [float(p == g) for p, g in zip(preds, gold)]
        out.append(Result(
            task=NAME, direction=ctx.lang, metric=metric, value=100 * sum(correct) / len(correct),
            n=len(correct), split=ctx.split, dataset=DATASET, dataset_config=ctx.lang,
            prompt_hash=PROMPT_HASH, metric_signature=f"acc|topics:{len(TOPICS)}|"
            + ("parse:first-topic" if metric == "acc_gen" else "ll:sum"),
            ci=tuple(100 * x for x in bootstrap_interval(correct)),
            items={"ids": ids, "correct": correct, "pred": [p or "" for p in preds]}, **extra))
    return out
