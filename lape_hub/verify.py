"""Verify language neurons: zero one language's neurons, measure perplexity on every language.

A good neuron set for language A raises A's perplexity much more than the others'. Zeroing
a neuron sets its intermediate value ``act(gate(x)) * up(x)`` to 0 (a pre-hook on
``down_proj``), in every layer at once.

Example::

    >>> from lape_hub.verify import perplexity_matrix
    >>> m = perplexity_matrix(model, tok, {"npi_Deva": npi_layers, "mlt_Latn": mlt_layers},
    ...                       {"npi_Deva": npi_test, "mlt_Latn": mlt_test})   # doctest: +SKIP
    >>> print(m.format())                                                      # doctest: +SKIP
    zeroed / eval       npi_Deva    mlt_Latn
    (baseline)             12.31       40.02
    npi_Deva              +85.20       +1.10
    mlt_Latn               +0.40     +210.50
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from lape_hub.corpus import PackedCorpus, tokenize_and_pack
from lape_hub.errors import NeuronSetFormatError
from lape_hub.ffn import FfnLayer, HookHandles, find_ffn_layers

if TYPE_CHECKING:
    import pandas
    import pyarrow as pa

__all__ = ["PerplexityMatrix", "perplexity", "perplexity_matrix", "verify_neuron_sets", "zero_neurons"]


@dataclass(frozen=True)
class PerplexityMatrix:
    """``ppl[i, j]``: perplexity on ``eval_langs[j]`` with the neurons of ``langs[i]`` zeroed."""

    langs: list[str]
    eval_langs: list[str]
    baseline: dict[str, float]
    ppl: np.ndarray

    @property
    def increase(self) -> np.ndarray:
        """``ppl - baseline`` per cell (rows: zeroed set, columns: evaluated language)."""
        return self.ppl - np.array([self.baseline[l] for l in self.eval_langs])[None, :]

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per cell: ``zeroed, eval_lang, baseline_ppl, ppl, increase``."""
        inc = self.increase
        return [
            {"zeroed": z, "eval_lang": e, "baseline_ppl": self.baseline[e], "ppl": float(self.ppl[i, j]),
             "increase": float(inc[i, j])}
            for i, z in enumerate(self.langs)
            for j, e in enumerate(self.eval_langs)
        ]

    def to_arrow(self) -> "pa.Table":
        """The cells of :meth:`to_rows` as a table, plus ``relative`` (increase / baseline)."""
        import pyarrow as pa

        rows = self.to_rows()
        cols = {k: [r[k] for r in rows] for k in ("zeroed", "eval_lang", "baseline_ppl", "ppl",
                                                  "increase")}
        cols["relative"] = [r["increase"] / r["baseline_ppl"] for r in rows]
        return pa.table({k: pa.array(v, pa.string() if k in ("zeroed", "eval_lang")
                                     else pa.float64()) for k, v in cols.items()})

    def to_pandas(self) -> "pandas.DataFrame":
        """:meth:`to_arrow` as a pandas DataFrame (needs pandas)."""
        from lape_hub.errors import require

        require("pandas", "plots", purpose="to_pandas()")
        return self.to_arrow().to_pandas()

    def to_csv(self) -> str:
        """The cells of :meth:`to_rows` as CSV text with a header line."""
        import csv
        import io

        buf = io.StringIO()
        w = csv.DictWriter(buf, ["zeroed", "eval_lang", "baseline_ppl", "ppl", "increase"], lineterminator="\n")
        w.writeheader()
        w.writerows(self.to_rows())
        return buf.getvalue()

    def to_markdown(self) -> str:
        """A Markdown table: baseline perplexity, then the increase per zeroed set."""
        head = "| zeroed \\ eval | " + " | ".join(self.eval_langs) + " |"
        rule = "|---|" + "---:|" * len(self.eval_langs)
        base = "| (baseline) | " + " | ".join(f"{self.baseline[l]:.2f}" for l in self.eval_langs) + " |"
        rows = ["| " + z + " | " + " | ".join(f"{v:+.2f}" for v in self.increase[i]) + " |"
                for i, z in enumerate(self.langs)]
        return "\n".join([head, rule, base, *rows])

    def format(self) -> str:
        """A plain-text table: a baseline row, then the increase per zeroed set."""
        w = max(12, *(len(l) + 2 for l in self.eval_langs))
        head = f"{'zeroed / eval':<16}" + "".join(f"{l:>{w}}" for l in self.eval_langs)
        base = f"{'(baseline)':<16}" + "".join(f"{self.baseline[l]:>{w}.2f}" for l in self.eval_langs)
        rows = [f"{z:<16}" + "".join(f"{v:>+{w}.2f}" for v in self.increase[i]) for i, z in enumerate(self.langs)]
        return "\n".join([head, base, *rows])


def _per_layer(neurons: Any) -> list[np.ndarray]:
    layers = getattr(neurons, "layers", neurons)  # a NeuronSet or a list of index arrays
    return [np.asarray(torch.as_tensor(l).cpu() if isinstance(l, torch.Tensor) else l, dtype=np.int64).reshape(-1)
            for l in layers]


def zero_neurons(model: nn.Module, neurons: Any, *, layers: Sequence[FfnLayer] | None = None) -> HookHandles:
    """Zero the given neurons (per-layer index arrays, or a ``NeuronSet``) until removed.

    >>> with zero_neurons(model, [np.array([0, 5]), np.array([], int)]):   # doctest: +SKIP
    ...     out = model(ids)
    """
    layers = list(layers) if layers is not None else find_ffn_layers(model)
    idx = _per_layer(neurons)
    if len(idx) != len(layers):
        raise NeuronSetFormatError(f"neuron set has {len(idx)} layers, the model has {len(layers)}")
    handles = []
    for layer, ix in zip(layers, idx):
        if ix.size == 0:
            continue
        if ix.min() < 0 or ix.max() >= layer.d_ffn:
            raise NeuronSetFormatError(
                f"layer {layer.index}: neuron index {int(ix.max() if ix.max() >= layer.d_ffn else ix.min())} "
                f"outside 0..{layer.d_ffn - 1}"
            )
        t = torch.as_tensor(ix, device=layer.down.parameter.device)

        def pre(_m: nn.Module, args: tuple, t: torch.Tensor = t) -> tuple:
            return (args[0].index_fill(-1, t, 0), *args[1:])

        handles.append(layer.down.module.register_forward_pre_hook(pre))
    return HookHandles(handles)


def perplexity(model: nn.Module, packed: PackedCorpus, *, batch_size: int = 2) -> float:
    """Token-level perplexity of ``model`` on packed rows (padding and row starts excluded):
    ``exp`` of :func:`lape_hub.finetune.evaluate`.

    >>> perplexity(model, tokenize_and_pack(texts, tok, 256, min_tokens=2))  # doctest: +SKIP
    31.7
    """
    from lape_hub.finetune import evaluate

    return math.exp(evaluate(model, packed, batch_size=batch_size))


def perplexity_matrix(
    model: nn.Module,
    tokenizer: Any,
    neuron_sets: Mapping[str, Any],
    eval_texts: Mapping[str, Sequence[str]],
    *,
    seq_len: int = 512,
    max_tokens: int | None = None,
    batch_size: int = 2,
    progress: bool = True,
) -> PerplexityMatrix:
    """Baseline perplexity per language and perplexity with each language's neurons zeroed.

    ``neuron_sets`` maps a language to per-layer neuron index arrays (or a ``NeuronSet``);
    ``eval_texts`` maps a language to held-out texts, packed into ``seq_len`` rows
    (``max_tokens`` per language). Rows of the result follow ``neuron_sets``, columns
    ``eval_texts``.
    """
    from tqdm.auto import tqdm

    layers = find_ffn_layers(model)
    packed = {
        lang: tokenize_and_pack(texts, tokenizer, seq_len, max_tokens, min_tokens=2, lang=lang)
        for lang, texts in eval_texts.items()
    }
    langs, eval_langs = list(neuron_sets), list(packed)
    was_training = model.training
    model.eval()
    ppl = np.zeros((len(langs), len(eval_langs)))
    with tqdm(total=(1 + len(langs)) * len(eval_langs), desc="perplexity", disable=not progress) as bar:
        baseline = {}
        for e in eval_langs:
            baseline[e] = perplexity(model, packed[e], batch_size=batch_size)
            bar.update()
        for i, z in enumerate(langs):
            with zero_neurons(model, neuron_sets[z], layers=layers):
                for j, e in enumerate(eval_langs):
                    ppl[i, j] = perplexity(model, packed[e], batch_size=batch_size)
                    bar.update()
    model.train(was_training)
    return PerplexityMatrix(langs, eval_langs, baseline, ppl)


def verify_neuron_sets(
    catalog: Any,
    model: str,
    *,
    corpus: str,
    refset: str = "paper-12",
    langs: Sequence[str] | None = None,
    eval_langs: Sequence[str] | None = None,
    split: str = "dev",
    max_tokens: int | None = 4096,
    seq_len: int = 512,
    device: str = "cpu",
    dtype: str = "float32",
    batch_size: int = 2,
    progress: bool = True,
) -> PerplexityMatrix:
    """:func:`perplexity_matrix` for a catalog's neuron sets of ``model`` and ``refset``.

    Rows: ``langs`` (default: every language of the reference set); columns: ``eval_langs``
    (default: every language of the reference set), on ``split`` of ``corpus``
    (``max_tokens`` held-out tokens each). With a large reference set, restrict both: the
    cost is (1 + rows) x columns perplexity passes.

    >>> from lape_hub import Catalog
    >>> m = verify_neuron_sets(Catalog(), "gemma-3-270m", corpus="../shared/data/sib200",
    ...                        langs=["npi_Deva", "mlt_Latn"])          # doctest: +SKIP
    """
    from lape_hub.corpus import read_documents
    from lape_hub.errors import UnknownRefsetError
    from lape_hub.languages import resolve_language
    from lape_hub.models import load_model
    from lape_hub.registry import resolve_model, resolve_refset

    spec = resolve_model(model)
    name = catalog.refset_name(spec.alias, refset)
    try:
        all_langs = list(resolve_refset(name).langs)
    except UnknownRefsetError:  # a custom reference set that only the catalog knows
        found = catalog.neuron_sets_available(spec.alias)
        all_langs = sorted({l for (r, _sel), ls in found.items() if r == name for l in ls})
    zeroed = [resolve_language(l).code for l in langs] if langs else all_langs
    sets = {code: catalog.neuron_set(spec.alias, code, refset=name) for code in zeroed}
    columns = [resolve_language(l).code for l in eval_langs] if eval_langs else all_langs
    texts = {code: read_documents(corpus, code, split) for code in columns}
    mdl, tok = load_model(spec, device=device, dtype=dtype)
    return perplexity_matrix(mdl, tok, sets, texts, seq_len=seq_len, max_tokens=max_tokens,
                             batch_size=batch_size, progress=progress)
