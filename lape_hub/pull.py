"""Seed a local catalog with a published catalog's entries (``lape-hub pull``).

A builder that adds one language to a model must not recount the languages someone already
published: ``pull`` downloads the model's partitions from the Hub dataset repo (through the
remote catalog's checked, cached download) and copies into the local catalog every entry it
lacks. An entry the local catalog already holds is left alone: identical files are
reported as such, and a file that differs is reported as a conflict (never overwritten),
so a local build in progress is never lost.

Example::

    >>> from lape_hub.catalog import Catalog
    >>> r = pull(Catalog(), "gemma-3-270m", hub_repo="my-org/lape-hub-catalog")  # doctest: +SKIP
    >>> r.added                                                                   # doctest: +SKIP
    ['activation_counts/model=gemma-3-270m/.../lang=sco_Latn/data.parquet']
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from lape_hub.atomic import atomic_path
from lape_hub.digest import file_sha256

if TYPE_CHECKING:  # pragma: no cover
    from lape_hub.catalog import Catalog


@dataclass
class PullResult:
    """What a pull did, as catalog-relative paths."""

    source: str
    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    def summary(self) -> str:
        out = (f"pulled from {self.source}: {len(self.added)} new, "
               f"{len(self.unchanged)} already here")
        if self.conflicts:
            out += (f", {len(self.conflicts)} differ locally and were kept "
                    f"(e.g. {self.conflicts[0]})")
        return out


def pull(catalog: "Catalog", model: str, *, hub_repo: str | None = None,
         revision: str | None = None, tables: Sequence[str] | None = None,
         **where: str) -> PullResult:
    """Copy ``model``'s published entries that ``catalog`` lacks from the Hub into it.

    Every downloaded file was checked by the remote reader (path pattern, size cap,
    checksum, table schema); copies land atomically under the catalog's lock. A catalog
    without ``CATALOG.json`` gets the remote's.
    """
    from lape_hub.catalog import MANIFEST
    from lape_hub.remote import remote_catalog

    remote = remote_catalog(hub_repo, revision=revision, model=model, tables=tables, **where)
    result = PullResult(source=str(remote.root))
    with catalog.lock():
        for path in remote.iter_files():
            rel = path.relative_to(remote.root).as_posix()
            dest = catalog.root / rel
            if dest.exists():
                if rel == MANIFEST or file_sha256(dest) == file_sha256(path):
                    result.unchanged.append(rel)
                else:
                    result.conflicts.append(rel)
                continue
            with atomic_path(dest) as tmp:
                tmp.write_bytes(path.read_bytes())
            result.added.append(rel)
    return result
