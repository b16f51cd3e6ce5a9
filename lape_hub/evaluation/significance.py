"""Is system B better than system A on the same sentences? Paired bootstrap tests.

- BLEU and chrF++: sacrebleu's own paired bootstrap (``sacrebleu.significance.PairedTest``,
  ``test_type="bs"``), on the stored hypotheses and references of both systems.
- Averaged sentence BLEU and accuracies: a paired bootstrap over examples (the same
  resampled examples for both systems, seeded), giving the difference's 95 % interval and
  a p-value (share of resamples where the difference is not in B's favour, as sacrebleu).

Both systems' rows come from the ``evals`` table (their ``items`` column), so comparing
needs no model; the two rows must cover the same examples.

Example::

    >>> c = compare_rows(base_row, adapter_row)                      # doctest: +SKIP
    >>> c.delta, c.p_value                                           # doctest: +SKIP
    (2.1, 0.012)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lape_hub.errors import LapeHubError

N_SAMPLES = 1000
SEED = 12345   # sacrebleu's default seed

__all__ = ["Comparison", "compare_rows", "compare_systems", "paired_bootstrap_mean"]


@dataclass(frozen=True)
class Comparison:
    """B versus A on one metric: both scores, B - A with a 95 % interval, and a p-value."""

    metric: str
    a: float
    b: float
    delta: float
    ci: tuple[float, float]
    p_value: float
    n: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "a": self.a, "b": self.b, "delta": self.delta,
                "ci_low": self.ci[0], "ci_high": self.ci[1], "p_value": self.p_value,
                "n": self.n, "test": self.method}


def paired_bootstrap_mean(a: Sequence[float], b: Sequence[float], *, n: int = N_SAMPLES,
                          seed: int = SEED) -> tuple[float, tuple[float, float], float]:
    """``(mean(b) - mean(a), 95 % interval of it, p-value)`` by resampling examples in pairs.

    >>> d, ci, p = paired_bootstrap_mean([0, 0, 1, 0], [1, 1, 1, 0])
    >>> d
    0.5
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.size == 0:
        raise LapeHubError("paired bootstrap needs the same, non-empty examples for both systems")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n, x.size))
    deltas = y[idx].mean(axis=1) - x[idx].mean(axis=1)
    delta = float(y.mean() - x.mean())
    lo, hi = np.quantile(deltas, [0.025, 0.975])
    # as sacrebleu's paired bs: how often the resampled difference is not in the observed direction
    p = float(((deltas <= 0) if delta > 0 else (deltas >= 0)).mean()) if delta else 1.0
    return delta, (float(lo), float(hi)), p


def corpus_scores(metric: Any, hyps: Sequence[str], refs: Sequence[str],
                  samples: np.ndarray) -> np.ndarray:
    """A sacrebleu corpus metric (BLEU, chrF) on resampled sentence sets: row ``i`` of
    ``samples`` holds sentence indices. Uses sacrebleu's sufficient statistics (as its own
    bootstrap does), so each resample costs a sum, not a re-tokenization."""
    stats = np.asarray(metric._extract_corpus_statistics(list(hyps), [list(refs)]))
    return np.array([metric._compute_score_from_stats(stats[ix].sum(axis=0).tolist()).score
                     for ix in samples])


def corpus_interval(metric: Any, hyps: Sequence[str], refs: Sequence[str], *,
                    n: int = N_SAMPLES, seed: int = SEED) -> tuple[float, float]:
    """95 % bootstrap interval of a corpus metric over sentences (seeded)."""
    rng = np.random.default_rng(seed)
    scores = corpus_scores(metric, hyps, refs, rng.integers(0, len(hyps), size=(n, len(hyps))))
    lo, hi = np.quantile(scores, [0.025, 0.975])
    return float(lo), float(hi)


def _items(row: dict[str, Any]) -> dict[str, Any]:
    items = row.get("items")
    if not items:
        raise LapeHubError(f"{row['task']} {row['metric']} of {row['run_id']} has no per-example "
                           "data to compare")
    return items


def compare_rows(row_a: dict[str, Any], row_b: dict[str, Any], *, n: int = N_SAMPLES) -> Comparison:
    """Paired comparison of two ``evals`` rows (read with ``items=True``) of one metric."""
    if (row_a["task"], row_a["direction"], row_a["metric"]) != \
            (row_b["task"], row_b["direction"], row_b["metric"]):
        raise LapeHubError("compare rows of the same task, direction and metric")
    ia, ib = _items(row_a), _items(row_b)
    if ia.get("ids") != ib.get("ids"):
        raise LapeHubError(f"the two systems were evaluated on different examples "
                           f"({len(ia.get('ids') or [])} vs {len(ib.get('ids') or [])}); "
                           "rerun both with the same --split and --limit")
    metric = row_a["metric"]
    if "correct" in ia:
        a, b = ia["correct"], ib["correct"]
        d, ci, p = paired_bootstrap_mean(a, b, n=n)
        return Comparison(metric, 100 * float(np.mean(a)), 100 * float(np.mean(b)), 100 * d,
                          (100 * ci[0], 100 * ci[1]), p, len(a), "paired-bs-examples")
    if "hyp" not in ia:
        raise LapeHubError(f"{metric} has no per-example outputs to compare")
    refs = ia["ref"]
    if metric == "bleu_sent":
        from sacrebleu.metrics import BLEU

        bleu = BLEU(effective_order=True)
        a = [bleu.sentence_score(h, [r]).score for h, r in zip(ia["hyp"], refs)]
        b = [bleu.sentence_score(h, [r]).score for h, r in zip(ib["hyp"], refs)]
        d, ci, p = paired_bootstrap_mean(a, b, n=n)
        return Comparison(metric, float(np.mean(a)), float(np.mean(b)), d, ci, p, len(a),
                          "paired-bs-sentences")
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    metrics = {"bleu": BLEU, "chrf++": lambda: CHRF(word_order=2)}
    if metric not in metrics:
        raise LapeHubError(f"no paired test for metric {metric!r}")
    # p-value: sacrebleu's paired bootstrap (A is its baseline)
    test = PairedTest([("a", ia["hyp"]), ("b", ib["hyp"])], {metric: metrics[metric]()}, [refs],
                      test_type="bs", n_samples=n)
    _sigs, stats = test()
    ra, rb = stats[next(k for k in stats if k != "System")]
    # interval of B - A: both systems scored on the same resampled sentence sets
    idx = np.random.default_rng(SEED).integers(0, len(refs), size=(n, len(refs)))
    deltas = (corpus_scores(metrics[metric](), ib["hyp"], refs, idx)
              - corpus_scores(metrics[metric](), ia["hyp"], refs, idx))
    lo, hi = np.quantile(deltas, [0.025, 0.975])
    return Comparison(metric, float(ra.score), float(rb.score), float(rb.score - ra.score),
                      (float(lo), float(hi)), float(rb.p_value), len(refs), "sacrebleu-paired-bs")


def compare_systems(catalog: Any, *, model: str, lang: str, run_a: str, run_b: str,
                    task: str | None = None, split: str = "test",
                    n: int = N_SAMPLES) -> list[dict[str, Any]]:
    """Every metric both systems have in the ``evals`` table (same model, language, split),
    compared pairwise; perplexity and lm-eval rows (no per-example data) are left out."""
    from lape_hub.evaluation.results import read_evals

    where: dict[str, str] = {"model": model, "lang": lang, "split": split}
    if task:
        where["task"] = task
    a = {(r["task"], r["direction"], r["metric"]): r
         for r in read_evals(catalog, items=True, run_id=run_a, **where)}
    b = {(r["task"], r["direction"], r["metric"]): r
         for r in read_evals(catalog, items=True, run_id=run_b, **where)}
    out = []
    for key in sorted(set(a) & set(b)):
        ia = a[key].get("items") or {}
        if not ("correct" in ia or "hyp" in ia):
            continue
        c = compare_rows(a[key], b[key], n=n)
        out.append({"task": key[0], "direction": key[1], **c.to_dict()})
    return out
