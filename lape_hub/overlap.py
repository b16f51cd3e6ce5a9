"""Pairwise overlap of language neuron sets (the paper's Appendix B.2), in DuckDB.

Example::

    >>> from lape_hub.catalog import Catalog
    >>> m = overlap_matrix(Catalog(), "gemma-3-270m", refset="paper-12")  # doctest: +SKIP
    >>> m.value("slk_Latn", "slv_Latn")                                    # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lape_hub.catalog import DEFAULT_SELECTION, Catalog
from lape_hub.errors import NotInCatalogError


@dataclass(frozen=True)
class OverlapMatrix:
    langs: list[str]
    sizes: np.ndarray     # [n] neurons per language
    shared: np.ndarray    # [n, n] neurons in both sets
    metric: str = "count"

    @property
    def values(self) -> np.ndarray:
        if self.metric == "count":
            return self.shared
        union = self.sizes[:, None] + self.sizes[None, :] - self.shared
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, self.shared / union, 0.0)

    def value(self, a: str, b: str) -> float:
        return float(self.values[self.langs.index(a), self.langs.index(b)])

    def to_csv(self) -> str:
        vals = self.values
        fmt = (lambda v: str(int(v))) if self.metric == "count" else (lambda v: f"{v:.4f}")
        rows = ["lang," + ",".join(self.langs)]
        rows += [f"{a}," + ",".join(fmt(v) for v in vals[i]) for i, a in enumerate(self.langs)]
        return "\n".join(rows) + "\n"


def overlap_matrix(catalog: Catalog, model: str, refset: str = "paper-12",
                   langs: Sequence[str] | None = None, metric: str = "count",
                   selection: str = DEFAULT_SELECTION) -> OverlapMatrix:
    """Shared neurons (``count``) or Jaccard index (``jaccard``) between languages' sets."""
    import duckdb

    from lape_hub.languages import resolve_language
    from lape_hub.query import entry_file
    from lape_hub.registry import resolve_model

    if metric not in ("count", "jaccard"):
        raise ValueError("metric must be count or jaccard")
    alias = resolve_model(model).alias
    refset = catalog.refset_name(alias, refset)
    path = catalog.entry_path("neurons", {"model": alias, "refset": refset,
                                          "selection": selection})
    if not path.exists():
        raise NotInCatalogError(f"no neuron sets for {alias} · refset {refset} in {catalog.root}; "
                                f"build them with: lape-hub build --model {alias} --refset {refset}"
                                " --corpus PATH")
    entry_file(catalog, "neurons", model=alias, refset=refset, selection=selection)
    con = duckdb.connect(":memory:")
    codes = [resolve_language(x).code for x in langs] if langs else None
    where = ""
    if codes:
        where = "WHERE lang IN (" + ", ".join("'" + c + "'" for c in codes) + ")"
    con.execute(f"CREATE TEMP TABLE n AS SELECT lang, layer * 1048576 + neuron AS gid "
                f"FROM read_parquet(?) {where}", [str(path)])
    present = [r[0] for r in con.execute("SELECT DISTINCT lang FROM n ORDER BY lang").fetchall()]
    order = [c for c in codes if c in present] if codes else present
    missing = sorted(set(codes or []) - set(present))
    if missing:
        raise NotInCatalogError(f"{alias} · {refset} has no neuron set for {', '.join(missing)}")
    idx = {lang: i for i, lang in enumerate(order)}
    sizes = np.zeros(len(order), dtype=np.int64)
    for lang, size in con.execute("SELECT lang, count(*) FROM n GROUP BY lang").fetchall():
        sizes[idx[lang]] = size
    shared = np.zeros((len(order), len(order)), dtype=np.int64)
    rows = con.execute("SELECT a.lang, b.lang, count(*) FROM n a JOIN n b USING (gid) "
                       "GROUP BY ALL").fetchall()
    for a, b, c in rows:
        shared[idx[a], idx[b]] = c
    return OverlapMatrix(order, sizes, shared, metric)
