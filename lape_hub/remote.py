"""The remote catalog: the partitions you need from the catalog's Hub dataset repo, cached.

:func:`remote_catalog` resolves the revision (a branch or tag) to a commit sha once, lists
that commit's files, downloads only the Parquet files of the tables and partitions asked
for (plus ``CATALOG.json``) and returns a :class:`~lape_hub.catalog.Catalog` over the cache
folder, laid out like any catalog::

    <cache_dir()>/hub/ORG/NAME/refs/main                 # "main" -> the sha it resolved to
    <cache_dir()>/hub/ORG/NAME/<sha>/CATALOG.json
    <cache_dir()>/hub/ORG/NAME/<sha>/neurons/model=gemma-3-270m/.../data.parquet
    <cache_dir()>/hub/ORG/NAME/<sha>/.lape-hub-remote.json   # repo, sha, the commit's listing

Everything the Hub sends is checked before it is used: the commit id must be 40 hex digits,
every listed path must be safe (relative, no ``..``, backslash or control character) and a
file under a table folder must follow the catalog layout; a download stops at the size cap
(:func:`lape_hub.hub_files.download_cap_bytes`) and lands only when it matches the listed
checksum; a cached file is checked against that checksum again before each use (a
tampered one is downloaded again, or refused offline) and every Parquet file against its
table's schema.

A commit never changes, so cached files are reused without asking the Hub, and with
``HF_HUB_OFFLINE=1`` everything is served from the cache (the last sha each revision
resolved to), or refused in one line naming what is missing. A remote catalog whose schema
version is newer than this lape-hub's is refused, naming both versions.

Example::

    >>> cat = remote_catalog("my-org/lape-hub-catalog", model="gemma-3-270m",
    ...                      tables=["neurons"])                         # doctest: +SKIP
    >>> cat.neuron_set("gemma-3-270m", "npi_Deva").n_neurons             # doctest: +SKIP
    1204
"""
from __future__ import annotations

import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence
from urllib.parse import quote

from lape_hub.atomic import atomic_write_text
from lape_hub.catalog import MANIFEST, check_manifest, parse_entry_path
from lape_hub.config import (hub_api, hub_error, hub_token, is_offline, resolve_hub_repo,
                             with_retries)
from lape_hub.errors import HubError, NotInCatalogError, SchemaError, UnknownNameError
from lape_hub.hub_files import (LocalFile, RemoteFile, UnsafeFolderError, check_commit_sha,
                                download_cap_bytes, download_remote_file, list_repo_files,
                                redacting, show_name)

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from lape_hub.catalog import Catalog

RECORD = ".lape-hub-remote.json"
STAMPS = ".lape-hub-verified.json"   # path -> [size, mtime_ns, inode] when last verified
_SHA = re.compile(r"^[0-9a-f]{40}$")
#: top-level files of a catalog repo besides the tables (never downloaded but CATALOG.json)
TOP_LEVEL = (MANIFEST, "README.md", ".gitattributes")
log = logging.getLogger(__name__)


def hub_cache_dir(repo_id: str, cache: str | Path | None = None) -> Path:
    """``<cache>/hub/ORG/NAME`` (``cache`` defaults to :func:`lape_hub.paths.cache_dir`)."""
    from lape_hub.paths import cache_dir

    org, name = repo_id.split("/", 1)
    return Path(cache if cache is not None else cache_dir()) / "hub" / org / name


def _ref_file(repo_dir: Path, revision: str) -> Path:
    """``refs/<revision>``, quoted so that no revision name ("..", "a/b") leaves ``refs/``."""
    return repo_dir / "refs" / quote(revision, safe="").replace(".", "%2E")


_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|//|@\{")


def check_revision_name(revision: str) -> str:
    """A branch or tag name as git allows it (no ``..``, no part starting with ``.``, no
    control characters, spaces or ``~^:?*[\\``), so it can name nothing but a revision.

    >>> check_revision_name("v1.0")
    'v1.0'
    """
    parts = revision.split("/")
    if not revision or len(revision) > 255 or _BAD_REF.search(revision) or \
            any(not p or p.startswith(".") or p.endswith(".lock") for p in parts) or \
            revision.endswith("."):
        raise HubError(f"{show_name(revision, 80)} is not a valid revision name (a branch, tag "
                       "or 40-hex commit id)")
    return revision


def resolve_revision(repo_id: str, revision: str | None = None, *, api: "HfApi | None" = None,
                     token: str | None = None, cache: str | Path | None = None) -> str:
    """The commit sha ``revision`` (default ``main``) points to, recorded in the cache.

    A 40-hex sha is returned as is. Offline, the sha recorded last time is used.
    """
    revision = revision or "main"
    if _SHA.fullmatch(revision):
        return revision
    check_revision_name(revision)
    ref = _ref_file(hub_cache_dir(repo_id, cache), revision)
    if is_offline():
        if ref.is_file() and not ref.is_symlink():
            return check_commit_sha(ref.read_text(errors="replace").strip(),
                                    f"the cached ref {ref}")
        raise HubError(f"offline (HF_HUB_OFFLINE=1) and dataset repo {repo_id}@{revision} was "
                       "never fetched: fetch it once online")
    api = api or hub_api(hub_token(token))
    try:
        sha = with_retries(lambda: api.repo_info(repo_id, repo_type="dataset",
                                                 revision=revision).sha)
    except Exception as e:
        raise hub_error(e, repo_id=repo_id, action=f"resolving {revision} of",
                        token=token) from None
    if not sha:
        raise HubError(f"dataset repo {repo_id} did not say which commit {revision} is")
    check_commit_sha(sha, f"dataset repo {repo_id}")
    atomic_write_text(ref, sha + "\n")
    return sha


def _listing(api: "HfApi", repo_id: str, sha: str, token: str | None) -> dict[str, dict[str, Any]]:
    """The repo's files at ``sha`` as plain dicts (they go into the cache record as JSON)."""
    files = list_repo_files(api, repo_id, "dataset", sha, token=token)
    return {p: {"size": f.size, "oid": f.oid, "sha256": f.sha256} for p, f in files.items()}


def check_listing(listing: Any, where: str) -> dict[str, RemoteFile]:
    """A catalog repo's listing (from the Hub or the cache record) as checked RemoteFiles.

    Every path must be safe to join under the cache folder, and every path under a table
    folder (or ending in ``.parquet``) must follow the catalog layout
    (``table/key=value/.../data.parquet``, values quoted as lape-hub writes them).
    """
    from lape_hub.schemas import table_names

    if not isinstance(listing, dict):
        raise HubError(f"{where}: the file listing is malformed: refused")
    tables = set(table_names())
    out = {}
    for path, meta in listing.items():
        if not isinstance(meta, dict) or set(meta) != {"size", "oid", "sha256"}:
            raise HubError(f"{where}: malformed listing entry for {show_name(str(path))}: "
                           "refused")
        f = RemoteFile(path, **meta).check(where)
        if (path.split("/")[0] in tables or path.endswith(".parquet")) and \
                parse_entry_path(path) is None:
            raise HubError(f"{where} lists {show_name(path)}, which is not a catalog file "
                           "name (table/key=value/.../data.parquet): refused")
        out[path] = f
    return out


def _download(api: "HfApi", repo_id: str, sha: str, path: str, root: Path,
              remote: RemoteFile, token: str | None) -> None:
    download_remote_file(api, repo_id, "dataset", path, sha, root, token=token,
                         expected=remote)


def _cached_ok(root: Path, remote: RemoteFile) -> bool | None:
    """None: not cached; True: a regular file matching the listing; False: tampered."""
    local = root.joinpath(*remote.path.split("/"))
    if not os.path.lexists(local):
        return None
    if local.is_symlink() or not local.is_file():
        return False
    try:
        return local.stat().st_size == remote.size and remote.same_as(LocalFile(remote.path,
                                                                               local))
    except (OSError, UnsafeFolderError):
        return False


def _stamp(path: Path) -> list[int]:
    st = os.stat(path, follow_symlinks=False)
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _sweep(root: Path, listing: dict[str, RemoteFile], verified: Sequence[str]) -> None:
    """Leave under ``root`` only files a reader may use: the ``verified`` files (checked
    against the listing by this call), and files of earlier calls whose size, mtime and
    inode are as they were when they were verified. Links, files the listing does not
    have and changed files are removed (they are downloaded again when asked for), so
    the Catalog over ``root`` (which reads every entry there, e.g. for SQL views) never
    sees an unverified byte."""
    stamps_path = root / STAMPS
    old = _read_json(stamps_path)
    old = old if isinstance(old, dict) else {}
    stamps: dict[str, list[int]] = {}
    keep = set(verified)
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        for name in list(dirnames):
            if (d / name).is_symlink():
                (d / name).unlink()
                dirnames.remove(name)
                log.warning("removed the link %s from the remote catalog cache", d / name)
        for name in filenames:
            p = d / name
            rel = p.relative_to(root).as_posix()
            if rel in (RECORD, STAMPS) and not p.is_symlink():
                continue
            now = None if p.is_symlink() else _stamp(p)
            if now is not None and rel in listing and (rel in keep or old.get(rel) == now):
                stamps[rel] = now
                continue
            p.unlink()
            if now is None or rel in listing:
                log.warning("removed %s from the remote catalog cache (changed since it was "
                            "verified)", p)
    if stamps != old:
        atomic_write_text(stamps_path, json.dumps(stamps, sort_keys=True) + "\n")


def _read_json(path: Path) -> Any:
    """A small JSON file of the cache, or None when absent, a link or damaged."""
    if not path.is_file() or path.is_symlink():
        return None
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None


def _read_record(path: Path) -> dict[str, Any] | None:
    """The cache record, or None when it is absent or damaged (it is then made again)."""
    if not path.is_file() or path.is_symlink():
        return None
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        log.warning("cache record %s is damaged: listing the commit again", path)
        return None
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        log.warning("cache record %s is damaged: listing the commit again", path)
        return None
    return record


def _check_schema_version(root: Path, repo_id: str, sha: str) -> None:
    check_manifest(root / MANIFEST, f"remote catalog {repo_id}@{sha[:12]}")


def _check_schemas(root: Path, paths: Sequence[str], where: str) -> None:
    """Every selected Parquet file must match its table's schema (footer read only)."""
    from lape_hub.schemas import table_schema

    for p in paths:
        parsed = parse_entry_path(p)
        if parsed is None:
            continue
        try:
            table_schema(parsed[0]).check_file(root.joinpath(*p.split("/")))
        except SchemaError as e:
            raise SchemaError(f"{where}: {e}") from None


def _resolve_filter(key: str, value: str, present: set[str]) -> str:
    """A user's model or language spelling -> the catalog's value (raw if the remote has it)."""
    if value in present:
        return value
    try:
        if key == "model":
            from lape_hub.registry import resolve_model

            return resolve_model(value).alias
        if key == "lang":
            from lape_hub.languages import resolve_language

            return resolve_language(value).code
        if key == "refset":
            from lape_hub.registry import resolve_refset

            return resolve_refset(value).name
    except UnknownNameError:
        if value.lower() in present:
            return value.lower()
        raise
    return value


def select_files(listing: Sequence[str], tables: Sequence[str] | None = None,
                 **where: str) -> list[str]:
    """The Parquet files of ``tables`` (default: every table with a local schema) whose
    partition key matches ``where`` (keys a table is not partitioned by are ignored for it).

    >>> select_files(["neurons/model=a/refset=r/selection=s/data.parquet",
    ...               "neurons/model=b/refset=r/selection=s/data.parquet",
    ...               "README.md"], model="a")
    ['neurons/model=a/refset=r/selection=s/data.parquet']
    """
    from lape_hub.schemas import table_names, table_schema

    known = table_names()
    wanted = list(tables) if tables else known
    for t in wanted:
        table_schema(t)  # unknown table: SchemaError naming it
    out = []
    for path in sorted(listing):
        parsed = parse_entry_path(path)
        if parsed is None or parsed[0] not in wanted:
            continue
        table, key = parsed
        partition = table_schema(table).partition_by
        if all(key.get(k) == v for k, v in where.items() if k in partition and v is not None):
            out.append(path)
    return out


def remote_catalog(hub_repo: str | None = None, *, revision: str | None = None,
                   tables: Sequence[str] | None = None, model: str | None = None,
                   token: str | None = None, cache: str | Path | None = None,
                   **where_: str) -> "Catalog":
    """A local :class:`~lape_hub.catalog.Catalog` over the needed partitions of the remote.

    Args:
        hub_repo: ``ORG/NAME``; default ``$LAPE_HUB_REPO`` or the config file.
        revision: branch, tag or commit sha (default ``main``), resolved once to a sha.
        tables: tables to fetch (default: all with a local schema).
        model: only this model's partitions (any registry spelling).
        token: default ``$HF_TOKEN`` or the saved login (public repos need none).
        cache: cache root (default :func:`lape_hub.paths.cache_dir`).
        **where_: more partition filters, e.g. ``refset="paper-12"``, ``lang="npi_Deva"``
            (applied to the tables partitioned by that column).

    Raises:
        HubError: unknown repo or revision (404), no access (401/403), offline without the
            files cached, a download that does not match its checksum.
        SchemaError: the remote catalog's schema version is newer than this lape-hub's,
            or a file does not match its table's schema.
    """
    repo_id = resolve_hub_repo(hub_repo)
    offline = is_offline()
    token = None if offline else hub_token(token)
    with redacting(token):
        return _remote_catalog(repo_id, revision, tables, model, token, cache, offline, where_)


def _remote_catalog(repo_id: str, revision: str | None, tables: Sequence[str] | None,
                    model: str | None, token: str | None, cache: str | Path | None,
                    offline: bool, where_: dict[str, str]) -> "Catalog":
    from filelock import FileLock

    from lape_hub.catalog import Catalog

    api = None if offline else hub_api(token)
    if not offline:
        download_cap_bytes()              # a malformed cap setting: one line, before any call
    sha = resolve_revision(repo_id, revision, api=api, token=token, cache=cache)
    repo_dir = hub_cache_dir(repo_id, cache)
    root = repo_dir / sha
    for folder in (repo_dir.parent.parent, repo_dir.parent, repo_dir, root):
        if folder.is_symlink():
            raise HubError(f"cache folder {folder} is a link: refusing to write through it "
                           "(remove it)")
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(repo_dir / f".{sha}.lock"), timeout=600):
        where = f"dataset repo {repo_id}@{sha[:12]}"
        record_path = root / RECORD
        record = _read_record(record_path)
        if record is None:
            if offline or api is None:
                raise HubError(f"offline (HF_HUB_OFFLINE=1) and {where} is not cached (or its "
                               "cache record is damaged): fetch it once online")
            record = {"repo": repo_id, "sha": sha, "files": _listing(api, repo_id, sha, token)}
            check_listing(record["files"], where)
            atomic_write_text(record_path, json.dumps(record, indent=1, sort_keys=True) + "\n")
        listing = check_listing(record["files"], where)
        if MANIFEST not in listing:
            raise HubError(f"dataset repo {repo_id}@{sha[:12]} is not a lape-hub catalog (no "
                           f"{MANIFEST})")
        filters = dict(where_)
        if model is not None:
            filters["model"] = model
        keys = [parsed[1] for parsed in map(parse_entry_path, listing) if parsed]
        for key, value in list(filters.items()):
            present = {k[key] for k in keys if key in k}
            filters[key] = _resolve_filter(key, value, present)
        selected = select_files(list(listing), tables, **filters)
        if not selected and filters:
            what = ", ".join(f"{k}={v}" for k, v in sorted(filters.items()))
            raise NotInCatalogError(f"dataset repo {repo_id}@{sha[:12]} has no "
                                    f"{'/'.join(tables) if tables else 'catalog'} entries for "
                                    f"{what}")
        wanted = [MANIFEST] + selected
        todo = []
        for p in wanted:
            state = _cached_ok(root, listing[p])
            if state is False:
                if offline or api is None:
                    raise HubError(f"cached {show_name(p)} of {where} does not match the "
                                   "checksum the Hub lists (changed or damaged): refused; run "
                                   "once online to download it again")
                log.warning("cached %s of %s does not match its checksum: downloading it again",
                            p, where)
            if not state:
                todo.append(p)
        if todo and (offline or api is None):
            raise HubError(f"offline (HF_HUB_OFFLINE=1) and {len(todo)} file(s) of dataset repo "
                           f"{repo_id}@{sha[:12]} are not cached (e.g. {todo[-1]}): fetch them "
                           "once online")
        if MANIFEST in todo:
            assert api is not None
            _download(api, repo_id, sha, MANIFEST, root, listing[MANIFEST], token)
            todo.remove(MANIFEST)
        _check_schema_version(root, repo_id, sha)
        if todo:
            assert api is not None
            with ThreadPoolExecutor(max_workers=min(4, len(todo))) as pool:
                futures = [pool.submit(_download, api, repo_id, sha, p, root, listing[p], token)
                           for p in todo]
                for f in futures:
                    f.result()
        _check_schemas(root, selected, where)
        _sweep(root, listing, wanted)
    return Catalog(root)
