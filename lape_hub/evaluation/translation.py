"""Translation X→English and English→X on FLORES-200 sentences, scored with sacrebleu.

Data: the FLORES-200 sentences of SIB-200 (``<data>/<lang>/<split>.tsv``), parallel by
``index_id``. Prompt (zero-shot, in the style of the paper's Appendix E; see
:data:`TEMPLATE`): the model continues after ``<Target language>:``; the first line of the
greedy continuation is the translation.

Metrics, each stored with its sacrebleu signature:

- ``bleu_sent``: the paper's score, sentence BLEU (``effective_order``) averaged over sentences;
- ``bleu``: corpus BLEU; ``chrf++``: corpus chrF++ (``word_order=2``).

Intervals: a seeded 95 % bootstrap over sentences (for the corpus metrics on sacrebleu's
sufficient statistics, as its own bootstrap).

Example::

    >>> results = run(ctx)                                       # doctest: +SKIP
    >>> [(r.direction, r.metric, round(r.value, 1)) for r in results][:2]   # doctest: +SKIP
    [('fra_Latn->eng_Latn', 'bleu_sent', 17.5), ('fra_Latn->eng_Latn', 'bleu', 21.0)]
"""
from __future__ import annotations

from typing import Any, Sequence

from lape_hub.evaluation.generation import generate
from lape_hub.evaluation.significance import corpus_interval
from lape_hub.evaluation.tasks import (SIB_DATASET, EvalContext, Result, TaskSkipped,
                                       bootstrap_interval, language_name, parallel_examples,
                                       template_hash)

NAME = "translation"
DATASET = SIB_DATASET   # the FLORES-200 sentences as SIB-200 distributes and splits them
TEMPLATE = "Translate the following sentence from {src} to {tgt}.\n{src}: {text}\n{tgt}:"
PROMPT_HASH = template_hash(TEMPLATE)
N_BOOTSTRAP = 1000

__all__ = ["NAME", "TEMPLATE", "PROMPT_HASH", "prompt", "score", "run"]


def prompt(src: str, tgt: str, text: str) -> str:
    """The prompt for one sentence (``src``/``tgt`` are FLORES-200 codes).

    >>> print(prompt("fra_Latn", "eng_Latn", "Bonjour."))
    Translate the following sentence from French to English.
    French: Bonjour.
    English:
    """
    return TEMPLATE.format(src=language_name(src), tgt=language_name(tgt), text=text)


def score(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{metric: {"value", "signature", "ci"}}`` for bleu_sent, bleu and chrf++.

    >>> s = score(["the cat sat on the mat"], ["the cat sat on the mat"])
    >>> round(s["bleu"]["value"], 1), s["chrf++"]["signature"].split("|")[0]
    (100.0, 'nrefs:1')
    """
    from sacrebleu.metrics import BLEU, CHRF

    hyps, refs = list(hyps), list(refs)
    sent_bleu = BLEU(effective_order=True)
    per_sentence = [sent_bleu.sentence_score(h, [r]).score for h, r in zip(hyps, refs)]
    out: dict[str, dict[str, Any]] = {
        "bleu_sent": {"value": sum(per_sentence) / max(len(per_sentence), 1),
                      "signature": str(sent_bleu.get_signature()) + "|avg:sentence",
                      "ci": bootstrap_interval(per_sentence, n=N_BOOTSTRAP)},
    }
    for name, metric in (("bleu", BLEU()), ("chrf++", CHRF(word_order=2))):
        value = metric.corpus_score(hyps, [refs]).score
        sig = str(metric.get_signature())
        ci = corpus_interval(metric, hyps, refs, n=N_BOOTSTRAP) if len(hyps) > 1 else None
        out[name] = {"value": value, "signature": sig, "ci": ci}
    return out


def directions(lang: str, english: str = "eng_Latn", which: str = "both") -> list[tuple[str, str]]:
    """X→English and/or English→X (``which``: both, to-en, from-en; none for English).

    >>> directions("mlt_Latn", which="to-en")
    [('mlt_Latn', 'eng_Latn')]
    """
    if which not in ("both", "to-en", "from-en"):
        raise ValueError(f"directions: {which!r} is not both, to-en or from-en")
    if lang == english:
        return []
    out = [(lang, english), (english, lang)]
    return out if which == "both" else out[:1] if which == "to-en" else out[1:]


def run(ctx: EvalContext) -> list[Result]:
    """Translate ``ctx.split`` sentences both ways and score them."""
    dirs = directions(ctx.lang, ctx.english, ctx.directions)
    if not dirs:
        raise TaskSkipped(f"translation needs a language other than {ctx.english}")
    results: list[Result] = []
    for src, tgt in dirs:
        pairs = parallel_examples(ctx.data_dir, src, tgt, ctx.split, ctx.limit)
        prompts = [prompt(src, tgt, a.text) for a, _ in pairs]
        gen = generate(ctx.model, ctx.tokenizer, prompts, ctx.generation)
        hyps = [t.strip() for t in gen.texts]
        refs = [b.text for _, b in pairs]
        items = {"ids": [a.index_id for a, _ in pairs], "hyp": hyps, "ref": refs}
        for metric, s in score(hyps, refs).items():
            results.append(Result(
                task=NAME, direction=f"{src}->{tgt}", metric=metric, value=s["value"],
                n=len(pairs), split=ctx.split, dataset=DATASET, dataset_config=f"{src}-{tgt}",
                prompt_hash=PROMPT_HASH, generation=ctx.generation.to_dict(),
                metric_signature=s["signature"], ci=s["ci"], items=items,
                seconds=gen.seconds, tokens_per_s=gen.tokens_per_s))
    return results
