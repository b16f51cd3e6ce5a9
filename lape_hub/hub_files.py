"""Files of a Hugging Face Hub repo as lape-hub handles them: local bytes about to be
uploaded, the remote listing (size, git blob id, LFS sha256), listing and downloading.

Shared by the publisher (what changed since the remote head) and the remote catalog reader
(is a downloaded file the one the Hub lists). Both sides treat the other as hostile:

- **Upload side**: :func:`collect_files` walks a folder without following links and returns
  only the regular files an allow-list accepts; a symlink, device, pipe, socket or a file
  outside the allow-list anywhere in the folder refuses the whole folder, naming the
  entries (:class:`UnsafeFolderError`). :func:`open_regular` opens a file for upload with
  ``O_NOFOLLOW`` and checks it is still a regular file, so what was checked is what is sent.
- **Download side**: every name a server sends is checked before it becomes a local path
  (:func:`check_repo_path`, :func:`check_commit_sha`); :func:`download_remote_file`
  streams into a temp file next to the destination, stops as soon as the file passes the
  download cap (:func:`download_cap_bytes`: ``$LAPE_HUB_MAX_DOWNLOAD_MB``, else
  ``[hub] max_download_mb``, else 2048 MiB) or the size the listing gave, and moves it
  into place only when its checksum matches the listing.

    >>> local = LocalFile("a.txt", b"x")
    >>> RemoteFile("a.txt", 1, local.git_oid, None).same_as(local)
    True
    >>> check_repo_path("neurons/../x", "server")
    Traceback (most recent call last):
    ...
    lape_hub.errors.HubError: server sent an unsafe file name 'neurons/../x' (a '..' part): refused
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterable, Iterator

from lape_hub.config import ENV_CONFIG, hub_error, redact, with_retries
from lape_hub.errors import HubError, LapeHubError

if TYPE_CHECKING:
    from huggingface_hub import HfApi

__all__ = ["LocalFile", "RemoteFile", "UnsafeFolderError", "collect_files", "open_regular",
           "check_repo_path", "check_commit_sha", "download_cap_bytes", "download_remote_file",
           "list_repo_files", "show_name", "redacting", "DEFAULT_MAX_DOWNLOAD_MB",
           "ENV_MAX_DOWNLOAD"]

DEFAULT_MAX_DOWNLOAD_MB = 2048          # one catalog file; the largest today is 14 MB
ENV_MAX_DOWNLOAD = "LAPE_HUB_MAX_DOWNLOAD_MB"
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MAX_PATH = 1000


class UnsafeFolderError(LapeHubError):
    """A folder to publish holds links, special files or files lape-hub does not publish."""


def show_name(name: str, limit: int = 100) -> str:
    """A name from a folder or a server, safe to print on one line: quoted, control
    characters escaped, long names cut.

    >>> show_name("a\\nb")
    "'a\\\\nb'"
    """
    text = repr(str(name))
    return text if len(text) <= limit else text[:limit - 4] + "...'"


@contextmanager
def redacting(token: str | None) -> Iterator[None]:
    """Scrub ``token`` from the message of any lape-hub error raised inside: server-sent
    text (error messages, file names, commit ids) may repeat the credentials it was sent."""
    try:
        yield
    except LapeHubError as e:
        if token:
            e.args = tuple(redact(a, token) if isinstance(a, str) else a for a in e.args)
        raise


# -- the upload side -----------------------------------------------------------------------------
def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Open ``path`` for reading without following a final symlink and without blocking on
    a pipe; refuse anything that is not a regular file (one line naming it)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | \
        getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        kind = "a symlink" if os.path.islink(path) else e.strerror
        raise UnsafeFolderError(f"{path}: cannot open it for upload ({kind}): refused") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafeFolderError(f"{path} is not a regular file ({_kind(mode)}): refused")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "symlink"), (stat.S_ISFIFO, "fifo"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "folder")):
        if test(mode):
            return name
    return "special file"


def collect_files(root: str | os.PathLike, allowed: Callable[[str], bool], *, what: str,
                  prefix: str = "", skip: Callable[[str], bool] | None = None,
                  check: Callable[["LocalFile"], str | None] | None = None
                  ) -> dict[str, "LocalFile"]:
    """The regular files under ``root`` that ``allowed(relative posix path)`` accepts, keyed
    by ``prefix + path``; links are never followed.

    ``skip(rel)`` leaves an entry (and, for a folder, everything under it) out without
    complaint. Any symlink, device, pipe, socket, hard-linked file, file that ``allowed``
    rejects, or file whose content ``check`` finds wrong (it returns why, else None)
    refuses the whole folder with one line naming up to five of them.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "ok.json").write_text("{}")
    >>> sorted(collect_files(d, lambda p: p.endswith(".json"), what="folder"))
    ['ok.json']
    """
    root = Path(root)
    files: dict[str, LocalFile] = {}
    bad: list[tuple[str, str]] = []

    def walk(folder: Path, rel_dir: str) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            bad.append((rel_dir or ".", f"unreadable: {e.strerror}"))
            return
        for entry in entries:
            rel = f"{rel_dir}{entry.name}"
            if skip is not None and skip(rel):
                continue
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError as e:
                bad.append((rel, f"unreadable: {e.strerror}"))
                continue
            if stat.S_ISDIR(mode):
                walk(Path(entry.path), rel + "/")
            elif not stat.S_ISREG(mode):
                bad.append((rel, _kind(mode)))
            elif not allowed(rel):
                bad.append((rel, "not on the allow-list"))
            elif entry.stat(follow_symlinks=False).st_nlink > 1:
                # lape-hub writes every file afresh (temp file + rename): a second name for
                # the same bytes is a hard link to something else, e.g. a token file
                bad.append((rel, "hard link"))
            else:
                files[prefix + rel] = LocalFile(prefix + rel, Path(entry.path))

    walk(root, "")
    if check is not None:
        for rel, f in files.items():
            why = check(f)
            if why:
                bad.append((rel[len(prefix):], why))
    if bad:
        shown = ", ".join(f"{show_name(p)} ({why})" for p, why in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        n = len(bad)
        raise UnsafeFolderError(
            f"refused to publish {what} {root}: it holds {n} entr{'y' if n == 1 else 'ies'} "
            f"lape-hub does not publish: {shown}{more}; remove {'it' if n == 1 else 'them'} "
            "(links, devices and pipes are never followed or sent)")
    return files


@dataclass(frozen=True)
class LocalFile:
    """A file as it will be in the repo: its path there and its local bytes."""

    path: str
    source: Path | bytes

    @cached_property
    def data_size(self) -> int:
        if isinstance(self.source, bytes):
            return len(self.source)
        with open_regular(self.source) as f:
            return os.fstat(f.fileno()).st_size

    @cached_property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for chunk in self._chunks():
            h.update(chunk)
        return h.hexdigest()

    @cached_property
    def git_oid(self) -> str:
        """The git blob id (what the Hub lists as ``oid`` for a non-LFS file)."""
        h = hashlib.sha1(b"blob %d\0" % self.data_size)
        for chunk in self._chunks():
            h.update(chunk)
        return h.hexdigest()

    def _chunks(self) -> Iterable[bytes]:
        if isinstance(self.source, bytes):
            yield self.source
            return
        with open_regular(self.source) as f:
            yield from iter(lambda: f.read(1 << 20), b"")

    def open(self) -> BinaryIO:
        """The bytes to upload, as a file object (a regular file opened without following
        links, or a buffer): the publisher builds every commit operation from this."""
        import io

        if isinstance(self.source, bytes):
            return io.BytesIO(self.source)
        return open_regular(self.source)


@dataclass(frozen=True)
class RemoteFile:
    """A file of the remote listing: size, git blob id, and sha256 when it is in LFS."""

    path: str
    size: int
    oid: str
    sha256: str | None

    def same_as(self, local: LocalFile) -> bool:
        if self.sha256 is not None:
            return self.size == local.data_size and self.sha256 == local.sha256
        return self.oid == local.git_oid

    def check(self, where: str) -> "RemoteFile":
        """Refuse a listing entry with an unsafe path or malformed size/checksums."""
        check_repo_path(self.path, where)
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise HubError(f"{where} lists {show_name(self.path)} with a bad size "
                           f"{show_name(str(self.size), 40)}: refused")
        if not isinstance(self.oid, str) or not _SHA1.fullmatch(self.oid):
            raise HubError(f"{where} lists {show_name(self.path)} with a bad git oid: refused")
        if self.sha256 is not None and (not isinstance(self.sha256, str)
                                        or not _SHA256.fullmatch(self.sha256)):
            raise HubError(f"{where} lists {show_name(self.path)} with a bad sha256: refused")
        return self


# -- names from a server ---------------------------------------------------------------------
def check_repo_path(path: object, where: str) -> str:
    """A file path a server sent, safe to join under a local folder: relative, ``/``-
    separated, no ``..``/``.``/empty part, no backslash, colon or control character."""
    def refuse(why: str) -> HubError:
        return HubError(f"{where} sent an unsafe file name {show_name(str(path))} ({why}): "
                        "refused")

    if not isinstance(path, str) or not path:
        raise refuse("empty or not a string")
    if len(path) > _MAX_PATH:
        raise refuse("too long")
    if path.startswith("/"):
        raise refuse("an absolute path")
    if "\\" in path:
        raise refuse("a backslash")
    if ":" in path:
        raise refuse("a colon")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise refuse("a control character")
    parts = path.split("/")
    if ".." in parts:
        raise refuse("a '..' part")
    if any(p in ("", ".") for p in parts):
        raise refuse("an empty or '.' part")
    return path


def check_commit_sha(sha: object, where: str) -> str:
    """A commit id a server (or the cache) gave: exactly 40 lowercase hex digits."""
    if not isinstance(sha, str) or not _SHA1.fullmatch(sha):
        raise HubError(f"{where} gave a malformed commit id {show_name(str(sha), 60)} (not 40 "
                       "hex digits): refused")
    return sha


def download_cap_bytes() -> int:
    """The most bytes one downloaded file may have: ``$LAPE_HUB_MAX_DOWNLOAD_MB``, else the
    config file's ``[hub] max_download_mb``, else :data:`DEFAULT_MAX_DOWNLOAD_MB` (MiB)."""
    env = os.environ.get(ENV_MAX_DOWNLOAD)
    if env:
        try:
            mb = float(env)
        except ValueError:
            mb = -1.0
        if not 0 < mb < float("inf"):
            raise HubError(f"${ENV_MAX_DOWNLOAD} must be a positive number of MiB, not "
                           f"{show_name(env, 40)}")
    else:
        from lape_hub.config import load_settings

        mb = load_settings().max_download_mb or DEFAULT_MAX_DOWNLOAD_MB
    return int(mb * 2 ** 20)


def _cap_hint() -> str:
    return f"raise it with ${ENV_MAX_DOWNLOAD} or [hub] max_download_mb in the config file " \
           f"(${ENV_CONFIG})"


# -- listing and downloading -----------------------------------------------------------------
def list_repo_files(api: "HfApi", repo_id: str, repo_type: str, revision: str, *,
                    token: str | None) -> dict[str, RemoteFile]:
    """Every file of the repo at ``revision`` (a commit sha), keyed by path; a listing with
    an unsafe name or malformed checksum is refused."""
    try:
        items = with_retries(lambda: list(api.list_repo_tree(repo_id, repo_type=repo_type,
                                                             revision=revision, recursive=True)))
    except Exception as e:
        raise hub_error(e, repo_id=repo_id, repo_type=repo_type, action="listing",
                        token=token) from None
    where = f"{repo_type} repo {repo_id}"
    out: dict[str, RemoteFile] = {}
    try:
        for item in items:
            if not hasattr(item, "blob_id"):
                check_repo_path(item.path, where)          # folders are names too
                continue
            lfs = getattr(item, "lfs", None)
            f = RemoteFile(item.path, item.size, item.blob_id, lfs.sha256 if lfs else None)
            out[f.path] = f.check(where)
    except HubError as e:
        raise HubError(redact(str(e), token)) from None
    return out


def _safe_dest(dest: Path, path: str, where: str) -> Path:
    """``dest / path``, refusing a path whose existing folders under ``dest`` are links
    (a planted symlink would carry the write outside the cache)."""
    check_repo_path(path, where)
    target = dest.joinpath(*path.split("/"))
    cur = dest
    for part in path.split("/")[:-1]:
        cur = cur / part
        if os.path.islink(cur) or (os.path.lexists(cur) and not cur.is_dir()):
            raise HubError(f"{cur} is a link or not a folder: refusing to download "
                           f"{show_name(path)} through it")
    if os.path.islink(target):
        target.unlink()                   # never write through a link; the download replaces it
    return target


def download_remote_file(api: "HfApi", repo_id: str, repo_type: str, path: str, revision: str,
                         dest: Path, *, token: str | None, expected: RemoteFile | None = None,
                         max_bytes: int | None = None) -> Path:
    """One file of the repo at ``revision`` (a commit sha) into the folder ``dest``.

    The bytes stream into a temp file next to ``dest/path``; the download stops as soon as
    it passes ``max_bytes`` (default :func:`download_cap_bytes`) or ``expected.size``, and
    the file is moved into place only when it matches ``expected`` (size and sha256 or git
    blob id). A failure leaves nothing at ``dest/path``.
    """
    from huggingface_hub import hf_hub_url

    from lape_hub.atomic import atomic_path

    where = f"{repo_type} repo {repo_id}"
    check_commit_sha(revision, where)
    target = _safe_dest(dest, path, where)
    cap = download_cap_bytes() if max_bytes is None else max_bytes
    shown = show_name(path)
    if expected is not None and expected.size > cap:
        raise HubError(f"{shown} in {where} is {expected.size / 2**20:.1f} MiB, over the "
                       f"download cap of {cap / 2**20:.1f} MiB: not downloaded; {_cap_hint()}")
    limit = cap if expected is None else min(cap, expected.size)
    url = hf_hub_url(repo_id, path, repo_type=repo_type, revision=revision,
                     endpoint=api.endpoint)

    def fetch_into(tmp: Path) -> tuple[int, str, str | None]:
        """Stream into ``tmp`` (from the start on every retry): (bytes, sha256, git blob id)."""
        sha256 = hashlib.sha256()
        blob = hashlib.sha1(b"blob %d\0" % expected.size) if expected is not None else None
        n = 0
        with open(tmp, "wb") as out, _stream(url, token) as chunks:
            for chunk in chunks:
                n += len(chunk)
                if n > limit:
                    if n > cap:
                        raise HubError(f"{shown} from {where} is larger than the download cap "
                                       f"of {cap / 2**20:.1f} MiB: stopped, nothing kept; "
                                       f"{_cap_hint()}")
                    raise HubError(f"{shown} from {where} is larger than the {limit} bytes its "
                                   "listing gives: stopped, nothing kept")
                sha256.update(chunk)
                if blob is not None:
                    blob.update(chunk)
                out.write(chunk)
        return n, sha256.hexdigest(), blob.hexdigest() if blob is not None else None

    try:
        with atomic_path(target, fsync=False) as tmp:
            n, sha256, oid = with_retries(lambda: fetch_into(tmp))
            if expected is not None:
                ok = n == expected.size and (sha256 == expected.sha256
                                             if expected.sha256 is not None
                                             else oid == expected.oid)
                if not ok:
                    raise HubError(f"{shown} from {where}@{revision[:12]} does not match the "
                                   "checksum the Hub lists: not kept, try again")
    except HubError as e:
        raise HubError(redact(str(e), token)) from None
    except Exception as e:
        raise hub_error(e, repo_id=repo_id, repo_type=repo_type,
                        action=f"downloading {shown} from", token=token) from None
    return target


class _stream:
    """GET ``url`` with the Hub's headers; yields the body in chunks (httpx or requests)."""

    def __init__(self, url: str, token: str | None):
        from huggingface_hub.utils import build_hf_headers, get_session

        self.url, self.session = url, get_session()
        self.headers = build_hf_headers(token=token if token else False,
                                        library_name="lape-hub")
        self.response = None

    def __enter__(self) -> Iterable[bytes]:
        from huggingface_hub import constants
        from huggingface_hub.utils import hf_raise_for_status

        timeout = getattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 10)
        if hasattr(self.session, "stream"):                     # httpx (huggingface_hub >= 1)
            self._cm = self.session.stream("GET", self.url, headers=self.headers,
                                           follow_redirects=True, timeout=timeout)
            self.response = self._cm.__enter__()
            try:
                if self.response.status_code >= 400:
                    self.response.read()
                hf_raise_for_status(self.response)
            except BaseException:   # `with` calls no __exit__ when __enter__ raises: close here
                self.__exit__(*sys.exc_info())
                raise
            return self.response.iter_bytes(1 << 20)
        self._cm = None                                          # requests (huggingface_hub 0.x)
        self.response = self.session.get(self.url, headers=self.headers, stream=True,
                                         timeout=timeout, allow_redirects=True)
        try:
            hf_raise_for_status(self.response)
        except BaseException:
            self.response.close()
            raise
        return self.response.iter_content(1 << 20)

    def __exit__(self, *exc: object) -> None:
        if self._cm is not None:
            self._cm.__exit__(*exc)
        elif self.response is not None:
            self.response.close()
