"""Canonical signatures: one compact string saying how a number or set was computed.

Like sacrebleu's ``nrefs:1|case:mixed|tok:13a|version:2.x``: two entries are comparable
only when their signatures are. Field order is fixed; unset fields are left out.

Example::

    >>> signature(model="gemma-3-270m", revision="gguf-q4_k_m", refset="paper-12",
    ...           selection="top0.05-f0.95-b0.95", corpus="sib200:train", tokens=1234567)
    'model:gemma-3-270m@gguf-q4_k_m|refset:paper-12|sel:top0.05-f0.95-b0.95|corpus:sib200:train|tok:1.23M|v:0.1.0'
"""
from __future__ import annotations

from lape_hub import __version__

_ORDER = ("refset", "lang", "sel", "corpus", "tok", "dtype", "bos", "method", "comp", "lr", "steps", "seed")


def human_count(n: int) -> str:
    """1234567 -> '1.23M' (exact below 1000; three significant digits above, in the unit
    the rounded value fits: 999_999 -> '1M', not '1e+03k').

    >>> human_count(999), human_count(40960), human_count(999_999), human_count(25_600_000_000)
    ('999', '41k', '1M', '25.6B')
    """
    if n < 1000:
        return str(n)
    for div, unit in ((1e3, "k"), (1e6, "M"), (1e9, "B")):
        text = f"{n / div:.3g}"
        if float(text) < 1000:
            return text + unit
    return f"{round(n / 1e9)}B"  # 999.5B and up: no bigger unit


def signature(model: str, revision: str | None = None, *, refset: str | None = None,
              lang: str | None = None, selection: str | None = None,
              corpus: str | None = None, tokens: int | None = None, **extra: object) -> str:
    """Build the signature; ``extra`` keys (dtype, bos, method, comp, lr, steps, seed...)
    keep _ORDER (counts record ``dtype:bfloat16|bos:skip``: how the tokens were counted)."""
    fields: dict[str, object] = {
        "refset": refset, "lang": lang, "sel": selection, "corpus": corpus,
        "tok": human_count(tokens) if tokens is not None else None, **extra,
    }
    parts = [f"model:{model}@{revision}" if revision else f"model:{model}"]
    keys = [k for k in _ORDER if k in fields] + sorted(k for k in fields if k not in _ORDER)
    parts += [f"{k}:{fields[k]}" for k in keys if fields[k] is not None]
    parts.append(f"v:{__version__}")
    return "|".join(parts)
