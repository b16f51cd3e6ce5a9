"""Options and printing shared by the commands (click only: nothing heavy here).

Option values that can't work are refused by the parser, before anything loads: counts and
sizes are ``POSITIVE`` (>= 1), rates and fractions ``RATE`` (in (0, 1]), learning rates and
scales ``POSITIVE_FLOAT`` (> 0). Example::

    @click.option("--seq-len", type=POSITIVE, default=512, help="Tokens per sequence.")
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import click


class FiniteRange(click.FloatRange):
    """A click.FloatRange that also refuses nan and ±inf (which every comparison lets by)."""

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv


#: counts, sizes, budgets, intervals: an integer >= 1
POSITIVE = click.IntRange(min=1)
#: a seed, a count that may be zero: an integer >= 0
NON_NEGATIVE = click.IntRange(min=0)
#: rates and fractions: 0 < x <= 1
RATE = FiniteRange(0.0, 1.0, min_open=True)
#: learning rates, scales, clipping norms, seconds: x > 0
POSITIVE_FLOAT = FiniteRange(min=0.0, min_open=True)
#: weight decay and other penalties: x >= 0
NON_NEGATIVE_FLOAT = FiniteRange(min=0.0)

#: how every --lang/--langs option reads its value (see split_langs)
LANGS_SYNTAX = ("comma- and/or space-separated, repeatable: --langs mt,af --langs 'is cy'; "
                "any code or name --lang takes")

catalog_option = click.option(
    "--catalog", "catalog_dir", type=click.Path(file_okay=False), envvar="LAPE_HUB_CATALOG",
    default=None,
    help="Catalog folder (default: the embedded catalog/; env LAPE_HUB_CATALOG). Must exist, "
         "except for build, import and finetune, which create it (its parent must exist).")


def catalog_root(catalog_dir: str | os.PathLike | None, *, create: bool = False) -> Path:
    """The catalog folder a command will use, checked before any work starts.

    A folder that does not exist is refused (a typo must not read as an empty catalog);
    with ``create`` (build, import) it may be new, but its parent folder must exist.
    """
    from lape_hub.errors import CatalogNotFoundError
    from lape_hub.paths import default_catalog_dir

    root = Path(catalog_dir) if catalog_dir else default_catalog_dir()
    if root.is_dir():
        return root
    if root.exists():
        raise CatalogNotFoundError(f"catalog {root} is not a folder")
    if not create:
        raise CatalogNotFoundError(
            f"no catalog folder at {root} (--catalog / LAPE_HUB_CATALOG); check the path, or "
            f"unset both for the embedded catalog")
    if not root.parent.is_dir():
        raise CatalogNotFoundError(f"cannot create catalog {root}: its parent folder "
                                   f"{root.parent} does not exist")
    return root


def open_catalog(catalog_dir: str | os.PathLike | None, *, create: bool = False):
    """The :class:`~lape_hub.catalog.Catalog` at ``catalog_dir`` (see :func:`catalog_root`)."""
    from lape_hub.catalog import Catalog

    return Catalog(catalog_root(catalog_dir, create=create))


def split_langs(values: Sequence[str]) -> list[str]:
    """``--langs mt,af --langs is`` and ``--langs "mt af"`` both give [mt, af, is]."""
    out: list[str] = []
    for v in values:
        out += [x for x in v.replace(",", " ").split() if x]
    return out


def langs_callback(ctx: click.Context, param: click.Parameter, value):
    """Parse-time split of a --lang/--langs option (LANGS_SYNTAX); a value with no names in
    it (``--langs ,``) is refused instead of meaning "all languages"."""
    if value is None:
        return value
    values = (value,) if isinstance(value, str) else tuple(value)
    for v in values:
        if not split_langs([v]):
            raise click.BadParameter(f"{v!r} names no language", ctx=ctx, param=param)
    names = split_langs(values)
    if isinstance(value, str):  # a one-language option
        if len(names) > 1:
            raise click.BadParameter(f"takes one language, got {len(names)}: {value!r}",
                                     ctx=ctx, param=param)
        return names[0]
    return tuple(names)


def task_list(values: Sequence[str], default: Sequence[str]) -> list[str]:
    """Evaluation tasks from repeatable, comma-separated ``--tasks`` values (``default`` when
    none); an unknown task is a usage error naming the known ones."""
    from lape_hub.evaluation.evaluator import TASKS

    tasks = split_langs(values) if values else list(default)
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise click.UsageError(f"unknown task {bad[0]!r}; use {', '.join(TASKS)}")
    return tasks


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Aligned plain-text table."""
    if not rows:
        click.echo("(no rows)")
        return
    columns = list(columns or rows[0].keys())
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    click.echo(line)
    click.echo("  ".join("-" * w for w in widths))
    for row in cells:
        click.echo("  ".join(v.rjust(w) if v.replace(".", "").replace(",", "").isdigit()
                             else v.ljust(w) for v, w in zip(row, widths)))


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
