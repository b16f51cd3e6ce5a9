"""Options and printing shared by the commands (click only: nothing heavy here)."""
from __future__ import annotations

from typing import Any, Sequence

import click

catalog_option = click.option(
    "--catalog", "catalog_dir", type=click.Path(file_okay=False), envvar="LAPE_HUB_CATALOG",
    default=None, help="Catalog folder (default: the embedded catalog/; env LAPE_HUB_CATALOG).")


def open_catalog(catalog_dir: str | None):
    from lape_hub.catalog import Catalog

    return Catalog(catalog_dir)


def split_langs(values: Sequence[str]) -> list[str]:
    """``--langs mt,af --langs is`` and ``--langs "mt af"`` both give [mt, af, is]."""
    out: list[str] = []
    for v in values:
        out += [x for x in v.replace(",", " ").split() if x]
    return out


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
