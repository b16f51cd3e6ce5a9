"""Files of a Hugging Face Hub repo as lape-hub compares them: local bytes about to be
uploaded, the remote listing (size, git blob id, LFS sha256), listing and downloading.

Shared by the publisher (what changed since the remote head) and the remote catalog reader
(is a downloaded file the one the Hub lists).

    >>> local = LocalFile("a.txt", b"x")
    >>> RemoteFile("a.txt", 1, local.git_oid, None).same_as(local)
    True
"""
from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from lape_hub.config import hub_error, with_retries

if TYPE_CHECKING:
    from huggingface_hub import HfApi

__all__ = ["LocalFile", "RemoteFile", "download_remote_file", "list_repo_files"]


@dataclass(frozen=True)
class LocalFile:
    """A file as it will be in the repo: its path there and its local bytes."""

    path: str
    source: Path | bytes

    @cached_property
    def data_size(self) -> int:
        return len(self.source) if isinstance(self.source, bytes) else self.source.stat().st_size

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
        with open(self.source, "rb") as f:
            yield from iter(lambda: f.read(1 << 20), b"")

    def write_to(self, root: Path) -> None:
        dest = root / self.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(self.source, bytes):
            dest.write_bytes(self.source)
        else:
            shutil.copyfile(self.source, dest)


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


def list_repo_files(api: "HfApi", repo_id: str, repo_type: str, revision: str, *,
                    token: str | None) -> dict[str, RemoteFile]:
    """Every file of the repo at ``revision`` (a commit sha), keyed by path."""
    try:
        items = with_retries(lambda: list(api.list_repo_tree(repo_id, repo_type=repo_type,
                                                             revision=revision, recursive=True)))
    except Exception as e:
        raise hub_error(e, repo_id=repo_id, repo_type=repo_type, action="listing",
                        token=token) from None
    return {item.path: RemoteFile(item.path, item.size, item.blob_id,
                                  item.lfs.sha256 if item.lfs else None)
            for item in items if hasattr(item, "blob_id")}


def download_remote_file(api: "HfApi", repo_id: str, repo_type: str, path: str, revision: str,
                         dest: Path, *, token: str | None) -> Path:
    """One file of the repo at ``revision`` into the folder ``dest``."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, path, repo_type=repo_type, revision=revision,
                                    local_dir=dest, endpoint=api.endpoint,
                                    token=token if token else False))
    except Exception as e:
        raise hub_error(e, repo_id=repo_id, repo_type=repo_type,
                        action=f"downloading {path} from", token=token) from None
