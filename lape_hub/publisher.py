"""The publisher: the catalog as a Hub dataset repo, adapters as Hub model repos.

Publishing compares the files lape-hub would put in the repo with the remote's listing
(sha256 of LFS files, git blob id of the others) and makes **one** commit with only the
added and changed files, naming its parent (``create_commit(parent_commit=...)``). Nothing
new means no commit. A concurrent publish (HTTP 412/409) is re-planned on the new head
once, then refused; transient failures (5xx, connection) are retried with backoff. A
failed publish leaves the remote as it was: the commit lands whole or not at all.

What is sent is an allow-list of regular files lape-hub builds: a catalog's
``CATALOG.json`` and ``<table>/<key>=<value>/.../data.parquet`` files (each checked against
its schema first) and the table schemas; an adapter folder's weights, configs and
``eval_results.json`` (:data:`ADAPTER_FILES`); a merged model's ``save_pretrained`` and
tokenizer files (:data:`MERGED_FILES`). A folder holding a symlink, device, pipe or any
other file is refused, naming them (:class:`~lape_hub.hub_files.UnsafeFolderError`); files
are opened without following links when the commit is built. A dry run stages the files
through the very same commit operations a real publish would send.

Catalog publishing never drops data: a changed Parquet file whose remote copy has
languages the local one lacks is refused (fetch the remote partition first, or
``force``). With ``missing_only`` (``--missing``, for CI) a changed file is published only
when it adds languages the remote lacks; files the remote lacks are always published.

Example::

    >>> result = publish_catalog("catalog/", "my-org/lape-hub-catalog",
    ...                          dry_run="/tmp/stage")                  # doctest: +SKIP
    >>> print("\\n".join(result.plan.report_lines()))                  # doctest: +SKIP
    dataset repo my-org/lape-hub-catalog: 5 added, 0 changed, 0 deleted, 0 unchanged
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from lape_hub import config
from lape_hub.cards import (ADAPTER_CONFIG, AdapterInfo, Evaluation, adapter_card,
                            catalog_card)
from lape_hub.catalog import MANIFEST, check_manifest, file_langs, parse_entry_path
from lape_hub.config import (hub_api, hub_error, hub_token, http_status, is_offline,
                             is_transient, load_settings, resolve_hub_repo, validate_repo_id,
                             with_retries)
from lape_hub.digest import artifact_sha256
from lape_hub.errors import HubError, LapeHubError, NotInCatalogError, SchemaError
from lape_hub.hub_files import (LocalFile, RemoteFile, check_commit_sha, collect_files,
                                download_remote_file, list_repo_files, redacting)

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from lape_hub.catalog import Catalog

log = logging.getLogger(__name__)

STATUSES = ("added", "changed", "deleted", "unchanged", "kept", "skipped")
PENDING = ("added", "changed", "deleted")
STAGING_MARKER = ".lape-hub-staging"
MERGED_DIR = "merged"

#: what an adapter folder may hold (every fine-tuning method's output; README.md is
#: replaced by the generated model card)
ADAPTER_FILES = frozenset({
    "lape_adapter.json", "lape_adapter.safetensors", "dense_weights.safetensors",
    "adapter_config.json", "adapter_model.safetensors", "eval_results.json", "README.md"})
#: what a merged model folder may hold (``save_pretrained`` + tokenizer + the adapter config)
MERGED_FILES = frozenset({
    "config.json", "generation_config.json", "model.safetensors.index.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "added_tokens.json", "chat_template.jinja", "chat_template.json", "vocab.json",
    "merges.txt", "spiece.model", "sentencepiece.bpe.model", "lape_adapter.json"})
_SHARD = re.compile(r"model(-\d{5}-of-\d{5})?\.safetensors")


@dataclass(frozen=True)
class RemoteState:
    """The remote repo at its head: whether it exists, the head commit and its files."""

    exists: bool
    head: str | None = None
    files: dict[str, RemoteFile] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    path: str
    status: str           # one of STATUSES
    size: int | None = None
    note: str = ""


# -- the plan ----------------------------------------------------------------------------------
@dataclass
class Plan:
    """What one publish would do to one repo, made against the remote head ``parent``.

    ``files`` is every file lape-hub manages in the repo as it will be after the commit;
    ``exists`` says whether the repo existed before this publish.
    """

    repo_id: str
    repo_type: str
    parent: str | None
    exists: bool
    files: dict[str, LocalFile]
    changes: list[Change]
    message: str
    description: str

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.status in PENDING]

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for c in self.changes:
            out[c.status] += 1
        return out

    def report_lines(self, *, verbose: bool = False) -> list[str]:
        """A summary line, then one line per pending file (every file with ``verbose``)."""
        n = self.counts()
        head = (f"{self.repo_type} repo {self.repo_id}"
                f"{'' if self.exists else ' (new)'}: {n['added']} added, {n['changed']} "
                f"changed, {n['deleted']} deleted, {n['unchanged']} unchanged")
        extra = [f"{n[s]} {s}" for s in ("kept", "skipped") if n[s]]
        lines = [head + (f" ({', '.join(extra)})" if extra else "")]
        for c in sorted(self.changes, key=lambda c: (STATUSES.index(c.status), c.path)):
            if verbose or c.status in PENDING or c.status == "skipped":
                note = f"  ({c.note})" if c.note else ""
                lines.append(f"  {c.status:<9} {c.path}{note}")
        if self.pending:
            lines.append(f"commit: {self.message}")
        return lines

    @contextmanager
    def operations(self, *, everything: bool = False) -> Iterator[list[Any]]:
        """Commit operations for the pending changes (``everything``: one add per file of
        the tree after the commit, as a dry run stages it), built fresh for each attempt.

        Every local file is opened here without following links and checked to be a
        regular file; the operation uploads from that open file, which is closed on exit.
        """
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        with ExitStack() as stack:
            ops: list[Any] = []
            changes = [Change(p, "added") for p in sorted(self.files)] if everything \
                else self.pending
            for c in changes:
                if c.status == "deleted":
                    ops.append(CommitOperationDelete(path_in_repo=c.path, is_folder=False))
                else:
                    src = stack.enter_context(self.files[c.path].open())
                    ops.append(CommitOperationAdd(path_in_repo=c.path, path_or_fileobj=src))
            yield ops

    def stage(self, folder: str | Path) -> Path:
        """Write the repo tree as it will be after the commit to ``folder`` (empty, new, or
        staged before), from the same commit operations a real publish builds."""
        root = Path(folder)
        if root.is_symlink():
            raise LapeHubError(f"--dry-run folder {root} is a symlink: give the folder itself")
        if root.exists() and any(root.iterdir()):
            if not (root / STAGING_MARKER).is_file() or (root / STAGING_MARKER).is_symlink():
                raise LapeHubError(f"--dry-run folder {root} is not empty (and was not staged "
                                   "by lape-hub): pick an empty or new folder")
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        (root / STAGING_MARKER).write_text(f"{self.repo_type} {self.repo_id} @ "
                                           f"{self.parent or '(new repo)'}\n")
        with self.operations(everything=True) as ops:
            for op in ops:
                dest = root.joinpath(*op.path_in_repo.split("/"))
                dest.parent.mkdir(parents=True, exist_ok=True)
                with op.as_file() as src, open(dest, "xb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
        return root


@dataclass(frozen=True)
class PublishResult:
    """The outcome: the plan, the commit made (None when nothing was new or on a dry run)."""

    plan: Plan
    commit: str | None = None
    url: str | None = None
    staged: Path | None = None
    replanned: bool = False

    @property
    def repo_url(self) -> str:
        from lape_hub.config import hub_endpoint

        prefix = "datasets/" if self.plan.repo_type == "dataset" else ""
        return f"{hub_endpoint()}/{prefix}{self.plan.repo_id}"

    def summary(self) -> str:
        if self.staged is not None:
            return f"dry run: staged {len(self.plan.files)} files in {self.staged}; nothing pushed"
        if self.commit:
            again = " (re-planned after a concurrent publish)" if self.replanned else ""
            return f"committed {self.commit[:12]} to {self.repo_url}{again}"
        return f"{self.repo_url} is up to date: no commit"


def check_stage_dir(folder: str | Path | None, catalog_root: Path) -> Path | None:
    """The ``--dry-run`` folder, checked before any work: not inside (or holding) the
    catalog, the cache or the registry, not a file, under a writable parent. It is
    created, with missing parents, when the tree is staged."""
    if folder is None:
        return None
    from lape_hub.output_paths import check_output_dir

    return Path(check_output_dir(folder, create=True, replaces=True, catalog_root=catalog_root))


# -- talking to the remote ---------------------------------------------------------------------
def remote_state(api: "HfApi", repo_id: str, repo_type: str, *, token: str | None) -> RemoteState:
    """The remote head and file listing; ``exists=False`` for a repo that is not there (404)."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        info = with_retries(lambda: api.repo_info(repo_id, repo_type=repo_type, revision="main"))
    except RepositoryNotFoundError as e:
        # 404: not there. 401 without a token (a dry run): not there, or private.
        if http_status(e) == 404 or (http_status(e) == 401 and token is None):
            return RemoteState(exists=False)
        raise hub_error(e, repo_id=repo_id, repo_type=repo_type, action="reading",
                        token=token) from None
    except Exception as e:
        err = hub_error(e, repo_id=repo_id, repo_type=repo_type, action="reading", token=token)
        err.unreachable = _unreachable(e)
        raise err from None
    head = check_commit_sha(info.sha, f"{repo_type} repo {repo_id}")
    files = list_repo_files(api, repo_id, repo_type, head, token=token)
    return RemoteState(exists=True, head=head, files=files)


def _unreachable(e: BaseException) -> bool:
    """True when ``e`` (or what caused it) is a failure to reach the server at all: no
    route, refused or timed-out connection, unknown host."""
    import socket

    seen = 0
    while e is not None and seen < 8:
        name = type(e).__name__
        if isinstance(e, (ConnectionError, socket.gaierror, TimeoutError)) or \
                name in ("ConnectError", "ConnectTimeout", "ConnectionError", "NameResolutionError"):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def _diff(local: dict[str, LocalFile], remote: RemoteState, *,
          managed: Callable[[str], bool], prune: bool) -> list[Change]:
    changes = []
    for path, f in sorted(local.items()):
        r = remote.files.get(path)
        status = "added" if r is None else ("unchanged" if r.same_as(f) else "changed")
        changes.append(Change(path, status, f.data_size))
    for path, r in sorted(remote.files.items()):
        if path not in local and managed(path):
            changes.append(Change(path, "deleted" if prune else "kept", r.size))
    return changes


def _commit(api: "HfApi", plan: Plan, *, replan: Callable[[], Plan], token: str | None,
            retries: int | None, backoff: float | None) -> tuple[Plan, str | None, str | None,
                                                                  bool]:
    """Commit ``plan``; re-plan once on a concurrent publish; retry transient failures.

    Returns (the plan committed, commit id, commit url, whether it was re-planned).
    """
    retries = config.RETRIES if retries is None else retries
    backoff = config.RETRY_BACKOFF_S if backoff is None else backoff
    replanned = conflicts = attempt = 0
    while True:
        if not plan.pending:
            return plan, None, None, bool(replanned)
        try:
            with plan.operations() as ops:
                info = api.create_commit(plan.repo_id, ops, commit_message=plan.message,
                                         commit_description=plan.description,
                                         repo_type=plan.repo_type, revision="main",
                                         parent_commit=plan.parent)
            return plan, info.oid, info.commit_url, bool(replanned)
        except LapeHubError:
            raise
        except Exception as e:
            status = http_status(e)
            if status in (409, 412):
                conflicts += 1
                if conflicts > 1 + (1 if attempt else 0):
                    raise HubError(
                        f"{plan.repo_type} repo {plan.repo_id} changed again while publishing "
                        f"(HTTP {status}: concurrent publishes); refused, nothing was committed "
                        "by this run: run it again when the other publish is done") from None
                log.info("remote head moved (HTTP %s): re-planning on the new head", status)
                plan, replanned = replan(), replanned + 1
                continue
            if is_transient(e) and attempt < retries:
                wait = backoff * (2 ** attempt)
                attempt += 1
                log.warning("transient Hub error (%s); retry %d/%d in %.1fs",
                            status or type(e).__name__, attempt, retries, wait)
                time.sleep(wait)
                continue
            raise hub_error(e, repo_id=plan.repo_id, repo_type=plan.repo_type,
                            action="committing to", token=token) from None


def _ensure_repo(api: "HfApi", repo_id: str, repo_type: str, *, private: bool,
                 token: str | None) -> None:
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    except Exception as e:
        raise hub_error(e, repo_id=repo_id, repo_type=repo_type, action="creating",
                        token=token) from None


def _run(api: "HfApi", make_plan: Callable[[RemoteState], Plan], repo_id: str, repo_type: str,
         *, token: str | None, dry_run: str | Path | None, private: bool,
         retries: int | None, backoff: float | None) -> PublishResult:
    """Plan against the remote, then stage (dry run) or create the repo if needed and commit."""
    if dry_run is not None and is_offline():
        plan = make_plan(RemoteState(exists=False))
        plan.message += " (offline: compared with nothing)"
    else:
        try:
            state = remote_state(api, repo_id, repo_type, token=token)
        except HubError as e:
            if dry_run is None or not getattr(e, "unreachable", False):
                raise
            state = None
        plan = make_plan(state or RemoteState(exists=False))
        if state is None:
            plan.message += " (Hub unreachable: compared with nothing)"
    if dry_run is not None:
        return PublishResult(plan, staged=plan.stage(dry_run))
    if not plan.pending:
        return PublishResult(plan)
    existed = plan.exists
    if not existed:
        _ensure_repo(api, repo_id, repo_type, private=private, token=token)

    def replan() -> Plan:
        new = make_plan(remote_state(api, repo_id, repo_type, token=token))
        new.exists = existed
        return new

    if not existed:
        plan = replan()

    plan, oid, url, replanned = _commit(api, plan, replan=replan, token=token, retries=retries,
                                        backoff=backoff)
    return PublishResult(plan, commit=oid, url=url, replanned=replanned)


# -- the catalog -------------------------------------------------------------------------------
def _open_catalog(catalog: "Catalog | str | Path | None") -> "Catalog":
    from lape_hub.catalog import Catalog

    return catalog if isinstance(catalog, Catalog) else Catalog(catalog)


def catalog_data_files(catalog: "Catalog") -> dict[str, LocalFile]:
    """CATALOG.json, every Parquet file and every table schema, keyed by path in the repo.

    The catalog folder may hold nothing else (its lock file aside): a symlink, special file
    or stray file anywhere in it refuses the publish, naming it. Every Parquet file is
    checked against its table's schema and CATALOG.json against this lape-hub's version.
    """
    from lape_hub.paths import schemas_dir
    from lape_hub.schemas import table_schema

    def allowed(rel: str) -> bool:
        return rel == MANIFEST or parse_entry_path(rel) is not None

    files = collect_files(catalog.root, allowed, what="catalog",
                          skip=lambda rel: rel == ".lock") if catalog.root.is_dir() else {}
    if not any(_table_of(p) for p in files):
        raise NotInCatalogError(f"catalog {catalog.root} has no entries: nothing to publish")
    if MANIFEST in files:
        check_manifest(catalog.root / MANIFEST, f"catalog {catalog.root}")
    for rel in files:
        table = _table_of(rel)
        if table is not None:
            table_schema(table).check_file(catalog.root / rel)
    files.update(collect_files(schemas_dir(), lambda rel: "/" not in rel and
                               rel.endswith(".json"), what="schemas folder", prefix="schemas/"))
    return dict(sorted(files.items()))


def _table_of(path: str) -> str | None:
    parsed = parse_entry_path(path)
    return parsed[0] if parsed else None


def _catalog_managed(path: str) -> bool:
    return _table_of(path) is not None or path.startswith("schemas/") or \
        path in (MANIFEST, "README.md")


def _path_key(path: str) -> dict[str, str]:
    parsed = parse_entry_path(path)
    return parsed[1] if parsed else {}


def catalog_commit_message(pending: Sequence[Change], new_langs: dict[str, set[str]]) -> str:
    """E.g. ``Add gemma-3-270m · 3 languages (activation_counts, lape, neurons)``.

    ``new_langs`` maps a Parquet path to the languages it adds (path-level ``lang=`` wins).
    """
    data = [c for c in pending if _table_of(c.path) and c.status != "deleted"]
    deleted = [c for c in pending if c.status == "deleted"]
    if not data:
        if deleted:
            return f"Remove {len(deleted)} catalog file{'s' * (len(deleted) != 1)}"
        return "Update dataset card and schemas"
    verb = "Add" if all(c.status == "added" for c in data) else "Update"
    by_model: dict[str, set[str]] = defaultdict(set)
    tables: set[str] = set()
    for c in data:
        tables.add(_table_of(c.path) or "")
        langs = {_path_key(c.path).get("lang")} - {None} or new_langs.get(c.path, set())
        by_model[_path_key(c.path).get("model", "")].update(x for x in langs if x)
    parts = []
    for model, langs in sorted(by_model.items()):
        n = len(langs)
        parts.append(f"{model} · {n} language{'s' * (n != 1)}" if n else model)
    msg = f"{verb} {', '.join(parts)} ({', '.join(sorted(tables))})"
    if deleted:
        msg += f"; remove {len(deleted)} file{'s' * (len(deleted) != 1)}"
    return msg


def _description(changes: Sequence[Change], limit: int = 200) -> str:
    lines = [f"{c.status}: {c.path}" + (f" ({c.note})" if c.note else "")
             for c in changes if c.status in PENDING]
    more = len(lines) - limit
    lines = lines[:limit] + ([f"... and {more} more"] if more > 0 else [])
    from lape_hub import __version__

    return "\n".join(lines + ["", f"Published with lape-hub {__version__}."])


def _check_parquet_data(path: Path) -> None:
    """Read every row group of a Parquet file (decompressing every page): a file whose
    footer is fine but whose data is damaged is named before it is published."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        for i in range(pf.num_row_groups):
            pf.read_row_group(i)
    except (pa.ArrowException, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SchemaError(f"corrupt Parquet file {path}: {first}") from None


def _check_remote_schema(api: "HfApi", repo_id: str, remote: RemoteState, scratch: Path,
                         token: str | None) -> None:
    if MANIFEST not in remote.files or remote.head is None:
        return
    path = download_remote_file(api, repo_id, "dataset", MANIFEST, remote.head, scratch,
                                token=token, expected=remote.files[MANIFEST])
    check_manifest(path, f"dataset repo {repo_id}", action="before publishing to it")


def plan_catalog(api: "HfApi", catalog: "Catalog", repo_id: str, remote: RemoteState, *,
                 token: str | None, missing_only: bool = False, prune: bool = False,
                 force: bool = False, message: str | None = None,
                 license: str = "apache-2.0") -> Plan:
    """The plan to make ``repo_id`` hold ``catalog`` (see the module docstring for rules)."""
    from lape_hub.schemas import table_schema

    data = catalog_data_files(catalog)
    new_langs: dict[str, set[str]] = {}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="lape-hub-remote-") as tmp:
        scratch = Path(tmp)
        _check_remote_schema(api, repo_id, remote, scratch, token)
        for path, f in data.items():
            table, r = _table_of(path), remote.files.get(path)
            if table is None or not isinstance(f.source, Path):
                continue
            if r is None:
                new_langs[path] = file_langs(f.source, table) or set()
                continue
            if r.same_as(f):
                continue
            if "lang" in table_schema(table).partition_by:   # the path says the language
                local = remote_langs = {_path_key(path).get("lang", "")}
            else:
                local, remote_langs = file_langs(f.source, table), None
                if local is not None and remote.head is not None:
                    rp = download_remote_file(api, repo_id, "dataset", path, remote.head,
                                              scratch, token=token, expected=r)
                    try:
                        table_schema(table).check_file(rp)
                        remote_langs = file_langs(rp, table)
                    except SchemaError as e:
                        if not force:
                            raise SchemaError(
                                f"dataset repo {repo_id}@{remote.head[:12]}: the remote copy "
                                f"of {path} is damaged or foreign "
                                f"({str(e).replace(str(rp), 'it')}); publish with --force to "
                                "replace it with the local copy") from None
                        remote_langs = None
            adds = None
            if local is not None and remote_langs is not None:
                dropped = remote_langs - local
                if dropped and not force:
                    raise HubError(
                        f"publishing {path} would drop {len(dropped)} language(s) the remote "
                        f"has ({', '.join(sorted(dropped)[:5])}): fetch the remote catalog into "
                        "the local one first, or publish with --force")
                adds = new_langs[path] = local - remote_langs
            if missing_only and not adds:
                skipped[path] = "the remote already has " + (
                    "this entry" if "lang" in table_schema(table).partition_by
                    else "its languages")
    # the staged tree: local files, less the skipped ones (kept as the remote has them)
    files = {p: f for p, f in data.items() if p not in skipped}
    kept_remote = [p for p in remote.files
                   if _table_of(p) and (p in skipped or (p not in data and not prune))]
    card = catalog_card(catalog, repo_id=repo_id, remote_paths=kept_remote, license=license,
                        exclude_local=set(skipped))
    files["README.md"] = LocalFile("README.md", str(card).encode())
    changes = _diff(files, remote, managed=_catalog_managed, prune=prune)
    changes = [Change(c.path, "skipped", c.size, skipped[c.path]) if c.path in skipped else c
               for c in changes]
    for c in changes:      # what will be uploaded must read whole, not just its footer
        if c.status in ("added", "changed") and _table_of(c.path):
            _check_parquet_data(catalog.root / c.path)
    if missing_only and not any(c.status in PENDING and c.path != "README.md" for c in changes):
        # nothing missing: do not publish a card that only re-describes the same data
        changes = [replace(c, status="skipped", note="nothing missing") if c.path == "README.md"
                   and c.status == "changed" else c for c in changes]
    pending = [c for c in changes if c.status in PENDING]
    return Plan(repo_id, "dataset", remote.head, remote.exists, files, changes,
                message or catalog_commit_message(pending, new_langs), _description(changes))


def publish_catalog(catalog: "Catalog | str | Path | None" = None, hub_repo: str | None = None,
                    *, dry_run: str | Path | None = None, missing_only: bool = False,
                    prune: bool = False, force: bool = False, private: bool | None = None,
                    message: str | None = None, token: str | None = None,
                    license: str = "apache-2.0", retries: int | None = None,
                    backoff: float | None = None) -> PublishResult:
    """Publish ``catalog`` to the dataset repo ``hub_repo`` (or the configured one).

    Example::

        >>> r = publish_catalog("catalog/", "my-org/lape-hub-catalog")     # doctest: +SKIP
        >>> r.summary()                                                     # doctest: +SKIP
        'committed 1a2b3c4d5e6f to https://huggingface.co/datasets/my-org/lape-hub-catalog'
    """
    cat = _open_catalog(catalog)
    repo_id = resolve_hub_repo(hub_repo)
    dry_run = check_stage_dir(dry_run, cat.root)
    catalog_data_files(cat)               # refuse an unsafe or damaged catalog before any call
    token = hub_token(token, required=dry_run is None)
    api = hub_api(token)
    private = load_settings().private if private is None else private

    def make_plan(remote: RemoteState) -> Plan:
        return plan_catalog(api, cat, repo_id, remote, token=token, missing_only=missing_only,
                            prune=prune, force=force, message=message, license=license)

    with redacting(token):
        return _run(api, make_plan, repo_id, "dataset", token=token, dry_run=dry_run,
                    private=private, retries=retries, backoff=backoff)


# -- adapters ----------------------------------------------------------------------------------
_artifact_sha256 = artifact_sha256  # the name tests and older callers use


def adapter_row(info: AdapterInfo, catalog: "Catalog | None") -> dict[str, Any] | None:
    """The catalog's ``adapters`` row for this adapter folder: the one whose artifact hash
    is the folder's, else the latest with the same signature; None when there is none."""
    from lape_hub.schemas import table_names

    if catalog is None or "adapters" not in table_names():
        return None
    rows = catalog.read("adapters", model=info.model, lang=info.lang,
                        method=info.method).to_pylist()
    if not rows:
        return None
    digest = _artifact_sha256(info.path)
    for row in rows:
        if row.get("artifact_sha256") == digest:
            return row
    same = [r for r in rows if info.signature and r.get("signature") == info.signature]
    return max(same, key=lambda r: r["created_at"]) if same else None


def load_evaluations(info: AdapterInfo, catalog: "Catalog | None") -> list[Evaluation]:
    """An adapter's evaluations: its validation loss (and perplexity) from the catalog's
    ``adapters`` row (else from ``lape_adapter.json``), plus ``eval_results.json`` entries
    in its folder (``[{"task", "dataset", "split", "metric", "value", "signature"}]``)."""
    import math

    out: list[Evaluation] = []
    row = adapter_row(info, catalog)
    loss = row.get("best_val_loss") if row else info.get("best_val_loss")
    if isinstance(loss, (int, float)) and math.isfinite(loss):
        corpus = str(info.get("corpus") or "validation set")
        sig = (row or {}).get("signature") or info.signature
        out += [Evaluation("text-generation", corpus, "loss", float(loss), split="validation",
                           config=info.lang, name="validation loss (nats/token)",
                           signature=sig),
                Evaluation("text-generation", corpus, "perplexity", math.exp(float(loss)),
                           split="validation", config=info.lang, name="validation perplexity",
                           signature=sig)]
    path = info.path / "eval_results.json"
    if path.is_file():
        try:
            rows = json.loads(path.read_text())
        except ValueError as e:
            raise LapeHubError(f"{path}: not valid JSON ({e})") from None
        out += [_evaluation(r, path) for r in (rows if isinstance(rows, list) else [rows])]
    return out


def _evaluation(row: Any, where: Path) -> Evaluation:
    try:
        return Evaluation(task=str(row.get("task") or "text-generation"),
                          dataset=str(row["dataset"]), metric=str(row["metric"]),
                          value=float(row["value"]), split=row.get("split"),
                          config=row.get("config") or row.get("lang"), name=row.get("name"),
                          signature=str(row.get("signature") or ""))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise LapeHubError(f"{where}: an evaluation needs dataset, metric and value "
                           f"(got {row!r:.120})") from None


def _merged_dir(adapter_dir: Path, merged: str | Path) -> Path:
    """The merged model folder; made with the adapter module's merge when it is absent."""
    out = Path(merged)
    if out.is_dir() and any(out.iterdir()):
        return out
    try:
        from lape_hub import sparse_adapter
    except ImportError:
        sparse_adapter = None  # type: ignore[assignment]
    merge = getattr(sparse_adapter, "merge_adapter", None) if sparse_adapter else None
    if merge is None:
        raise LapeHubError(f"no merged model in {out}: make it with `lape-hub merge "
                           f"{adapter_dir} -o {out}`")
    merge(adapter_dir, out)
    return out


def adapter_files(adapter_dir: Path, merged: Path | None = None) -> dict[str, LocalFile]:
    """The adapter folder's files (and the merged model's under ``merged/``) by repo path.

    Only :data:`ADAPTER_FILES` (and :data:`MERGED_FILES` or weight shards in ``merged``)
    are accepted; any other entry, a symlink, device or pipe refuses the folder, naming it.
    A merged folder inside the adapter folder is left to the ``merged`` walk.
    """
    inner = None
    if merged is not None and _inside(merged, adapter_dir):
        inner = merged.resolve().relative_to(adapter_dir.resolve()).as_posix()
    files = collect_files(adapter_dir, lambda rel: rel in ADAPTER_FILES, what="adapter folder",
                          skip=(lambda rel: rel == inner) if inner else None,
                          check=content_problem)
    files.pop("README.md", None)              # replaced by the generated model card
    if merged is not None:
        files.update(collect_files(
            merged, lambda rel: rel in MERGED_FILES or bool(_SHARD.fullmatch(rel)),
            what="merged model folder", prefix=f"{MERGED_DIR}/", check=content_problem))
    return files


def content_problem(f: LocalFile) -> str | None:
    """Why a file's bytes are not what its name says (None when they are): a ``.json``
    must parse, a ``.safetensors`` must start with a safetensors header. Catches a file
    that is really something else (a copied token, a key) under an allowed name."""
    name = f.path.rsplit("/", 1)[-1]
    if not name.endswith((".json", ".safetensors")):
        return None
    with f.open() as fh:
        if name.endswith(".json"):
            data = fh.read(_JSON_LIMIT + 1)
            if len(data) > _JSON_LIMIT:
                return "JSON file over 64 MiB"
            try:
                json.loads(data.decode("utf-8"))
            except (ValueError, UnicodeDecodeError, RecursionError):
                return "not valid JSON"
            return None
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 2 <= n <= min(size - 8, 100 << 20):
            return "not a safetensors file"
        try:
            header = json.loads(fh.read(n).decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            return "not a safetensors file"
        return None if isinstance(header, dict) else "not a safetensors file"


_JSON_LIMIT = 64 << 20


def _inside(p: Path, folder: Path) -> bool:
    try:
        p.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def plan_adapter(info: AdapterInfo, repo_id: str, remote: RemoteState, *,
                 catalog: "Catalog | None" = None, catalog_repo: str | None = None,
                 merged: Path | None = None, missing_only: bool = False, prune: bool = True,
                 message: str | None = None, license: str | None = None) -> Plan:
    """The plan to make the model repo ``repo_id`` hold the adapter (a mirror of its folder)."""
    files = adapter_files(info.path, merged)
    neuron_set = None
    if catalog is not None:
        try:
            neuron_set = catalog.neuron_set(info.model, info.lang, refset=info.refset or None,
                                            selection=info.get("selection"))
        except LapeHubError:
            neuron_set = None
    from lape_hub.evaluation.results import adapter_eval_rows

    run_id, eval_rows = adapter_eval_rows(info.path, info.model, info.lang, catalog)
    card = adapter_card(info, neuron_set=neuron_set,
                        evaluations=load_evaluations(info, catalog), catalog_repo=catalog_repo,
                        merged=merged is not None, license=license, eval_rows=eval_rows,
                        run_id=run_id, repo_id=repo_id)
    files["README.md"] = LocalFile("README.md", str(card).encode())
    changes = _diff(files, remote, managed=lambda p: p != ".gitattributes", prune=prune)
    if missing_only and any(c.status in ("unchanged", "changed") and
                            c.path.endswith(".safetensors") for c in changes):
        # the remote already holds (a version of) this adapter: leave it alone
        changes = [replace(c, status="skipped", note="the remote has this adapter")
                   if c.status in PENDING else c for c in changes]
    pending = [c for c in changes if c.status in PENDING]
    verb = "Add" if pending and all(c.status == "added" for c in pending) else "Update"
    default = f"{verb} adapter {info.model} · {info.lang} ({info.method})"
    if merged is not None:
        default += " with the merged model"
    return Plan(repo_id, "model", remote.head, remote.exists, files, changes,
                message or default, _description(changes))


def adapter_repo_id(info: AdapterInfo, hub_repo: str | None = None,
                    namespace: str | None = None) -> str:
    """``hub_repo``, else the config's ``hub_repo`` key, else ``NAMESPACE/<default name>``."""
    if hub_repo:
        return validate_repo_id(hub_repo)
    own = info.raw.get("hub_repo")
    if isinstance(own, str) and own:
        return validate_repo_id(own, source=str(info.path / ADAPTER_CONFIG))
    ns = namespace or load_settings().adapter_namespace
    if not ns:
        catalog_repo = config.configured_hub_repo()
        if catalog_repo is None:
            raise HubError(f"no repo for adapter {info.path}: pass --hub-repo ORG/NAME or "
                           "--namespace ORG")
        ns = catalog_repo.split("/")[0]
    return validate_repo_id(f"{ns}/{info.default_repo_name()}")


def publish_adapter(adapter_dir: str | Path, hub_repo: str | None = None, *,
                    namespace: str | None = None, catalog: "Catalog | str | Path | None" = None,
                    catalog_repo: str | None = None, merged: str | Path | None = None,
                    dry_run: str | Path | None = None, missing_only: bool = False,
                    prune: bool = True, private: bool | None = None, message: str | None = None,
                    token: str | None = None, license: str | None = None,
                    retries: int | None = None, backoff: float | None = None) -> PublishResult:
    """Publish an adapter folder (weights + ``lape_adapter.json``) as a model repo with a
    model card; ``merged`` adds the merged model under ``merged/`` (made with
    :func:`lape_hub.sparse_adapter.merge_adapter` when that folder does not exist yet).

    Example::

        >>> publish_adapter("runs/gemma-3-270m/npi_Deva/adapter",
        ...                 "my-org/gemma-npi-lape")                        # doctest: +SKIP
    """
    adapter_files(Path(adapter_dir))        # refuse links and stray files before reading any
    info = AdapterInfo.from_dir(adapter_dir)
    repo_id = adapter_repo_id(info, hub_repo, namespace)
    cat = _open_catalog(catalog)
    dry_run = check_stage_dir(dry_run, cat.root)
    if catalog_repo is None:
        catalog_repo = config.configured_hub_repo()
    merged_path = _merged_dir(info.path, merged) if merged is not None else None
    token = hub_token(token, required=dry_run is None)
    api = hub_api(token)
    private = load_settings().private if private is None else private

    def make_plan(remote: RemoteState) -> Plan:
        return plan_adapter(info, repo_id, remote, catalog=cat, catalog_repo=catalog_repo,
                            merged=merged_path, missing_only=missing_only, prune=prune,
                            message=message, license=license)

    with redacting(token):
        return _run(api, make_plan, repo_id, "model", token=token, dry_run=dry_run,
                    private=private, retries=retries, backoff=backoff)


def find_adapters(folder: str | Path) -> list[Path]:
    """Every adapter folder (one holding ``lape_adapter.json`` but no model ``config.json``:
    merged models carry a copy of the adapter config) under ``folder``."""
    root = Path(folder)
    if not root.is_dir():
        raise LapeHubError(f"adapters folder {root} does not exist")
    return sorted(p.parent for p in root.rglob(ADAPTER_CONFIG)
                  if not (p.parent / "config.json").exists()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def publish_missing(catalog: "Catalog | str | Path | None" = None, hub_repo: str | None = None,
                    *, adapters: str | Path | None = None, namespace: str | None = None,
                    dry_run: str | Path | None = None, token: str | None = None,
                    private: bool | None = None, retries: int | None = None,
                    backoff: float | None = None) -> list[PublishResult]:
    """What the remote lacks: the catalog's new entries, then every adapter under
    ``adapters`` whose repo lacks it. With ``dry_run``, each repo is staged in a subfolder."""
    repo_id = resolve_hub_repo(hub_repo)
    stage = check_stage_dir(dry_run, _open_catalog(catalog).root)
    results = [publish_catalog(catalog, repo_id, missing_only=True, token=token,
                               dry_run=stage / "catalog" if stage else None, private=private,
                               retries=retries, backoff=backoff)]
    if adapters is not None:
        ns = namespace or load_settings().adapter_namespace or repo_id.split("/")[0]
        for folder in find_adapters(adapters):
            info = AdapterInfo.from_dir(folder)
            target = adapter_repo_id(info, None, ns)
            results.append(publish_adapter(
                folder, target, catalog=catalog, catalog_repo=repo_id, missing_only=True,
                token=token, private=private, retries=retries, backoff=backoff,
                dry_run=stage / target.replace("/", "--") if stage else None))
    return results
