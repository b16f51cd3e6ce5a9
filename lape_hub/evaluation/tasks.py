"""What every evaluation task shares: its context, its result rows, its data and prompts.

A task (one module each: :mod:`~lape_hub.evaluation.translation`, ``topic``, ``belebele``,
``perplexity``, ``general``) is data + a prompt template + how to score, declared once, like
lm-eval's tasks. Its ``run(ctx)`` returns :class:`Result` rows; a task whose data is missing
raises :class:`TaskSkipped` with one line naming what is missing, and the evaluator goes on
with the others.

The paper's exact prompt text (its Appendix E) is not available offline: the templates here
are written in its style, and every result stores the hash of the template it used
(:func:`template_hash`), so results of different templates are never mixed up.

Example::

    >>> template_hash("Translate from {src} to {tgt}.")
    'p:9635292e'
"""
from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from lape_hub.errors import LapeHubError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn
    from transformers import PreTrainedTokenizerBase

    from lape_hub.evaluation.generation import GenerationSettings

__all__ = ["TaskSkipped", "EvalContext", "Result", "Example", "template_hash", "read_split",
           "parallel_examples", "default_data_dir", "language_name"]

#: Hub dataset ids (what cards' model-index entries name).
FLORES_DATASET = "openlanguagedata/flores_plus"
SIB_DATASET = "Davlan/sib200"
BELEBELE_DATASET = "facebook/belebele"


class TaskSkipped(LapeHubError):
    """A task cannot run here (its data is missing or unreachable); the message says what."""


def template_hash(template: str) -> str:
    """``p:`` + 8 hex digits of the template's sha256 (stored with every row)."""
    return "p:" + hashlib.sha256(template.encode()).hexdigest()[:8]


def default_data_dir() -> Path:
    """The FLORES/SIB-200 folder: $LAPE_HUB_EVAL_DATA, else ``../shared/data/sib200``."""
    env = os.environ.get("LAPE_HUB_EVAL_DATA")
    if env:
        return Path(env)
    from lape_hub.paths import ROOT

    return ROOT.parent / "shared" / "data" / "sib200"


@dataclass
class EvalContext:
    """Everything a task needs: the model, the language, the data and the settings."""

    model: "nn.Module"
    tokenizer: "PreTrainedTokenizerBase"
    lang: str
    split: str = "test"
    limit: int | None = None
    data_dir: Path = field(default_factory=default_data_dir)
    generation: "GenerationSettings | None" = None
    batch_size: int = 8
    english: str = "eng_Latn"
    perplexity_langs: Sequence[str] = ()
    general_tasks: Sequence[str] = ()
    general_include: Path | None = None
    belebele_dir: Path | None = None
    progress: bool = False
    directions: str = "both"     # translation: both, to-en (X->English) or from-en
    notes: list[str] = field(default_factory=list)   # one line per skipped part of a task

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if self.generation is None:
            from lape_hub.evaluation.generation import GenerationSettings

            self.generation = GenerationSettings()


@dataclass
class Result:
    """One metric of one task on one model (becomes one ``evals`` row).

    ``direction``: ``src->tgt`` for translation, else the language of the evaluated text
    (or the lm-eval task). ``items``: per-example data for paired significance tests
    (ids and outputs or correctness); ``ci``: a 95 % bootstrap interval.
    """

    task: str
    direction: str
    metric: str
    value: float
    n: int
    split: str
    dataset: str
    dataset_config: str | None = None
    prompt_hash: str | None = None
    generation: dict[str, Any] | None = None
    metric_signature: str = ""
    ci: tuple[float, float] | None = None
    items: dict[str, Any] | None = None
    seconds: float = 0.0
    tokens_per_s: float | None = None


@dataclass(frozen=True)
class Example:
    """One FLORES sentence of SIB-200: its id (the same in every language), topic and text."""

    index_id: int
    category: str
    text: str


def read_split(data_dir: Path, lang: str, split: str) -> list[Example]:
    """``<data_dir>/<lang>/<split>.tsv`` (columns index_id, category, text), sorted by id.

    A missing folder or file raises :class:`TaskSkipped` naming it.
    """
    path = Path(data_dir) / lang / f"{split}.tsv"
    if not path.is_file():
        raise TaskSkipped(f"no {path}")
    out = []
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            try:
                out.append(Example(int(row["index_id"]), row["category"].strip(), row["text"].strip()))
            except (KeyError, ValueError, AttributeError, TypeError):
                raise TaskSkipped(f"{path}: needs columns index_id, category, text") from None
    return sorted(out, key=lambda e: e.index_id)


def parallel_examples(data_dir: Path, src: str, tgt: str, split: str,
                      limit: int | None = None) -> list[tuple[Example, Example]]:
    """Sentence pairs with the same ``index_id`` in both languages (first ``limit`` ids)."""
    a = {e.index_id: e for e in read_split(data_dir, src, split)}
    b = {e.index_id: e for e in read_split(data_dir, tgt, split)}
    ids = sorted(set(a) & set(b))
    if not ids:
        raise TaskSkipped(f"{src} and {tgt} share no sentence ids in {data_dir} ({split})")
    return [(a[i], b[i]) for i in ids[:limit]]


def hub_unreachable() -> str | None:
    """Why the Hugging Face Hub can't be reached (offline mode, no DNS), or None.

    Checked before a Hub download so an offline machine skips at once instead of retrying.
    """
    import socket

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").lower() in ("1", "true", "yes", "on"):
            return f"{var} is set"
    try:
        socket.getaddrinfo("huggingface.co", 443)
    except OSError as e:
        return f"no network ({e.__class__.__name__})"
    return None


def language_name(code: str) -> str:
    """``fra_Latn`` -> ``French`` (the code itself when unknown)."""
    try:
        from lape_hub.languages import resolve_language

        return resolve_language(code).name
    except LapeHubError:
        return code


def bootstrap_interval(values: Sequence[float], *, n: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (seeded: reproducible).

    >>> bootstrap_interval([1, 1, 1, 1])
    (1.0, 1.0)
    """
    import numpy as np

    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(lo), float(hi))


def sequence_logprobs(model: "nn.Module", tokenizer: "PreTrainedTokenizerBase",
                      pairs: Sequence[tuple[str, str]], batch_size: int = 8) -> list[float]:
    """Summed log-probability of each continuation given its context (lm-eval's
    ``loglikelihood``): context and continuation are tokenized apart and concatenated, so the
    continuation's tokens are exactly its own; rows are right-padded and masked.

    >>> sequence_logprobs(model, tok, [("Topic:", " sports")])   # doctest: +SKIP
    [-7.31]
    """
    import torch

    from lape_hub.evaluation.generation import ensure_pad_token

    from lape_hub.lm_loss import head_logits, lm_head_of

    pad_id = ensure_pad_token(tokenizer)
    device = next(model.parameters()).device
    head = lm_head_of(model)
    encoded = []
    for ctx, cont in pairs:
        c = tokenizer(ctx).input_ids
        t = tokenizer(cont, add_special_tokens=False).input_ids
        if not t:
            raise LapeHubError(f"empty continuation {cont!r}")
        encoded.append((c, t))
    out: list[float] = [0.0] * len(encoded)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (c, _) in enumerate(encoded):
        groups.setdefault(tuple(c), []).append(i)
    shared = [ix for ix in groups.values() if len(ix) > 1] if head is not None else []
    alone = sorted(set(range(len(encoded))) - {i for ix in shared for i in ix})
    with torch.inference_mode():
        for ix in shared:   # one pass over the context, its KV cache reused by every option
            scores = _shared_context_logprobs(head, encoded[ix[0]][0], [encoded[i][1] for i in ix],
                                              pad_id, device)
            for i, v in zip(ix, scores):
                out[i] = v
        for k in range(0, len(alone), batch_size):
            chunk = [encoded[i] for i in alone[k:k + batch_size]]
            width = max(len(c) + len(t) for c, t in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long, device=device)
            mask = torch.zeros((len(chunk), width), dtype=torch.long, device=device)
            for r, (c, t) in enumerate(chunk):
                seq = c + t
                ids[r, :len(seq)] = torch.tensor(seq, device=device)
                mask[r, :len(seq)] = 1
            if head is None:   # a model whose head lm_loss does not reproduce: its own logits
                hidden = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
            else:              # logits only where a continuation token is predicted
                hidden = head.decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            for r, (c, t) in enumerate(chunk):
                pos = torch.arange(len(c) - 1, len(c) + len(t) - 1, device=device)
                rows = hidden[r, pos]
                logp = torch.log_softmax(rows.float() if head is None else head_logits(head, rows), dim=-1)
                tgt = torch.tensor(t, device=device)
                out[alone[k + r]] = float(logp[torch.arange(len(t), device=device), tgt].sum())
    return out


def _shared_context_logprobs(head: Any, context: list[int], conts: list[list[int]], pad_id: int,
                             device: Any) -> list[float]:
    """Summed log-probabilities of several continuations of one context: the context runs
    once, its KV cache is repeated for the continuations (multiple-choice options)."""
    import torch

    from lape_hub.lm_loss import head_logits

    ctx_out = head.decoder(input_ids=torch.tensor([context], device=device), use_cache=True)
    first = torch.log_softmax(head_logits(head, ctx_out.last_hidden_state[0, -1]), dim=-1)
    scores = [float(first[t[0]]) for t in conts]
    longer = [j for j, t in enumerate(conts) if len(t) > 1]
    if not longer:
        return scores
    width = max(len(conts[j]) - 1 for j in longer)      # feed t[:-1], predict t[1:]
    ids = torch.full((len(longer), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(longer), len(context) + width), dtype=torch.long, device=device)
    mask[:, :len(context)] = 1
    for r, j in enumerate(longer):
        feed = conts[j][:-1]
        ids[r, :len(feed)] = torch.tensor(feed, device=device)
        mask[r, len(context):len(context) + len(feed)] = 1
    cache = ctx_out.past_key_values
    cache.batch_repeat_interleave(len(longer))
    hidden = head.decoder(input_ids=ids, attention_mask=mask, past_key_values=cache,
                          use_cache=True).last_hidden_state
    for r, j in enumerate(longer):
        rest = conts[j][1:]
        logp = torch.log_softmax(head_logits(head, hidden[r, :len(rest)]), dim=-1)
        scores[j] += float(logp[torch.arange(len(rest), device=device),
                                torch.tensor(rest, device=device)].sum())
    return scores
