"""A fake Hugging Face Hub on 127.0.0.1, speaking the part of the Hub API that
huggingface_hub 2.4's ``HfApi``/``hf_hub_download`` use to publish and fetch files.

It lets the tests drive the *real* client end to end over HTTP, with no network beyond
the loopback interface. Start it with :class:`FakeHub` (a context manager) and point the
client at ``hub.url`` (``HF_ENDPOINT``, ``HfApi(endpoint=...)``)::

    >>> with FakeHub(tokens={"hf_alice": "alice"}) as hub:          # doctest: +SKIP
    ...     api = HfApi(endpoint=hub.url, token="hf_alice")
    ...     api.create_repo("alice/cat", repo_type="dataset")

What is implemented (in-memory, one process, thread-safe under one lock):

* ``GET /api/whoami-v2``; ``POST /api/repos/create`` (an initial commit with a
  ``.gitattributes``, like the Hub; 409 when the repo exists); ``POST /api/validate-yaml``
  (parses the card's YAML block; 400 when it is not a mapping).
* ``GET /api/{models,datasets}/{repo}[/revision/{rev}]``: id, sha, private, siblings.
* ``POST /api/{type}s/{repo}/preupload/{rev}``: ``lfs`` for binary files and the usual LFS
  extensions (``.parquet``, ``.safetensors``, ...) unless the hub was made with
  ``upload_mode="regular"``, in which case every file goes inline (base64 in the commit);
  ``oid`` of the file already at that revision, so the client skips unchanged files.
* LFS *basic* transfer: ``POST /{prefix}{repo}.git/info/lfs/objects/batch`` (``actions``
  omitted for objects already stored), ``PUT /lfs-upload/{oid}?sig=...`` (checks the
  signature and the sha256 of the body; chunked bodies are decoded) and the ``verify`` step.
* ``POST /api/{type}s/{repo}/commit/{rev}``: NDJSON header/file/lfsFile/deletedFile/
  deletedFolder lines; ``parentCommit`` must be the branch head (or a prefix of it), else
  **412**; unknown LFS objects are refused (422). A commit is all or nothing.
* ``GET /api/{type}s/{repo}/tree/{rev}[/{path}]``: ``recursive``, cursor pagination with a
  ``Link: <...>; rel="next"`` header (``page_size`` is small in tests), ``lfs`` info
  (sha256 ``oid``, size, pointer size) for LFS files, git blob ``oid`` for every file.
* ``HEAD``/``GET /{prefix}{repo}/resolve/{rev}/{path}``: ``X-Repo-Commit``, ``ETag`` (git
  blob sha1, or the sha256 for LFS files, with ``X-Linked-Etag``/``X-Linked-Size``),
  ``Content-Length``; ``Range: bytes=N-`` answers 206.
* Auth like the Hub: a token the hub does not know gets **401** ``Invalid credentials in
  Authorization header`` on every route; a missing or private repo gets **401**
  (``RepoNotFound``) without a token and **404** with one; writing to a namespace the user
  is not in (or creating a repo there) gets **403**.
* Fault injection for the tests: :meth:`FakeHub.fail` (answer N times with a status,
  optionally after applying a commit, as when a response is lost) and
  :attr:`FakeHub.before_commit` (a hook that runs inside the commit handler, used to land a
  concurrent commit between a client's plan and its commit).
* A hostile or careless server for the attack tests: :attr:`FakeHub.echo` puts the
  ``Authorization`` header it received into every error message (as a badly written proxy
  would), so a client that prints server messages unredacted leaks its token;
  :attr:`FakeHub.info_hook`, :attr:`FakeHub.tree_hook` and :attr:`FakeHub.resolve_hook`
  rewrite the repo info, the tree listing and the bytes served for a file.
* Everything received is kept: :attr:`FakeHub.received` (request line, headers and body of
  every request) and :meth:`FakeHub.received_bytes` (those plus the base64 file contents
  and samples inside commit and preupload payloads, decoded), so a test can prove that some
  bytes never reached the server.

What is *not* implemented: Xet storage (the tests set ``HF_HUB_DISABLE_XET``; with Xet the
client would ask ``/xet-write-token`` and upload to a CAS server), LFS multipart transfers,
redirects of LFS downloads to a CDN, pull requests (``create_pr``), branches other than
``main`` and tags, ``paths-info``, commit listing, copies, repo deletion/settings, gated
repos, rate limits, and ``.gitignore`` handling (``shouldIgnore`` is always false).
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_EXTENSIONS = (".parquet", ".safetensors", ".bin", ".pt", ".pth", ".arrow", ".gguf", ".npy",
                  ".zst", ".gz")
GITATTRIBUTES = "".join(f"*{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in LFS_EXTENSIONS)
REPO_TYPES = {"models": "model", "datasets": "dataset"}
PREFIX = {"model": "", "dataset": "datasets/"}


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob (what the Hub calls a regular file's ``oid``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\n"
            f"size {size}\n").encode()


@dataclass(frozen=True)
class Blob:
    """One file of a commit: its bytes and whether it is stored in LFS."""

    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def oid(self) -> str:
        """The git blob id: of the content, or of the LFS pointer for LFS files."""
        if self.lfs:
            return git_blob_oid(lfs_pointer(self.sha256, len(self.data)))
        return git_blob_oid(self.data)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else git_blob_oid(self.data)


@dataclass
class Commit:
    oid: str
    parent: str | None
    summary: str
    description: str
    files: dict[str, Blob]
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)
    head: str = ""

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/", 1)[0]

    def commit(self, rev: str) -> Commit | None:
        """The commit for a branch name (only ``main``) or a commit id (or a prefix of one)."""
        if rev == "main":
            rev = self.head
        if len(rev) < 7:
            return None
        for c in self.commits:
            if c.oid.startswith(rev):
                return c
        return None


@dataclass
class Fault:
    method: str
    pattern: re.Pattern
    status: int
    times: int
    after_apply: bool


class HttpError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = headers or {}


class FakeHub:
    """The fake Hub: users by token, organizations, repos and their commits, the LFS store.

    Args:
        tokens: token -> user name. A request with any other token gets 401.
        orgs: user name -> organizations the user can write to.
        upload_mode: ``"auto"`` (binary and LFS-extension files go through LFS) or
            ``"regular"`` (every file inline in the commit).
        page_size: entries per page of a tree listing.
    """

    def __init__(self, tokens: dict[str, str] | None = None,
                 orgs: dict[str, list[str]] | None = None, *, upload_mode: str = "auto",
                 page_size: int = 1000):
        self.tokens = dict(tokens or {})
        self.orgs = {u: set(o) for u, o in (orgs or {}).items()}
        self.upload_mode = upload_mode
        self.page_size = page_size
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_store: dict[str, bytes] = {}
        self.lfs_signatures: dict[str, str] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.faults: list[Fault] = []
        self.before_commit: Callable[[Repo], None] | None = None
        self.echo = False
        self.received: list[bytes] = []
        self.info_hook: Callable[[dict], dict] | None = None
        self.tree_hook: Callable[[list[dict]], list[dict]] | None = None
        self.resolve_hook: Callable[[str, bytes], bytes] | None = None
        self.lock = threading.RLock()
        self._counter = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "FakeHub is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        daemon=True,
                                        name="fake-hub")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test helpers ------------------------------------------------------------------
    def fail(self, method: str, path_regex: str, status: int, *, times: int = 1,
             after_apply: bool = False) -> None:
        """Answer the next ``times`` matching requests with ``status``.

        With ``after_apply`` (commits only) the commit is applied first and the answer is
        still an error: a response lost on the way back.
        """
        with self.lock:
            self.faults.append(Fault(method.upper(), re.compile(path_regex), status, times,
                                     after_apply))

    def add_repo(self, repo_id: str, repo_type: str = "dataset", *, private: bool = False,
                 files: dict[str, bytes] | None = None) -> Repo:
        """Create a repo directly (e.g. one owned by somebody else), optionally with files."""
        with self.lock:
            repo = Repo(repo_type, repo_id, private)
            self.repos[(repo_type, repo_id)] = repo
            self._append_commit(repo, "initial commit", "",
                                {".gitattributes": Blob(GITATTRIBUTES.encode(), False)})
            if files:
                self.push_files(repo_id, files, repo_type=repo_type)
            return repo

    def push_files(self, repo_id: str, files: dict[str, bytes | None], *,
                   repo_type: str = "dataset", message: str = "upload from elsewhere") -> str:
        """Commit ``files`` (None deletes) directly, as another client would."""
        with self.lock:
            repo = self.repos[(repo_type, repo_id)]
            tree = dict(repo.commit(repo.head).files)
            for path, data in files.items():
                if data is None:
                    tree.pop(path, None)
                else:
                    tree[path] = Blob(data, self._is_lfs(path, data[:512]))
            return self._append_commit(repo, message, "", tree).oid

    def received_bytes(self) -> bytes:
        """Every byte received, plus the decoded base64 ``content``/``sample`` fields of
        JSON and NDJSON bodies (inline commit files, preupload samples)."""
        out = list(self.received)
        for raw in self.received:
            body = raw.split(b"\r\n\r\n", 1)[-1]
            for line in body.splitlines():
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                stack = [doc]
                while stack:
                    x = stack.pop()
                    if isinstance(x, dict):
                        for k, v in x.items():
                            if k in ("content", "sample") and isinstance(v, str):
                                try:
                                    out.append(base64.b64decode(v))
                                except ValueError:
                                    pass
                            else:
                                stack.append(v)
                    elif isinstance(x, list):
                        stack.extend(x)
        return b"\n".join(out)

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, repo_type: str = "dataset",
              rev: str = "main") -> dict[str, bytes]:
        """The files of a repo at ``rev`` as {path: bytes}."""
        with self.lock:
            commit = self.repos[(repo_type, repo_id)].commit(rev)
            assert commit is not None
            return {p: b.data for p, b in commit.files.items()}

    # -- internals -----------------------------------------------------------------------
    def _append_commit(self, repo: Repo, summary: str, description: str,
                       files: dict[str, Blob]) -> Commit:
        self._counter += 1
        parent = repo.head or None
        seed = f"{repo.repo_id}|{parent}|{summary}|{self._counter}"
        oid = hashlib.sha1(seed.encode()).hexdigest()
        commit = Commit(oid, parent, summary, description, files,
                        datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"))
        repo.commits.append(commit)
        repo.head = oid
        return commit

    def _is_lfs(self, path: str, sample: bytes) -> bool:
        if self.upload_mode == "regular":
            return False
        return path.endswith(LFS_EXTENSIONS) or b"\0" in sample

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and fault.pattern.search(path):
                    fault.times -= 1
                    return fault
        return None


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-response (e.g. one stopping a download at its size cap)
    is not an error of the fake hub: no traceback on stderr for it."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True        # headers and body go out at once: no 40 ms stalls

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep tests quiet
        pass

    # -- plumbing --------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(doc).encode(), headers)

    def _error(self, err: HttpError) -> None:
        headers = dict(err.headers)
        if self.fake.echo:     # a careless server: it repeats the credentials it was sent
            err.message += f" (request had Authorization: {self.headers.get('Authorization')})"
        headers["X-Error-Message"] = err.message
        if err.code:
            headers["X-Error-Code"] = err.code
        self._json(err.status, {"error": err.message}, headers)

    def _dispatch(self) -> None:
        self.close_connection = False
        split = urlsplit(self.path)
        path, query = unquote(split.path), parse_qs(split.query)
        raw_path = split.path
        self.fake.requests.append((self.command, path, dict(self.headers)))
        body = self._body() if self.command in ("POST", "PUT") else b""
        with self.fake.lock:
            self.fake.received.append(self.requestline.encode("latin-1") + b"\r\n"
                                      + bytes(self.headers) + b"\r\n" + body)
        fault = self.fake._take_fault(self.command, path)
        try:
            if fault is not None and not fault.after_apply:
                raise HttpError(fault.status, f"injected {fault.status}")
            user = self._user()
            self._route(path, raw_path, query, body, user, fault)
        except HttpError as err:
            self._error(err)
        except Exception as err:  # a bug in the fake: make it visible as a 500
            self._json(500, {"error": f"fake hub crashed: {type(err).__name__}: {err}"})

    do_GET = do_HEAD = do_POST = do_PUT = _dispatch

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization")
        if not auth:
            return None
        token = auth.split(" ", 1)[1] if " " in auth else auth
        user = self.fake.tokens.get(token)
        if user is None:
            raise HttpError(401, "Invalid credentials in Authorization header")
        return user

    # -- access ---------------------------------------------------------------------------
    def _can_write(self, user: str | None, namespace: str) -> bool:
        return user is not None and (user == namespace
                                     or namespace in self.fake.orgs.get(user, set()))

    def _repo(self, repo_type: str, repo_id: str, user: str | None, *, write: bool = False) -> Repo:
        repo = self.fake.repos.get((repo_type, repo_id))
        visible = repo is not None and (not repo.private or self._can_write(user, repo.namespace))
        if not visible:
            if user is None:
                raise HttpError(401, "Repository not found", "RepoNotFound")
            raise HttpError(404, "Repository not found", "RepoNotFound")
        assert repo is not None
        if write:
            if user is None:
                raise HttpError(401, "You must be authenticated to write to this repo")
            if not self._can_write(user, repo.namespace):
                raise HttpError(403, "You don't have the rights to write to "
                                     f"{repo_type}s/{repo_id}")
        return repo

    def _commit_or_404(self, repo: Repo, rev: str) -> Commit:
        commit = repo.commit(rev)
        if commit is None:
            raise HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    # -- routes ---------------------------------------------------------------------------
    def _route(self, path: str, raw_path: str, query: dict[str, list[str]], body: bytes,
               user: str | None, fault: Fault | None) -> None:
        m, c = self.command, None
        if path == "/api/whoami-v2" and m == "GET":
            return self._whoami(user)
        if path == "/api/repos/create" and m == "POST":
            return self._create_repo(json.loads(body), user)
        if path == "/api/validate-yaml" and m == "POST":
            return self._validate_yaml(json.loads(body))
        if path.startswith("/lfs-upload/") and m == "PUT":
            return self._lfs_put(path.rsplit("/", 1)[1], query, body)
        if path == "/lfs-verify" and m == "POST":
            doc = json.loads(body)
            ok = self.fake.lfs_store.get(doc["oid"]) is not None
            return self._json(200 if ok else 404, {"ok": ok})
        if (c := re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)(?:/revision/(.+))?", path)) \
                and m == "GET":
            return self._info(REPO_TYPES[c[1]], c[2], c[3] or "main", user)
        if (c := re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)/preupload/([^/]+)", path)) \
                and m == "POST":
            return self._preupload(REPO_TYPES[c[1]], c[2], c[3], json.loads(body), user)
        if (c := re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)/commit/([^/]+)", path)) \
                and m == "POST":
            return self._commit(REPO_TYPES[c[1]], c[2], c[3], body, user, fault)
        rc = re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", raw_path)
        if rc and m == "GET":
            sub = unquote(rc[4] or "").strip("/")
            return self._tree(REPO_TYPES[rc[1]], unquote(rc[2]), unquote(rc[3]), sub, query,
                              user, raw_path)
        if (c := re.fullmatch(r"/(datasets/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch", path)) \
                and m == "POST":
            return self._lfs_batch("dataset" if c[1] else "model", c[2], json.loads(body), user)
        rr = re.fullmatch(r"/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", raw_path)
        if rr and m in ("GET", "HEAD"):
            return self._resolve("dataset" if rr[1] else "model", unquote(rr[2]),
                                 unquote(rr[3]), unquote(rr[4]), user)
        raise HttpError(404, f"fake hub: no route for {m} {path}")

    def _whoami(self, user: str | None) -> None:
        if user is None:
            raise HttpError(401, "Invalid credentials in Authorization header")
        self._json(200, {"type": "user", "name": user, "fullname": user.title(),
                         "orgs": [{"name": o, "type": "org"}
                                  for o in sorted(self.fake.orgs.get(user, set()))],
                         "auth": {"type": "access_token",
                                  "accessToken": {"displayName": "test", "role": "write"}}})

    def _create_repo(self, doc: dict, user: str | None) -> None:
        if user is None:
            raise HttpError(401, "You must be authenticated to create a repo")
        namespace = doc.get("organization") or user
        repo_type = doc.get("type") or "model"
        repo_id = f"{namespace}/{doc['name']}"
        with self.fake.lock:
            if not self._can_write(user, namespace):
                raise HttpError(403, f"You don't have the rights to create a {repo_type} under "
                                     f"the namespace \"{namespace}\"")
            if (repo_type, repo_id) in self.fake.repos:
                raise HttpError(409, "You already created this repo")
            self.fake.add_repo(repo_id, repo_type, private=doc.get("visibility") == "private"
                               or bool(doc.get("private")))
        self._json(200, {"url": f"{self.fake.url}/{PREFIX[repo_type]}{repo_id}", "name": repo_id})

    def _validate_yaml(self, doc: dict) -> None:
        import yaml

        m = re.match(r"^\s*---\r?\n([\s\S]*?)\r?\n---", doc.get("content", ""))
        data = yaml.safe_load(m[1]) if m else {}
        if data is not None and not isinstance(data, dict):
            return self._json(400, {"errors": [{"message": "metadata is not a mapping"}]})
        self._json(200, {"errors": [], "warnings": []})

    def _info(self, repo_type: str, repo_id: str, rev: str, user: str | None) -> None:
        with self.fake.lock:
            repo = self._repo(repo_type, repo_id, user)
            commit = self._commit_or_404(repo, rev)
            doc = {"id": repo_id, "author": repo.namespace, "sha": commit.oid,
                   "private": repo.private, "lastModified": commit.date,
                   "siblings": [{"rfilename": p} for p in sorted(commit.files)]}
        if self.fake.info_hook is not None:
            doc = self.fake.info_hook(doc)
        self._json(200, doc)

    def _preupload(self, repo_type: str, repo_id: str, rev: str, doc: dict,
                   user: str | None) -> None:
        with self.fake.lock:
            repo = self._repo(repo_type, repo_id, user, write=True)
            commit = self._commit_or_404(repo, rev)
            out = []
            for f in doc["files"]:
                lfs = self.fake._is_lfs(f["path"], base64.b64decode(f["sample"]))
                existing = commit.files.get(f["path"])
                oid = None
                if existing is not None:
                    oid = existing.sha256 if existing.lfs else git_blob_oid(existing.data)
                out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                            "shouldIgnore": False, "oid": oid})
        self._json(200, {"files": out, "commitOid": commit.oid})

    def _lfs_batch(self, repo_type: str, repo_id: str, doc: dict, user: str | None) -> None:
        with self.fake.lock:
            self._repo(repo_type, repo_id, user, write=True)
            objects = []
            for obj in doc["objects"]:
                entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"],
                                         "authenticated": True}
                if obj["oid"] not in self.fake.lfs_store:
                    sig = secrets.token_hex(8)
                    self.fake.lfs_signatures[obj["oid"]] = sig
                    entry["actions"] = {
                        "upload": {"href": f"{self.fake.url}/lfs-upload/{obj['oid']}?sig={sig}",
                                   "header": {}},
                        "verify": {"href": f"{self.fake.url}/lfs-verify", "header": {}},
                    }
                objects.append(entry)
        self._json(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_put(self, oid: str, query: dict[str, list[str]], body: bytes) -> None:
        with self.fake.lock:
            if query.get("sig", [""])[0] != self.fake.lfs_signatures.get(oid):
                raise HttpError(403, "bad upload signature")
            if hashlib.sha256(body).hexdigest() != oid:
                raise HttpError(400, "sha256 of the body does not match the object id")
            self.fake.lfs_store[oid] = body
        self._send(200, b"", content_type="text/plain")

    def _commit(self, repo_type: str, repo_id: str, rev: str, body: bytes, user: str | None,
                fault: Fault | None) -> None:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HttpError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        with self.fake.lock:
            repo = self._repo(repo_type, repo_id, user, write=True)
            if self.fake.before_commit is not None:
                self.fake.before_commit(repo)
            head = self._commit_or_404(repo, rev)
            parent = header.get("parentCommit")
            if parent is not None and not head.oid.startswith(parent):
                raise HttpError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(head.files)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    data = base64.b64decode(value["content"])
                    tree[value["path"]] = Blob(data, False)
                elif key == "lfsFile":
                    data = self.fake.lfs_store.get(value["oid"])
                    if data is None:
                        raise HttpError(422, f"LFS object {value['oid']} was never uploaded")
                    tree[value["path"]] = Blob(data, True)
                elif key == "deletedFile":
                    if value["path"] not in tree:
                        raise HttpError(404, "A file with this name doesn't exist",
                                        "EntryNotFound")
                    del tree[value["path"]]
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    tree = {p: b for p, b in tree.items() if not p.startswith(prefix)}
                else:
                    raise HttpError(400, f"unknown commit operation {key!r}")
            commit = self.fake._append_commit(repo, header["summary"],
                                              header.get("description", ""), tree)
        if fault is not None and fault.after_apply:
            raise HttpError(fault.status, f"injected {fault.status} after the commit landed")
        url = f"{self.fake.url}/{PREFIX[repo_type]}{repo_id}/commit/{commit.oid}"
        self._json(200, {"success": True, "commitOid": commit.oid, "commitUrl": url,
                         "pullRequestUrl": None})

    def _tree(self, repo_type: str, repo_id: str, rev: str, sub: str,
              query: dict[str, list[str]], user: str | None, raw_path: str) -> None:
        with self.fake.lock:
            repo = self._repo(repo_type, repo_id, user)
            commit = self._commit_or_404(repo, rev)
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            prefix = f"{sub}/" if sub else ""
            files = {p: b for p, b in commit.files.items() if p.startswith(prefix)}
            if sub and not files:
                raise HttpError(404, f"{sub} does not exist on {rev}", "EntryNotFound")
            entries: dict[str, dict] = {}
            for p, blob in sorted(files.items()):
                rest = p[len(prefix):].split("/")
                for depth in range(1, len(rest)):
                    d = prefix + "/".join(rest[:depth])
                    if recursive or depth == 1:
                        entries.setdefault(d, {"type": "directory", "path": d, "size": 0,
                                               "oid": hashlib.sha1(d.encode()).hexdigest()})
                if recursive or len(rest) == 1:
                    e: dict[str, Any] = {"type": "file", "path": p, "size": len(blob.data),
                                         "oid": blob.oid}
                    if blob.lfs:
                        e["lfs"] = {"oid": blob.sha256, "size": len(blob.data),
                                    "pointerSize": len(lfs_pointer(blob.sha256, len(blob.data)))}
                    entries[p] = e
        listing = [entries[k] for k in sorted(entries)]
        if self.fake.tree_hook is not None:
            listing = self.fake.tree_hook(listing)
        start = int(query.get("cursor", ["0"])[0])
        page = listing[start:start + self.fake.page_size]
        headers = {}
        if start + self.fake.page_size < len(listing):
            nxt = (f"{self.fake.url}{raw_path}?recursive={str(recursive).lower()}"
                   f"&cursor={start + self.fake.page_size}")
            headers["Link"] = f'<{nxt}>; rel="next"'
        self._json(200, page, headers)

    def _resolve(self, repo_type: str, repo_id: str, rev: str, path: str,
                 user: str | None) -> None:
        with self.fake.lock:
            repo = self._repo(repo_type, repo_id, user)
            commit = self._commit_or_404(repo, rev)
            blob = commit.files.get(path)
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if blob is None:
            raise HttpError(404, "Entry not found", "EntryNotFound", headers)
        headers["ETag"] = f'"{blob.etag}"'
        if blob.lfs:
            headers["X-Linked-Etag"] = f'"{blob.sha256}"'
            headers["X-Linked-Size"] = str(len(blob.data))
        data, status = blob.data, 200
        if self.fake.resolve_hook is not None:
            data = self.fake.resolve_hook(path, data)
        rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if rng and self.command == "GET":
            start = int(rng[1])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            data, status = data[start:], 206
        self._send(status, data, headers, content_type="application/octet-stream")


def repo_url(hub: FakeHub, repo_id: str, repo_type: str = "dataset") -> str:
    """The web address of a repo on the fake hub."""
    return f"{hub.url}/{PREFIX[repo_type]}{quote(repo_id)}"


# -- pytest fixtures and tiny catalogs (shared by test_publisher.py and test_remote.py) --------
ALICE = "hf_alice_SECRET_token_0123456789"   # writes to alice/* and lape-org/*
BOB = "hf_bob_token_9876543210"              # writes to bob/*
SELECTION = "top0.05-f0.95-b0.95"

try:
    import pytest
except ImportError:  # pragma: no cover - the module also works as a plain library
    pytest = None  # type: ignore[assignment]

if pytest is not None:
    @pytest.fixture
    def hub(monkeypatch, tmp_path):
        """A started FakeHub; the client pointed at it (HF_ENDPOINT), Xet off, HF_TOKEN=alice's,
        the lape-hub cache and config in tmp_path, no saved login or offline mode."""
        from huggingface_hub import constants
        from huggingface_hub.utils import disable_progress_bars

        from lape_hub import config

        disable_progress_bars()
        monkeypatch.setattr(config, "RETRY_BACKOFF_S", 0.01)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "LAPE_HUB_REPO",
                    "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HF_TOKEN", ALICE)
        monkeypatch.setenv("LAPE_HUB_CACHE", str(tmp_path / "lape-cache"))
        monkeypatch.setenv("LAPE_HUB_CONFIG", str(tmp_path / "config.toml"))
        fake = FakeHub({ALICE: "alice", BOB: "bob"}, {"alice": ["lape-org"]}, page_size=3)
        with fake:
            monkeypatch.setenv("HF_ENDPOINT", fake.url)
            yield fake


def build_catalog(root, langs=("npi_Deva", "mlt_Latn", "afr_Latn"), *,
                  model: str = "gemma-3-270m", refset: str = "paper-12", seed: int = 0,
                  counts: bool = True, per_layer: int = 3):
    """A tiny but valid catalog: one ``neurons`` entry for ``langs`` and (with ``counts``)
    one ``activation_counts`` entry per language. Rebuilding writes new ``created_at``s."""
    import numpy as np
    import pyarrow as pa

    from lape_hub.catalog import Catalog
    from lape_hub.formats import neurons_entry
    from lape_hub.neuron_set import NeuronSet
    from lape_hub.registry import resolve_model
    from lape_hub.signature import signature

    spec = resolve_model(model)
    cat = Catalog(root)
    sets = []
    for i, lang in enumerate(langs):
        rng = np.random.default_rng(seed * 1000 + sum(map(ord, lang)))
        layers = [rng.choice(spec.d_ffn, per_layer, replace=False) for _ in range(spec.n_layers)]
        sets.append(NeuronSet(spec.alias, lang, layers, d_model=spec.d_model, d_ffn=spec.d_ffn,
                              refset=refset, total_params=spec.total_params))
    sig = signature(spec.alias, "main", refset=refset, selection=SELECTION, corpus="test",
                    tokens=1000)
    cat.write("neurons", neurons_entry(sets, revision="main", selection=SELECTION, signature=sig,
                                       params={"langs": list(langs)}))
    if counts:
        from datetime import datetime, timezone

        for lang in langs:
            rng = np.random.default_rng(sum(map(ord, lang)))
            n = spec.n_layers
            cat.write("activation_counts", pa.table({
                "model": [spec.alias] * n, "revision": ["main"] * n, "corpus": ["test"] * n,
                "lang": [lang] * n, "layer": pa.array(range(n), pa.int32()),
                "n_tokens": pa.array([1000] * n, pa.int64()),
                "over_zero": pa.array([rng.integers(0, 1000, 64).tolist() for _ in range(n)],
                                      pa.list_(pa.int64())),
                "signature": [signature(spec.alias, "main", lang=lang, corpus="test",
                                        tokens=1000)] * n,
                "lape_hub_version": ["0.1.0"] * n, "params": ["{}"] * n,
                "created_at": pa.array([datetime.now(timezone.utc)] * n,
                                       pa.timestamp("us", tz="UTC")),
                "content_hash": ["x"] * n,
            }))
    return cat
