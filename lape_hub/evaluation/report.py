"""The paper-style comparison of one model · language from the catalog's ``evals`` table.

Rows are systems: the base model and every adapter run of that model and language (method,
seed and trainable parameters from the ``adapters`` table), and for a method trained with
several seeds under otherwise equal settings one more row with the mean ± sample standard
deviation over the seeds. Columns are the target-language tasks (translation X→English and
English→X: BLEU and chrF++; SIB-200 topic accuracy by generation and by log-likelihood;
Belebele; perplexity of the target language) and, side by side, the general / English tasks
(English perplexity, English SIB-200 topic accuracy = ``evals`` rows of ``eng_Latn`` with the
same run id, lm-eval's general tasks). Each run's value carries its stored 95 % interval.

A :class:`Report` renders as Markdown (:meth:`Report.to_markdown`) and as a dot plot per
metric (:func:`plot_report`, matplotlib); :func:`write_report` writes both, with the data
beside the picture. :func:`catalog_summary` is the one-line-per-run table of every model and
language that the catalog's dataset card carries. No torch here.

Example::

    >>> from lape_hub.catalog import Catalog
    >>> r = build_report(Catalog(), "gemma-3-270m", "mlt_Latn")          # doctest: +SKIP
    >>> print(r.to_markdown())                                          # doctest: +SKIP
    >>> write_report(r, "docs/reports")                                  # doctest: +SKIP
"""
from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from lape_hub.cards import md_table, value_cell
from lape_hub.errors import NotInCatalogError
from lape_hub.evaluation.results import BASE, read_evals

if TYPE_CHECKING:
    import pyarrow as pa

    from lape_hub.catalog import Catalog

ENGLISH = "eng_Latn"
#: the order methods are listed in (others follow alphabetically)
METHOD_ORDER = ("base", "lape-sparse", "random", "lora", "ia3", "ffn", "full")
#: the translation BLEU the report shows: the paper's averaged sentence BLEU
BLEU = "bleu_sent"

__all__ = ["Column", "Cell", "SystemRow", "Report", "report_columns", "build_report",
           "report_from_rows", "plot_report", "write_report", "catalog_summary",
           "summary_markdown", "ENGLISH"]


@dataclass(frozen=True)
class Column:
    """One metric of the report: where its value is in the ``evals`` rows.

    ``sources`` are ``(lang, task, direction, metric)`` keys tried in order (English
    perplexity is in the target language's run, else in the English one).
    """

    key: str
    label: str
    group: str                                    # "target" or "general"
    sources: tuple[tuple[str, str, str, str], ...]
    lower_is_better: bool = False


@dataclass(frozen=True)
class Cell:
    """A value with its 95 % interval (one run) or the standard deviation over ``n`` runs."""

    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    sd: float | None = None
    n: int = 1

    def text(self, seeds: int = 1) -> str:
        """``23.40 [21.0, 25.9]`` for a run, ``23.40 ± 1.20`` for a mean (``(n=2)`` added
        when fewer runs than the row's seeds have this metric)."""
        if self.sd is None and self.n == 1:
            return value_cell(self.value, self.ci_low, self.ci_high)
        sd = f" ± {self.sd:.2f}" if self.sd is not None else ""
        return f"{self.value:.2f}{sd}" + (f" (n={self.n})" if self.n != seeds else "")


@dataclass(frozen=True)
class SystemRow:
    """One line of the report: a run (``seeds == 1``) or the mean of a method's seeds."""

    label: str
    method: str
    run_id: str                  # the run id, or the run ids joined by "," for a mean
    seed: int | None
    trainable_params: int | None
    tokens: int | None
    cells: dict[str, Cell] = field(default_factory=dict)
    seeds: int = 1

    @property
    def is_mean(self) -> bool:
        return self.seeds > 1

    @property
    def name(self) -> str:
        """What the Markdown's system column shows (the run column tells runs apart)."""
        if self.run_id == BASE:
            return "base model"
        return self.label if self.is_mean else self.method

    @property
    def short(self) -> str:
        """The picture's label: method and seed, else method and run id."""
        if self.is_mean or self.run_id == BASE or self.seed is None:
            return self.label.replace("`", "")
        return f"{self.method} · seed {self.seed}"


@dataclass(frozen=True)
class Report:
    """The comparison of ``model`` on ``lang`` (``split``): columns and system rows."""

    model: str
    lang: str
    split: str
    columns: list[Column]
    rows: list[SystemRow]

    def to_markdown(self, png: str | None = None) -> str:
        """The Markdown report: a sentence on what it shows, the table, the notes."""
        head = ["system", "seed", "run", "trainable params", "tokens"]
        cols = [(f"EN: {c.label}" if c.group == "general" else c.label)
                + (" ↓" if c.lower_is_better else "") for c in self.columns]
        lines = []
        for r in self.rows:
            lines.append([r.name,
                          f"{r.seeds} seeds" if r.is_mean else ("—" if r.seed is None else r.seed),
                          "—" if r.run_id == BASE else
                          ("mean" if r.is_mean else f"`{r.run_id[:12]}`"),
                          "—" if r.trainable_params is None else f"{r.trainable_params:,}",
                          "—" if r.tokens is None else f"{r.tokens:,}"]
                         + [r.cells[c.key].text(r.seeds) if c.key in r.cells else "—"
                            for c in self.columns])
        target = [c.label for c in self.columns if c.group == "target"]
        general = [c.label for c in self.columns if c.group == "general"]
        out = [f"# {self.model} · {self.lang}: evaluation ({self.split} split)", "",
               f"Base model and every adapter of {self.model} for {self.lang} in the catalog's "
               f"`evals` table. Target-language tasks: {', '.join(target) or 'none'}; "
               f"general / English tasks (EN): {', '.join(general) or 'none'}.", "",
               md_table(head + cols, lines), "",
               "Runs: the value with its stored 95 % interval in brackets (bootstrap over "
               "sentences; none for perplexity). A method with several seeds under the same "
               "settings also gets a row `mean of k seeds`: mean ± sample standard deviation "
               "over its seeds (`(n=…)` where fewer seeds have that metric). BLEU is the "
               "paper's averaged sentence BLEU (`bleu_sent`); ↓: lower is better. English "
               "topic accuracy is the same run evaluated with `--lang eng_Latn`.", ""]
        if png:
            out += [f"![{self.model} · {self.lang}]({png})", ""]
        return "\n".join(out)

    def to_arrow(self) -> "pa.Table":
        """The long form: one row per (system, metric) with value, interval, sd and n."""
        import pyarrow as pa

        recs = []
        for r in self.rows:
            for c in self.columns:
                cell = r.cells.get(c.key)
                if cell is None:
                    continue
                recs.append({"system": r.label, "method": r.method, "run_id": r.run_id,
                             "seed": r.seed, "seeds": r.seeds,
                             "trainable_params": r.trainable_params, "group": c.group,
                             "metric": c.key, "label": c.label, "value": cell.value,
                             "ci_low": cell.ci_low, "ci_high": cell.ci_high, "sd": cell.sd,
                             "n": cell.n})
        schema = pa.schema([("system", pa.string()), ("method", pa.string()),
                            ("run_id", pa.string()), ("seed", pa.int64()),
                            ("seeds", pa.int64()), ("trainable_params", pa.int64()),
                            ("group", pa.string()), ("metric", pa.string()),
                            ("label", pa.string()), ("value", pa.float64()),
                            ("ci_low", pa.float64()), ("ci_high", pa.float64()),
                            ("sd", pa.float64()), ("n", pa.int64())])
        return pa.Table.from_pylist(recs, schema=schema)


# -- columns -------------------------------------------------------------------------------
def report_columns(lang: str, rows: Iterable[Mapping[str, Any]] = ()) -> list[Column]:
    """Every column the report knows for ``lang``, then one per lm-eval task in ``rows``.

    >>> [c.key for c in report_columns("mlt_Latn")][:3]
    ['x2en_bleu', 'x2en_chrf', 'en2x_bleu']
    """
    x, en = lang, ENGLISH
    cols = [
        Column("x2en_bleu", f"{x}→en BLEU", "target", ((x, "translation", f"{x}->{en}", BLEU),)),
        Column("x2en_chrf", f"{x}→en chrF++", "target",
               ((x, "translation", f"{x}->{en}", "chrf++"),)),
        Column("en2x_bleu", f"en→{x} BLEU", "target", ((x, "translation", f"{en}->{x}", BLEU),)),
        Column("en2x_chrf", f"en→{x} chrF++", "target",
               ((x, "translation", f"{en}->{x}", "chrf++"),)),
        Column("topic_gen", "topic acc_gen", "target", ((x, "topic", x, "acc_gen"),)),
        Column("topic_ll", "topic acc_ll", "target", ((x, "topic", x, "acc_ll"),)),
        Column("belebele", "belebele acc_ll", "target", ((x, "belebele", x, "acc_ll"),)),
        Column("ppl", f"ppl {x}", "target", ((x, "perplexity", x, "ppl"),), True),
        Column("en_ppl", "ppl eng", "general",
               ((x, "perplexity", en, "ppl"), (en, "perplexity", en, "ppl")), True),
        Column("en_topic_gen", "topic acc_gen", "general", ((en, "topic", en, "acc_gen"),)),
        Column("en_topic_ll", "topic acc_ll", "general", ((en, "topic", en, "acc_ll"),)),
    ]
    general: dict[str, set[str]] = {}
    for r in rows:
        if r["task"] == "general" and r["lang"] in (x, en):
            general.setdefault(r["direction"], set()).add(r["metric"])
    for task in sorted(general):
        metric = "acc_norm" if "acc_norm" in general[task] else sorted(general[task])[0]
        cols.append(Column(f"general_{task}", f"{task} {metric}", "general",
                           ((x, "general", task, metric), (en, "general", task, metric))))
    return cols


# -- systems --------------------------------------------------------------------------------
def _method_rank(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def _adapter_facts(row: Mapping[str, Any] | None) -> tuple[int | None, dict[str, Any]]:
    """(seed, hyperparameters without the seed) of an ``adapters`` row."""
    if row is None:
        return None, {}
    try:
        hp = dict(json.loads(row.get("params") or "{}").get("hyperparameters") or {})
    except (ValueError, AttributeError):
        hp = {}
    seed = hp.pop("seed", None)
    return (int(seed) if isinstance(seed, (int, float)) else None), hp


def _run_cells(rows: Sequence[Mapping[str, Any]], run_id: str,
               columns: Sequence[Column]) -> dict[str, Cell]:
    by_key = {(r["lang"], r["task"], r["direction"], r["metric"]): r
              for r in rows if r["run_id"] == run_id}
    cells = {}
    for c in columns:
        hit = next((by_key[s] for s in c.sources if s in by_key), None)
        if hit is not None:
            cells[c.key] = Cell(float(hit["value"]), hit.get("ci_low"), hit.get("ci_high"))
    return cells


def _mean_cells(runs: Sequence[SystemRow], columns: Sequence[Column]) -> dict[str, Cell]:
    cells = {}
    for c in columns:
        vals = [r.cells[c.key].value for r in runs if c.key in r.cells]
        if vals:
            sd = statistics.stdev(vals) if len(vals) > 1 else None
            cells[c.key] = Cell(statistics.fmean(vals), sd=sd, n=len(vals))
    return cells


def report_from_rows(model: str, lang: str, split: str, eval_rows: Iterable[Mapping[str, Any]],
                     adapter_rows: Iterable[Mapping[str, Any]] = ()) -> Report:
    """The report from ``evals`` rows (of ``lang`` and of English, any split: filtered here)
    and ``adapters`` rows. Runs are the run ids with rows of ``lang`` plus the adapters of
    ``model`` · ``lang``; English rows count only for those runs."""
    ev = [r for r in eval_rows if r["model"] == model and r["split"] == split]
    adapters = {r["run_id"]: r for r in adapter_rows
                if r["model"] == model and r["lang"] == lang}
    methods: dict[str, str] = {r["run_id"]: r["method"] for r in ev if r["lang"] == lang}
    for rid, a in adapters.items():
        methods.setdefault(rid, a["method"])
    ev = [r for r in ev if r["lang"] == lang or (r["lang"] == ENGLISH and r["run_id"] in methods)]
    columns = report_columns(lang, ev)
    runs: list[SystemRow] = []
    groups: dict[tuple[str, str], list[SystemRow]] = {}
    for rid, method in methods.items():
        a = adapters.get(rid)
        seed, hp = _adapter_facts(a)
        row = SystemRow(label="base model" if rid == BASE else f"{method} `{rid[:8]}`",
                        method=method, run_id=rid, seed=seed,
                        trainable_params=None if a is None else int(a["trainable_params"]),
                        tokens=None if a is None else int(a["tokens"]),
                        cells=_run_cells(ev, rid, columns))
        runs.append(row)
        if a is not None and seed is not None:
            groups.setdefault((method, json.dumps(hp, sort_keys=True)), []).append(row)
    runs.sort(key=lambda r: (r.run_id != BASE, _method_rank(r.method),
                             -1 if r.seed is None else r.seed, r.run_id))
    means: dict[str, SystemRow] = {}          # last run of a group -> its mean row
    for (method, _), members in groups.items():
        if len({m.seed for m in members}) < 2:
            continue
        members = sorted(members, key=lambda r: (r.seed, r.run_id))
        last = max(members, key=runs.index)
        tp = {m.trainable_params for m in members}
        tok = {m.tokens for m in members}
        means[last.run_id] = SystemRow(
            label=f"{method} (mean of {len(members)} seeds)", method=method,
            run_id=",".join(m.run_id for m in members), seed=None,
            trainable_params=tp.pop() if len(tp) == 1 else None,
            tokens=tok.pop() if len(tok) == 1 else None,
            cells=_mean_cells(members, columns), seeds=len(members))
    out: list[SystemRow] = []
    for r in runs:
        out.append(r)
        if r.run_id in means:
            out.append(means[r.run_id])
    used = {k for r in out for k in r.cells}
    return Report(model, lang, split, [c for c in columns if c.key in used], out)


def _adapter_rows(catalog: "Catalog", **where: str) -> list[dict[str, Any]]:
    cols = ["model", "lang", "method", "run_id", "trainable_params", "tokens", "params"]
    return catalog.read("adapters", columns=cols, **where).to_pylist()


def build_report(catalog: "Catalog", model: str, lang: str, split: str = "test") -> Report:
    """The report of ``model`` on ``lang`` from the catalog's ``evals`` and ``adapters``.

    Raises:
        NotInCatalogError: no ``evals`` rows of ``model`` · ``lang`` in ``split`` (the
            message names the splits that do have rows).
    """
    rows = read_evals(catalog, model=model, lang=lang)
    if not any(r["split"] == split for r in rows):
        others = sorted({r["split"] for r in rows})
        best = "test" if "test" in others else others[0] if others else ""
        hint = (f" (it has {', '.join(others)} results: use --split {best})" if others
                else "; run lape-hub eval first")
        raise NotInCatalogError(f"no {split} results of {model} · {lang} in the catalog's "
                                f"evals table{hint}")
    if lang != ENGLISH:
        rows += read_evals(catalog, model=model, lang=ENGLISH)
    return report_from_rows(model, lang, split, rows, _adapter_rows(catalog, model=model,
                                                                       lang=lang))


# -- picture ---------------------------------------------------------------------------------
def plot_report(report: Report, png: str | os.PathLike, *, data_format: str = "parquet",
                title: str | None = None) -> tuple[Path, Path | None]:
    """A dot plot per metric (a panel each): one line per system, its interval (runs) or
    ± sd (means, diamonds) as error bars, methods as colours; the data beside the PNG."""
    import numpy as np

    from lape_hub.plots._figure import pyplot, save_picture

    plt = pyplot()
    cols, rows = report.columns, report.rows
    ncol = min(4, max(1, len(cols)))
    nrow = math.ceil(len(cols) / ncol) if cols else 1
    height = max(1.6, 0.32 * len(rows) + 1.0)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol + 1.5, height * nrow),
                             sharey=True, squeeze=False)
    methods = sorted({r.method for r in rows}, key=_method_rank)
    palette = plt.get_cmap("tab10")
    colour = {m: palette(i % 10) for i, m in enumerate(methods)}
    y = np.arange(len(rows))[::-1]
    for i, ax in enumerate(axes.flat):
        if i >= len(cols):
            ax.set_visible(False)
            continue
        c = cols[i]
        for yi, r in zip(y, rows):
            cell = r.cells.get(c.key)
            if cell is None or not math.isfinite(cell.value):
                continue
            lo = hi = 0.0
            if cell.sd is not None:
                lo = hi = cell.sd
                if c.lower_is_better:          # a log axis: keep the bar's left end > 0
                    lo = min(lo, 0.9 * cell.value)
            elif cell.ci_low is not None and cell.ci_high is not None:
                lo, hi = max(0.0, cell.value - cell.ci_low), max(0.0, cell.ci_high - cell.value)
            ax.errorbar([cell.value], [yi], xerr=[[lo], [hi]], fmt="D" if r.is_mean else "o",
                        color=colour[r.method], markersize=7 if r.is_mean else 5, capsize=2.5,
                        markeredgecolor="black" if r.is_mean else colour[r.method])
        if c.lower_is_better and all(r.cells[c.key].value > 0 for r in rows if c.key in r.cells
                                     and math.isfinite(r.cells[c.key].value)):
            from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

            ax.set_xscale("log")   # labelled ticks at 1-2-5 steps: a panel rarely spans a decade
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(("EN: " if c.group == "general" else "") + c.label
                     + (" (lower is better)" if c.lower_is_better else ""), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_yticks(y)
        ax.set_yticklabels([r.short for r in rows], fontsize=8)
        ax.set_ylim(-0.7, len(rows) - 0.3)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colour[m], label=m)
               for m in methods]
    if any(r.is_mean for r in rows):
        handles.append(plt.Line2D([], [], marker="D", linestyle="", color="grey",
                                  markeredgecolor="black", label="mean ± sd over seeds"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title or f"{report.model} · {report.lang} ({report.split}): 95 % intervals, "
                          "means ± sd over seeds", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return save_picture(fig, png, report.to_arrow(), data_format=data_format)


def write_report(report: Report, out_dir: str | os.PathLike, *, data_format: str = "parquet",
                 catalog_root: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write ``<model>.<lang>.<split>.md``, ``.png`` and the data (``.parquet``/``.csv``)
    into ``out_dir`` (created; refused inside the catalog); returns their paths."""
    from lape_hub.atomic import atomic_write_bytes
    from lape_hub.output_paths import check_output_dir, check_output_file

    out = check_output_dir(out_dir, create=True, catalog_root=catalog_root)
    stem = f"{report.model}.{report.lang}.{report.split}".replace("/", "-")
    md, _ = check_output_file(out / f"{stem}.md", catalog_root=catalog_root, create_parent=True)
    png, _ = check_output_file(out / f"{stem}.png", formats={"png": "png"},
                               catalog_root=catalog_root, create_parent=True)
    png, data = plot_report(report, png, data_format=data_format)
    atomic_write_bytes(md, report.to_markdown(png=png.name).encode("utf-8"))
    return {"markdown": md, "png": png, "data": data}


# -- the catalog's dataset card ---------------------------------------------------------------
#: the columns of :func:`catalog_summary` (main target metrics, then the English control)
SUMMARY_KEYS = ("x2en_chrf", "en2x_chrf", "topic_ll", "ppl", "en_ppl", "en_topic_ll")


def catalog_summary(eval_rows: Iterable[Mapping[str, Any]],
                    adapter_rows: Iterable[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """One dict per evaluated run of every model · language (the base model first): model,
    lang, method, seed, run_id, split (``test`` where it has results) and the values of
    :data:`SUMMARY_KEYS` (None where missing)."""
    eval_rows, adapter_rows = list(eval_rows), list(adapter_rows)
    adapter_langs = {(r["model"], r["lang"]) for r in adapter_rows}
    pairs = {(r["model"], r["lang"]) for r in eval_rows if r["lang"] != ENGLISH}
    pairs |= {p for p in adapter_langs if p[1] == ENGLISH}
    if not pairs:
        pairs = {(r["model"], r["lang"]) for r in eval_rows}
    out = []
    for model, lang in sorted(pairs):
        mine = [r for r in eval_rows if r["model"] == model and r["lang"] in (lang, ENGLISH)]
        splits = {r["split"] for r in mine if r["lang"] == lang}
        if not splits:
            continue
        split = "test" if "test" in splits else sorted(splits)[0]
        rep = report_from_rows(model, lang, split, mine, adapter_rows)
        for r in rep.rows:
            if r.is_mean or not r.cells:
                continue
            out.append({"model": model, "lang": lang, "method": r.method, "seed": r.seed,
                        "run_id": r.run_id, "split": split,
                        **{k: (r.cells[k].value if k in r.cells else None)
                           for k in SUMMARY_KEYS}})
    return out


def summary_markdown(summary: Sequence[Mapping[str, Any]]) -> str:
    """:func:`catalog_summary` as a Markdown table; a sentence when there is nothing."""
    if not summary:
        return "No evaluation results yet: the `evals` table is empty."
    head = ["model", "lang", "method", "seed", "run", "split", "X→en chrF++", "en→X chrF++",
            "topic acc_ll", "ppl X ↓", "EN: ppl ↓", "EN: topic acc_ll"]

    def num(v: Any) -> str:
        return "—" if v is None else f"{v:.2f}"

    return md_table(head, [[s["model"], s["lang"], s["method"],
                            "—" if s["seed"] is None else s["seed"],
                            "—" if s["run_id"] == BASE else f"`{s['run_id'][:12]}`", s["split"]]
                           + [num(s[k]) for k in SUMMARY_KEYS] for s in summary])
