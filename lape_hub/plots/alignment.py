"""Do representations align? Cosine similarity of mean-pooled hidden states of parallel
sentences, the target language against pivot languages, per layer (the paper's Figure 6).

Parallel text: a SIB-200/FLORES folder (``<corpus>/<code>/<split>.tsv``), rows matched by
``index_id``. Each sentence is encoded alone; its hidden states at every layer (layer 0 is
the embedding output) are averaged over its tokens, special tokens (BOS) excluded: BOS is
the same in every language and would make every pair look alike. The score of a pivot at a
layer is the mean cosine over the sentence pairs. ``before``/``after`` adaptation are two
runs on the same sentences.

Example::

    >>> model, tok = load_model("gemma-3-270m")                                   # doctest: +SKIP
    >>> texts = read_parallel("../shared/data/sib200", ["mlt_Latn", "eng_Latn"])  # doctest: +SKIP
    >>> a = alignment(model, tok, texts, "mlt_Latn", ["eng_Latn"])                 # doctest: +SKIP
    >>> a.averaged()                                                              # doctest: +SKIP
"""
from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from lape_hub.plots._figure import pyplot, save_picture, to_pandas

if TYPE_CHECKING:
    import pandas
    import pyarrow as pa
    from torch import nn

#: The paper's pivots: en, fr, de, es, it, ru, zh, ja, ar.
PAPER_PIVOTS = ("eng_Latn", "fra_Latn", "deu_Latn", "spa_Latn", "ita_Latn", "rus_Cyrl",
                "zho_Hans", "jpn_Jpan", "arb_Arab")


@dataclass(frozen=True)
class Alignment:
    """``cosine[s, p, l]``: mean cosine between ``target`` and ``pivots[p]`` at layer ``l``
    (0 = embeddings) in stage ``stages[s]`` (e.g. ``base``, ``adapted``)."""

    target: str
    pivots: list[str]
    stages: list[str]
    cosine: np.ndarray  # [n_stages, n_pivots, n_layers + 1]
    n_sentences: int

    def averaged(self) -> np.ndarray:
        """``[n_stages, n_pivots]``: the mean over layers."""
        return self.cosine.mean(axis=-1)

    def combine(self, other: "Alignment") -> "Alignment":
        """Stack the stages of two runs on the same target, pivots and sentences."""
        if (other.target, other.pivots, other.n_sentences) != (self.target, self.pivots,
                                                                self.n_sentences):
            raise ValueError("alignments differ in target, pivots or sentences")
        return Alignment(self.target, self.pivots, self.stages + other.stages,
                         np.concatenate([self.cosine, other.cosine]), self.n_sentences)

    def to_arrow(self) -> "pa.Table":
        """``stage, target, pivot, layer, cosine`` per layer, plus ``layer = -1`` rows holding
        the mean over layers."""
        import pyarrow as pa

        rows: dict[str, list[Any]] = {k: [] for k in ("stage", "target", "pivot", "layer",
                                                       "cosine", "n_sentences")}
        avg = self.averaged()
        for s, stage in enumerate(self.stages):
            for p, pivot in enumerate(self.pivots):
                values = [(l, float(v)) for l, v in enumerate(self.cosine[s, p])]
                for layer, v in values + [(-1, float(avg[s, p]))]:
                    rows["stage"].append(stage)
                    rows["target"].append(self.target)
                    rows["pivot"].append(pivot)
                    rows["layer"].append(layer)
                    rows["cosine"].append(v)
                    rows["n_sentences"].append(self.n_sentences)
        return pa.table({"stage": pa.array(rows["stage"], pa.string()),
                         "target": pa.array(rows["target"], pa.string()),
                         "pivot": pa.array(rows["pivot"], pa.string()),
                         "layer": pa.array(rows["layer"], pa.int32()),
                         "cosine": pa.array(rows["cosine"], pa.float64()),
                         "n_sentences": pa.array(rows["n_sentences"], pa.int64())})

    def to_pandas(self) -> "pandas.DataFrame":
        return to_pandas(self.to_arrow())


def read_parallel(corpus: str | os.PathLike, langs: Sequence[str], split: str = "dev",
                  max_sentences: int | None = None) -> dict[str, list[str]]:
    """Sentences of ``langs`` aligned by ``index_id`` (ids present in every language, in
    ascending order; at most ``max_sentences``)."""
    from lape_hub.errors import CorpusError
    from lape_hub.languages import resolve_language

    csv.field_size_limit(sys.maxsize)
    by_lang: dict[str, dict[str, str]] = {}
    for name in langs:
        code = resolve_language(name).code
        path = Path(corpus) / code / f"{split}.tsv"
        if not path.is_file():
            raise CorpusError(f"no parallel text for {code}: {path} not found")
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            if not reader.fieldnames or not {"index_id", "text"} <= set(reader.fieldnames):
                raise CorpusError(f"{path}: needs columns index_id and text")
            by_lang[code] = {row["index_id"]: row["text"] for row in reader
                             if (row["text"] or "").strip()}
    common = set.intersection(*(set(v) for v in by_lang.values())) if by_lang else set()
    ids = sorted(common, key=lambda x: (len(x), x))[:max_sentences]
    if not ids:
        raise CorpusError(f"no index_id shared by {', '.join(by_lang)} in {corpus} ({split})")
    return {code: [rows[i] for i in ids] for code, rows in by_lang.items()}


def pooled_states(model: "nn.Module", tokenizer: Any, texts: Sequence[str], *,
                  batch_size: int = 8, max_length: int = 256, progress: bool = False,
                  desc: str = "") -> np.ndarray:
    """``[n_layers + 1, n_texts, d_model]`` float64: each text's hidden states averaged over
    its non-special tokens, at every layer (0 = embeddings)."""
    import torch
    from tqdm.auto import tqdm

    from lape_hub.ffn import trunk

    body = trunk(model)
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    device = next(model.parameters()).device
    out: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for lo in tqdm(range(0, len(texts), batch_size), desc=desc or "hidden states",
                       disable=not progress, leave=False):
            enc = tokenizer(list(texts[lo:lo + batch_size]), return_tensors="pt", padding=True,
                            truncation=True, max_length=max_length)
            keep = enc["attention_mask"].bool() & ~torch.isin(enc["input_ids"], special)
            hs = body(input_ids=enc["input_ids"].to(device),
                      attention_mask=enc["attention_mask"].to(device),
                      output_hidden_states=True, use_cache=False).hidden_states
            w = keep.to(device, torch.float64).unsqueeze(-1)  # [b, t, 1]
            stack = torch.stack([h.to(torch.float64) for h in hs])  # [L+1, b, t, d]
            mean = (stack * w).sum(2) / w.sum(1).clamp(min=1)
            out.append(mean.cpu().numpy())
    model.train(was_training)
    return np.concatenate(out, axis=1)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of ``[..., n, d]`` arrays -> ``[..., n]``."""
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)


def alignment(model: "nn.Module", tokenizer: Any, texts: Mapping[str, Sequence[str]],
              target: str, pivots: Sequence[str], *, stage: str = "base", batch_size: int = 8,
              progress: bool = True) -> Alignment:
    """Mean cosine per layer between ``target``'s and each pivot's pooled hidden states.

    ``texts`` maps a language to its sentences, parallel by position (:func:`read_parallel`).
    """
    from tqdm.auto import tqdm

    n = len(texts[target])
    if any(len(texts[p]) != n for p in pivots):
        raise ValueError("the texts are not parallel (different numbers of sentences)")
    states = pooled_states(model, tokenizer, texts[target], batch_size=batch_size)
    rows = []
    for p in tqdm(pivots, desc=f"alignment {stage}", disable=not progress):
        other = pooled_states(model, tokenizer, texts[p], batch_size=batch_size)
        rows.append(_cosine(states, other).mean(axis=-1))  # [L+1]
    return Alignment(target, list(pivots), [stage], np.asarray(rows)[None], n)


def corpus_alignment(model: "nn.Module", tokenizer: Any, corpus: str | os.PathLike,
                     target: str, pivots: Sequence[str] = PAPER_PIVOTS, *, split: str = "dev",
                     max_sentences: int | None = 100, stage: str = "base",
                     batch_size: int = 8, progress: bool = True) -> Alignment:
    """:func:`alignment` on the parallel sentences of a SIB-200/FLORES folder."""
    from lape_hub.languages import resolve_language

    t = resolve_language(target).code
    ps = [resolve_language(p).code for p in pivots]
    texts = read_parallel(corpus, [t, *ps], split, max_sentences)
    return alignment(model, tokenizer, texts, t, ps, stage=stage, batch_size=batch_size,
                     progress=progress)


def plot_alignment(a: Alignment, png: str | os.PathLike, *, title: str | None = None,
                   data_format: str = "parquet") -> tuple[Path, Path | None]:
    """Left: cosine per layer, one line per pivot (dashed: later stages). Right: the mean
    over layers per pivot and stage."""
    plt = pyplot()
    n_layers = a.cosine.shape[-1]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [3, 2]})
    cmap = plt.get_cmap("tab10")
    styles = ["-", "--", ":", "-."]
    for s, stage in enumerate(a.stages):
        for p, pivot in enumerate(a.pivots):
            ax.plot(np.arange(n_layers), a.cosine[s, p], styles[s % 4], color=cmap(p % 10),
                    linewidth=1.3, label=pivot if s == 0 else None)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("mean cosine")
    ax.set_xticks(np.arange(n_layers))
    ax.legend(fontsize=7, ncol=3)
    stages = " vs ".join(f"{st} ({styles[i % 4]})" for i, st in enumerate(a.stages))
    ax.set_title(f"{a.target} vs pivots, {a.n_sentences} parallel sentences; {stages}",
                 fontsize=9)
    avg = a.averaged()
    width = 0.8 / len(a.stages)
    x = np.arange(len(a.pivots))
    for s, stage in enumerate(a.stages):
        ax2.bar(x + (s - (len(a.stages) - 1) / 2) * width, avg[s], width, label=stage)
    ax2.set_xticks(x)
    ax2.set_xticklabels(a.pivots, rotation=60, ha="right", fontsize=8)
    ax2.set_ylabel("mean cosine over layers")
    lo = float(avg.min())
    ax2.set_ylim(max(0.0, lo - 0.1 * (1 - lo)), min(1.0, float(avg.max()) + 0.05))
    ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_picture(fig, png, a.to_arrow(), data_format=data_format)
