"""The ``evals`` catalog table (``schemas/evals.json``): write and read evaluation rows.

One row per (model, adapter run_id or ``base``, lang, task, direction, metric, split). A
catalog entry holds one (model, lang, run_id, task); writing results merges them into it
under the catalog's lock (a rerun replaces the rows it recomputes, other rows stay), then
validates against the schema and renames the file into place (atomic).

No torch here: reading results (``lape-hub sql``, cards, compare) stays light.

Example::

    >>> rows = read_evals(Catalog(), model="gemma-3-270m", lang="mlt_Latn")   # doctest: +SKIP
    >>> sorted({r["run_id"] for r in rows})                                    # doctest: +SKIP
    ['base', '0f3c9a1b2d4e']
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from lape_hub.catalog import Catalog

TABLE = "evals"
BASE = "base"

__all__ = ["TABLE", "BASE", "record_evals", "read_evals", "format_rows", "adapter_run_id",
           "adapter_eval_rows"]


def _catalog(catalog: "Catalog | str | os.PathLike | None") -> "Catalog":
    from lape_hub.catalog import Catalog

    return catalog if isinstance(catalog, Catalog) else Catalog(catalog)


def record_evals(rows: Sequence[dict[str, Any]],
                 catalog: "Catalog | str | os.PathLike | None" = None) -> list[Path]:
    """Write ``rows`` (dicts with the schema's columns) into the catalog; the files written.

    Rows with the primary key of an existing row replace it; the rest of the entry is kept.
    """
    import pyarrow as pa

    from lape_hub.schemas import table_schema

    cat = _catalog(catalog)
    schema = table_schema(TABLE)
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(str(row[k]) for k in schema.partition_by), []).append(row)
    paths = []
    with cat.lock():
        for key_values, new in groups.items():
            key = dict(zip(schema.partition_by, key_values))
            path = cat.entry_path(TABLE, key)
            new_table = pa.Table.from_pylist(new, schema=schema.arrow)
            if path.exists():
                old = cat._read_file(schema, path, None)
                fresh = {tuple(r[k] for k in schema.primary_key) for r in new}
                keep = [r for r in old.to_pylist()
                        if tuple(r[k] for k in schema.primary_key) not in fresh]
                new_table = pa.concat_tables([pa.Table.from_pylist(keep, schema=schema.arrow),
                                              new_table])
            paths.append(cat.write(TABLE, new_table, key=key))
    return paths


def read_evals(catalog: "Catalog | str | os.PathLike | None" = None, *,
               items: bool = False, **where: str) -> list[dict[str, Any]]:
    """Rows of the ``evals`` table matching ``where`` (any columns), as dicts.

    ``items`` (per-example data, large) is left out unless asked for, parsed from JSON.
    """
    from lape_hub.schemas import table_schema

    cat = _catalog(catalog)
    schema = table_schema(TABLE)
    part = {k: v for k, v in where.items() if k in schema.partition_by}
    rest = {k: v for k, v in where.items() if k not in schema.partition_by}
    cols = [c for c in schema.columns if items or c != "items"]
    table = cat.read(TABLE, columns=cols, **part)
    out = []
    for row in table.to_pylist():
        if all(str(row.get(k)) == str(v) for k, v in rest.items()):
            if items:
                row["items"] = json.loads(row["items"]) if row.get("items") else None
            out.append(row)
    return out


def adapter_run_id(folder: str | os.PathLike, catalog: "Catalog | None" = None) -> str:
    """An adapter folder's run id: from its run folder's ``run.json``, else the catalog's
    ``adapters`` row with the same files (or, for a merged folder, the same signature in its
    ``lape_adapter.json``), else the first 12 hex digits of the files' sha256."""
    from lape_hub.digest import artifact_sha256
    from lape_hub.errors import LapeHubError

    folder = Path(folder)
    run_json = folder.parent / "run.json"
    if run_json.is_file():
        try:
            rid = json.loads(run_json.read_text()).get("run_id")
            if rid:
                return str(rid)
        except (ValueError, AttributeError):
            pass
    digest = artifact_sha256(folder)
    if catalog is not None:
        try:
            sig = json.loads((folder / "lape_adapter.json").read_text()).get("signature")
        except (OSError, ValueError, AttributeError):
            sig = None
        try:
            rows = catalog.read("adapters", columns=["run_id", "artifact_sha256", "signature",
                                                     "created_at"]).to_pylist()
        except LapeHubError:
            rows = []
        for row in rows:
            if row["artifact_sha256"] == digest:
                return str(row["run_id"])
        same = [r for r in rows if sig and r["signature"] == sig]
        if same:
            return str(max(same, key=lambda r: r["created_at"])["run_id"])
    return digest[:12]


ENGLISH = "eng_Latn"


def adapter_eval_rows(folder: str | os.PathLike, model: str, lang: str,
                      catalog: "Catalog | None") -> tuple[str, list[dict[str, Any]]]:
    """``(run id of the adapter in folder, every evals row of model · lang)``: the rows
    a card needs (this adapter's, the base model's and the baselines')."""
    from lape_hub.errors import LapeHubError

    if catalog is None:
        return adapter_run_id(folder), []
    try:
        rows = read_evals(catalog, model=model, lang=lang)
    except LapeHubError:
        rows = []
    if rows and lang != ENGLISH:   # the forgetting check: the same systems evaluated on English
        systems = {r["run_id"] for r in rows}
        try:
            rows += [r for r in read_evals(catalog, model=model, lang=ENGLISH)
                     if r["run_id"] in systems and r["task"] != "translation"]
        except LapeHubError:
            pass
    return adapter_run_id(folder, catalog), rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 1e5 else f"{v:.3g}"
    return "" if v is None else str(v)


def format_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """Rows for a printed table: system, task, direction, metric, value [interval], n, tok/s."""
    out = []
    for r in rows:
        ci = (f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
              if r.get("ci_low") is not None and r.get("ci_high") is not None else "")
        out.append({"system": r["run_id"] if r["run_id"] == BASE else f"{r['method']}:{r['run_id']}",
                    "task": r["task"], "direction": r["direction"], "metric": r["metric"],
                    "split": r["split"], "n": str(r["n_examples"]), "value": _fmt(r["value"]),
                    "95% CI": ci, "tok/s": _fmt(r.get("tokens_per_s"))})
    return out
