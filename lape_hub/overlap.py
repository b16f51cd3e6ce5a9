"""Pairwise overlap of language neuron sets (the paper's Appendix B.2).

Computed on bitsets: each language's set is a bitset over the distinct selected neurons
(LAPE selects at most top_rate of the model's neurons), and a pair's shared count is the
popcount of the AND of their bitsets. The same numbers come from SQL::

    SELECT a.lang, b.lang, count(*) FROM neurons a JOIN neurons b USING (layer, neuron)
    WHERE a.model = b.model AND a.refset = b.refset GROUP BY ALL

Example::

    >>> from lape_hub.catalog import Catalog
    >>> m = overlap_matrix(Catalog(), "llama-3.1-8b", refset="paper-12")
    >>> m.value("slk_Latn", "slv_Latn") > m.value("slk_Latn", "kat_Geor")
    True
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from lape_hub.catalog import DEFAULT_SELECTION, Catalog
from lape_hub.errors import NotInCatalogError

if TYPE_CHECKING:
    import pandas
    import pyarrow as pa


@dataclass(frozen=True)
class OverlapMatrix:
    langs: list[str]
    sizes: np.ndarray     # [n] neurons per language
    shared: np.ndarray    # [n, n] neurons in both sets (diagonal = sizes)
    metric: str = "count"

    @property
    def values(self) -> np.ndarray:
        if self.metric == "count":
            return self.shared
        union = self.sizes[:, None] + self.sizes[None, :] - self.shared
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, self.shared / np.maximum(union, 1), 0.0)

    def value(self, a: str, b: str) -> float:
        return float(self.values[self.langs.index(a), self.langs.index(b)])

    def to_csv(self) -> str:
        vals = self.values
        fmt = (lambda v: str(int(v))) if self.metric == "count" else (lambda v: f"{v:.4f}")
        rows = ["lang," + ",".join(self.langs)]
        rows += [f"{a}," + ",".join(fmt(v) for v in vals[i]) for i, a in enumerate(self.langs)]
        return "\n".join(rows) + "\n"

    def to_arrow(self) -> "pa.Table":
        """Long format, one row per ordered pair: ``lang_a, lang_b, size_a, size_b, shared,
        jaccard`` (both metrics, whatever ``metric`` is)."""
        import pyarrow as pa

        n = len(self.langs)
        sizes = np.asarray(self.sizes, dtype=np.int64)
        shared = np.asarray(self.shared, dtype=np.int64)
        union = sizes[:, None] + sizes[None, :] - shared
        jaccard = np.where(union > 0, shared / np.maximum(union, 1), 0.0)
        a, b = np.divmod(np.arange(n * n), n)
        langs = np.asarray(self.langs, dtype=object)
        schema = pa.schema([("lang_a", pa.string()), ("lang_b", pa.string()),
                            ("size_a", pa.int64()), ("size_b", pa.int64()),
                            ("shared", pa.int64()), ("jaccard", pa.float64())])
        columns = [langs[a].tolist(), langs[b].tolist(), sizes[a], sizes[b], shared.ravel(),
                   jaccard.ravel()]
        return pa.table(dict(zip(schema.names, columns)), schema=schema)

    def to_pandas(self) -> "pandas.DataFrame":
        """:meth:`to_arrow` as a pandas DataFrame (needs pandas)."""
        from lape_hub.errors import require

        require("pandas", "plots", purpose="to_pandas()")
        return self.to_arrow().to_pandas()


def shared_counts(lang_index: np.ndarray, neuron_id: np.ndarray, n_langs: int,
                  rows_per_step: int = 8) -> np.ndarray:
    """[n_langs, n_langs] counts of neurons shared by each pair of languages.

    ``lang_index[i]`` and ``neuron_id[i]`` describe one (language, neuron) membership.
    Each language becomes a bitset over the distinct neurons (64 per word); a pair's count
    is the popcount of the AND of two bitsets. No BLAS: exact integers, and fast on
    machines whose BLAS is slow.
    """
    lang_index = np.asarray(lang_index)
    neuron_id = np.asarray(neuron_id)
    if neuron_id.size == 0:
        return np.zeros((n_langs, n_langs), dtype=np.int64)
    present = np.bincount(neuron_id) > 0
    column = np.cumsum(present, dtype=np.int32) - 1  # neuron id -> dense column
    n_cols = int(column[-1]) + 1
    member = np.zeros(n_langs * n_cols, dtype=bool)
    flat = lang_index.astype(np.int64 if n_langs * n_cols >= 2**31 else np.int32)
    flat *= n_cols
    flat += column[neuron_id]
    member[flat] = True
    member = member.reshape(n_langs, n_cols)
    packed = np.packbits(member, axis=1)
    packed = np.pad(packed, ((0, 0), (0, (-packed.shape[1]) % 8))).view(np.uint64)
    out = np.empty((n_langs, n_langs), dtype=np.int64)
    for lo in range(0, n_langs, rows_per_step):  # upper triangle only; mirror the rest
        hi = min(lo + rows_per_step, n_langs)
        block = packed[lo:hi, None, :] & packed[None, lo:, :]
        counts = np.bitwise_count(block).sum(axis=-1, dtype=np.int64)
        out[lo:hi, lo:] = counts
        out[lo:, lo:hi] = counts.T
    return out


def overlap_matrix(catalog: Catalog, model: str, refset: str = "paper-12",
                   langs: Sequence[str] | None = None, metric: str = "count",
                   selection: str = DEFAULT_SELECTION) -> OverlapMatrix:
    """Shared neurons (``count``) or Jaccard index (``jaccard``) between languages' sets."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lape_hub.errors import SchemaError
    from lape_hub.languages import resolve_language
    from lape_hub.registry import resolve_model
    from lape_hub.schemas import table_schema

    if metric not in ("count", "jaccard"):
        raise ValueError("metric must be count or jaccard")
    spec = resolve_model(model)
    refset = catalog.refset_name(spec.alias, refset)
    path = catalog.entry_path("neurons", {"model": spec.alias, "refset": refset,
                                          "selection": selection})
    if not path.exists():
        raise NotInCatalogError(
            f"no neuron sets for {spec.alias} · refset {refset} in {catalog.root}; build them "
            f"with: lape-hub build --model {spec.alias} --refset {refset} --corpus PATH")
    table_schema("neurons").check_file(path)   # a foreign or truncated file: one line
    try:
        pf = pq.ParquetFile(path, read_dictionary=["lang"])
        table_schema("neurons").check_arrow_schema(pf.schema_arrow.remove_metadata(), path)
        t = pf.read(columns=["lang", "layer", "neuron"])
    except (pa.ArrowException, OSError) as e:
        raise SchemaError(f"corrupt Parquet file {path}: {str(e).splitlines()[0]}") from None
    lang_col = t.column("lang").combine_chunks()
    names = lang_col.dictionary.to_pylist()
    codes_in_file = np.asarray(lang_col.indices)
    wanted = [resolve_language(x).code for x in langs] if langs else sorted(set(names))
    missing = sorted(set(wanted) - set(names))
    if missing:
        raise NotInCatalogError(f"{spec.alias} · {refset} has no neuron set for {', '.join(missing)}")
    # map the file's dictionary to the wanted order (-1: not wanted)
    position = {name: i for i, name in enumerate(wanted)}
    remap = np.array([position.get(name, -1) for name in names], dtype=np.int32)
    lang_index = remap[codes_in_file]
    # global neuron id; int32 holds every model in the registry (n_layers * d_ffn < 2**31)
    gid = np.asarray(t.column("layer").combine_chunks()) * np.int32(spec.d_ffn)
    gid += np.asarray(t.column("neuron").combine_chunks())
    if len(wanted) < len(names):
        keep = lang_index >= 0
        lang_index, gid = lang_index[keep], gid[keep]
    shared = shared_counts(lang_index, gid, len(wanted))
    return OverlapMatrix(wanted, np.diag(shared).copy(), shared, metric)
