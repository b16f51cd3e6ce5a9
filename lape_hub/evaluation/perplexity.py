"""Perplexity on held-out text: the target language, English and any other languages.

Text: the ``split`` sentences of ``<data>/<lang>/<split>.tsv`` packed into rows of
``seq_len`` tokens (:func:`lape_hub.corpus.tokenize_and_pack`); the loss is lape-hub's one
LM loss (:func:`lape_hub.verify.perplexity`, through :func:`lape_hub.finetune.evaluate`),
so these numbers are comparable with fine-tuning's validation loss on the same split.

Example::

    >>> [(r.direction, round(r.value, 1)) for r in run(ctx)]      # doctest: +SKIP
    [('mlt_Latn', 41.2), ('eng_Latn', 19.8)]
"""
from __future__ import annotations

import math
import time

from lape_hub.errors import CorpusError
from lape_hub.evaluation.tasks import (SIB_DATASET, EvalContext, Result, TaskSkipped,
                                       read_split)

NAME = "perplexity"
DATASET = SIB_DATASET   # the FLORES-200 sentences as SIB-200 distributes and splits them
SEQ_LEN = 512

__all__ = ["NAME", "SEQ_LEN", "run", "languages"]


def languages(ctx: EvalContext) -> list[str]:
    """The target language, English, then ``ctx.perplexity_langs`` (no repeats)."""
    out: list[str] = []
    for lang in (ctx.lang, ctx.english, *ctx.perplexity_langs):
        if lang not in out:
            out.append(lang)
    return out


def run(ctx: EvalContext) -> list[Result]:
    from lape_hub.corpus import tokenize_and_pack
    from lape_hub.verify import perplexity

    out = []
    missing = []
    for lang in languages(ctx):
        try:
            texts = [e.text for e in read_split(ctx.data_dir, lang, ctx.split)][:ctx.limit]
        except TaskSkipped as e:
            missing.append(str(e))
            continue
        start = time.perf_counter()
        try:
            packed = tokenize_and_pack(texts, ctx.tokenizer, SEQ_LEN, min_tokens=2, lang=lang)
        except CorpusError as e:
            missing.append(str(e))
            continue
        ppl = perplexity(ctx.model, packed, batch_size=max(1, ctx.batch_size // 4))
        n_tokens = int(packed.attention_mask.sum())
        out.append(Result(
            task=NAME, direction=lang, metric="ppl", value=ppl, n=len(texts), split=ctx.split,
            dataset=DATASET, dataset_config=lang,
            metric_signature=f"ppl|seq:{SEQ_LEN}|packed|bos:doc|tokens:{n_tokens}",
            items={"nll": math.log(ppl), "tokens": n_tokens},
            seconds=time.perf_counter() - start))
    if not out:
        raise TaskSkipped("perplexity: " + "; ".join(missing))
    ctx.notes += [f"perplexity: skipped {m}" for m in missing]
    return out
