"""Are the sets real? ``verify``'s zeroing matrix as a heatmap on a log scale.

Cells are the relative perplexity increase ``(ppl - baseline) / baseline`` on the
evaluated language (columns) with one language's neurons zeroed (rows), on a log colour
scale (the values span 0.1 % to 10^5 %); the cells where a language's own set is zeroed
are outlined. Increases at or below zero sit at the bottom of the scale and are labelled.

The matrix comes from a saved ``verify`` result (``--format markdown`` or ``csv``, or the
Parquet/CSV written by ``PerplexityMatrix.to_arrow()``) or from :func:`compute_zeroing`.
Reading a saved result needs no torch.

Example::

    >>> z = read_verify_result("docs/gemma-3-270m.verify-paper-12.md")   # doctest: +SKIP
    >>> round(100 * z.relative[z.langs.index("isl_Latn"), z.eval_langs.index("lvs_Latn")])  # doctest: +SKIP
    199
    >>> plot_zeroing(z, "zeroing.png")                                    # doctest: +SKIP
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lape_hub.plots._figure import label_size, pyplot, save_picture, to_pandas

if TYPE_CHECKING:
    import pandas
    import pyarrow as pa

    from lape_hub.verify import PerplexityMatrix


@dataclass(frozen=True)
class ZeroingMatrix:
    """``ppl[i, j]``: perplexity on ``eval_langs[j]`` with ``langs[i]``'s neurons zeroed
    (the torch-free twin of :class:`lape_hub.verify.PerplexityMatrix`)."""

    langs: list[str]
    eval_langs: list[str]
    baseline: dict[str, float]
    ppl: np.ndarray

    @classmethod
    def from_result(cls, result: "PerplexityMatrix | Any") -> "ZeroingMatrix":
        """From a :class:`~lape_hub.verify.PerplexityMatrix` (or anything with its fields)."""
        return cls(list(result.langs), list(result.eval_langs), dict(result.baseline),
                   np.asarray(result.ppl, dtype=np.float64))

    @property
    def increase(self) -> np.ndarray:
        return self.ppl - np.array([self.baseline[e] for e in self.eval_langs])[None, :]

    @property
    def relative(self) -> np.ndarray:
        """``increase / baseline`` (0.5 = +50 %)."""
        return self.increase / np.array([self.baseline[e] for e in self.eval_langs])[None, :]

    def hardest_hit(self, lang: str) -> tuple[str, float]:
        """The evaluated language whose perplexity rises most (relatively) when ``lang``'s
        set is zeroed, and that relative increase."""
        row = self.relative[self.langs.index(lang)]
        j = int(np.argmax(row))
        return self.eval_langs[j], float(row[j])

    def to_arrow(self) -> "pa.Table":
        """``zeroed, eval_lang, baseline_ppl, ppl, increase, relative`` per cell."""
        import pyarrow as pa

        n, m = self.ppl.shape
        zeroed = np.repeat(np.asarray(self.langs, dtype=object), m)
        evals = np.tile(np.asarray(self.eval_langs, dtype=object), n)
        base = np.tile([self.baseline[e] for e in self.eval_langs], n)
        return pa.table({
            "zeroed": pa.array(zeroed.tolist(), pa.string()),
            "eval_lang": pa.array(evals.tolist(), pa.string()),
            "baseline_ppl": pa.array(base, pa.float64()),
            "ppl": pa.array(self.ppl.reshape(-1), pa.float64()),
            "increase": pa.array(self.increase.reshape(-1), pa.float64()),
            "relative": pa.array(self.relative.reshape(-1), pa.float64()),
        })

    def to_pandas(self) -> "pandas.DataFrame":
        return to_pandas(self.to_arrow())


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _from_markdown(text: str, where: str) -> ZeroingMatrix:
    from lape_hub.errors import SchemaError

    lines = [l for l in text.splitlines() if l.strip().startswith("|")]
    if len(lines) < 4 or not _cells(lines[0])[0].startswith("zeroed"):
        raise SchemaError(f"{where}: not a verify result (expected the table of "
                          "`lape-hub verify --format markdown`)")
    eval_langs = _cells(lines[0])[1:]
    base_cells = _cells(lines[2])
    if base_cells[0] != "(baseline)":
        raise SchemaError(f"{where}: the row after the header is not (baseline)")
    try:
        baseline = dict(zip(eval_langs, (float(v) for v in base_cells[1:]), strict=True))
        langs, inc = [], []
        for line in lines[3:]:
            cells = _cells(line)
            langs.append(cells[0])
            inc.append([float(v) for v in cells[1:]])
        inc_a = np.asarray(inc, dtype=np.float64)
    except ValueError as e:
        raise SchemaError(f"{where}: unreadable verify table ({e})") from None
    if inc_a.shape != (len(langs), len(eval_langs)):
        raise SchemaError(f"{where}: rows have {inc_a.shape[1]} cells, the header "
                          f"{len(eval_langs)}")
    ppl = inc_a + np.array([baseline[e] for e in eval_langs])[None, :]
    return ZeroingMatrix(langs, eval_langs, baseline, ppl)


def _from_table(table: "pa.Table", where: str) -> ZeroingMatrix:
    from lape_hub.errors import SchemaError

    need = {"zeroed", "eval_lang", "baseline_ppl", "ppl"}
    if not need <= set(table.column_names):
        raise SchemaError(f"{where}: a verify table needs columns {', '.join(sorted(need))}")
    rows = table.select(sorted(need)).to_pylist()
    langs = list(dict.fromkeys(r["zeroed"] for r in rows))
    eval_langs = list(dict.fromkeys(r["eval_lang"] for r in rows))
    ppl = np.full((len(langs), len(eval_langs)), np.nan)
    baseline: dict[str, float] = {}
    for r in rows:
        ppl[langs.index(r["zeroed"]), eval_langs.index(r["eval_lang"])] = float(r["ppl"])
        baseline[r["eval_lang"]] = float(r["baseline_ppl"])
    if np.isnan(ppl).any():
        raise SchemaError(f"{where}: the verify table is missing cells")
    return ZeroingMatrix(langs, eval_langs, baseline, ppl)


def read_verify_result(path: str | os.PathLike) -> ZeroingMatrix:
    """A saved verify result: Markdown (``--format markdown``), CSV (``--format csv`` or
    ``to_arrow()`` written as CSV) or Parquet."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from lape_hub.errors import SchemaError

    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"verify result {path} not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return _from_table(pq.read_table(path), str(path))
        if suffix == ".csv":
            return _from_table(pacsv.read_csv(path), str(path))
        return _from_markdown(path.read_text(encoding="utf-8"), str(path))
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as e:
        raise SchemaError(f"cannot read verify result {path}: {str(e).splitlines()[0]}") from None


def compute_zeroing(catalog: Any, model: str, **kwargs: Any) -> ZeroingMatrix:
    """Run :func:`lape_hub.verify.verify_neuron_sets` (torch) and return its matrix."""
    from lape_hub.verify import verify_neuron_sets

    return ZeroingMatrix.from_result(verify_neuron_sets(catalog, model, **kwargs))


def plot_zeroing(z: ZeroingMatrix, png: str | os.PathLike, *, title: str | None = None,
                 floor: float = 1e-3, data_format: str = "parquet") -> tuple[Path, Path | None]:
    """Heatmap of ``z.relative`` in % on a log scale; own-language cells outlined.

    Cells below ``floor`` (default 0.1 %, including decreases) take the lowest colour.
    """
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    plt = pyplot()
    rel = z.relative
    n, m = rel.shape
    shown = np.clip(rel, floor, None) * 100
    hi = max(float(shown.max()), floor * 1000)
    w = float(min(max(5.0, 0.6 * m + 2.5), 16.0))
    h = float(min(max(4.0, 0.5 * n + 1.8), 16.0))
    fig, ax = plt.subplots(figsize=(w, h))
    im = ax.imshow(shown, cmap="viridis", norm=LogNorm(vmin=floor * 100, vmax=hi),
                   interpolation="nearest", aspect="auto")
    ax.set_xticks(np.arange(m))
    ax.set_xticklabels(z.eval_langs, rotation=60, ha="right",
                       fontsize=label_size(m, w - 2.5) if m > 16 else 8)
    ax.set_yticks(np.arange(n))
    ax.set_yticklabels(z.langs, fontsize=label_size(n, h - 1.8) if n > 16 else 8)
    ax.set_xlabel("evaluated language")
    ax.set_ylabel("zeroed language's neurons")
    for i, lang in enumerate(z.langs):
        if lang in z.eval_langs:
            j = z.eval_langs.index(lang)
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red",
                                   linewidth=2.0))
    if n * m <= 400:
        mid = np.sqrt(floor * 100 * hi)
        for i in range(n):
            for j in range(m):
                v = rel[i, j] * 100
                txt = f"{v:+.0f}" if abs(v) >= 10 else f"{v:+.1f}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=6.5,
                        color="black" if shown[i, j] > mid else "white")
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label("perplexity increase over baseline, % (log scale)")
    ax.set_title(title or "zeroing one language's neurons (own language outlined)", fontsize=10)
    return save_picture(fig, png, z.to_arrow(), data_format=data_format)
