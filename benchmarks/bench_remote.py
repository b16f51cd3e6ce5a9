"""The remote catalog reader vs huggingface_hub's ``snapshot_download``, side by side.

Both fetch the same partitions of one pinned commit (a 40-hex sha) from the fake Hub of
``tests/hub_server.py`` (the real huggingface_hub client over HTTP on 127.0.0.1), into
fresh caches (cold) and again from those caches (warm):

* ``lape-hub``: :func:`lape_hub.remote.remote_catalog` as shipped (listing checked, sizes
  checked against the cap before any download, streams stopped at the cap, sha256 checked
  before a file lands and again before every use, schemas checked, cache swept);
* ``snapshot+checks``: what a replacement would have to do: the same checked listing and
  cap check first, then ``snapshot_download(repo_type="dataset", revision=sha,
  allow_patterns=[the files])`` into the standard HF cache, then the sha256 of every file
  and the schema check (huggingface_hub checks sizes only);
* ``snapshot bare``: ``snapshot_download`` alone (no lape-hub check at all), for reference.

The fake Hub answers in microseconds; ``--rtt-ms`` adds a delay to every request to model
the round trip to the real Hub. Candidates alternate each round; medians are reported.

Two behaviours are shown as well (not timed): what each path does when the server streams
more bytes than it lists, and whether a cached file changed on disk is noticed.

    python benchmarks/bench_remote.py [--files 40] [--repeats 5] [--rtt-ms 0 20]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]
os.environ["HF_HUB_DISABLE_XET"] = "1"              # the fake hub serves plain HTTP/LFS
os.environ.pop("HF_HUB_OFFLINE", None)
REPO = "bench/lape-catalog"
TOKEN = "hf_bench_token_0123456789"


def make_catalog(root: Path, n_langs: int):
    """A valid catalog: one neurons entry and one activation_counts file per language."""
    from hub_server import build_catalog

    from lape_hub.languages import all_languages

    langs = [lang.code for lang in all_languages()][:n_langs]
    return build_catalog(root, langs)


def local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def lape_hub_fetch(sha: str, cache: Path, tables: list[str]) -> Path:
    from lape_hub.remote import remote_catalog

    return remote_catalog(REPO, revision=sha, tables=tables, model="gemma-3-270m",
                          cache=cache).root


def snapshot_with_checks(sha: str, hf_cache: Path, tables: list[str], endpoint: str) -> Path:
    """The replacement candidate: checked listing + cap, snapshot_download, sha256, schemas."""
    from huggingface_hub import snapshot_download

    from lape_hub.catalog import MANIFEST, parse_entry_path
    from lape_hub.config import hub_api
    from lape_hub.errors import HubError
    from lape_hub.hub_files import LocalFile, download_cap_bytes, list_repo_files
    from lape_hub.remote import check_listing, select_files
    from lape_hub.schemas import table_schema

    record = hf_cache / f"lape-listing-{sha}.json"   # kept like lape-hub's cache record
    if record.is_file():
        raw = json.loads(record.read_text())
    else:
        raw = {p: {"size": f.size, "oid": f.oid, "sha256": f.sha256} for p, f in
               list_repo_files(hub_api(TOKEN), REPO, "dataset", sha, token=TOKEN).items()}
    listing = check_listing(raw, REPO)
    wanted = [MANIFEST] + select_files(list(listing), tables, model="gemma-3-270m")
    cap = download_cap_bytes()
    if any(listing[p].size > cap for p in wanted):
        raise HubError("over the download cap")
    root = Path(snapshot_download(REPO, repo_type="dataset", revision=sha,
                                  allow_patterns=wanted, cache_dir=hf_cache,
                                  endpoint=endpoint, token=TOKEN))
    if not record.is_file():
        record.write_text(json.dumps(raw))
    for p in wanted:
        if not listing[p].same_as(LocalFile(p, root.joinpath(*p.split("/")).resolve())):
            raise HubError(f"{p} does not match the checksum the Hub lists")
        parsed = parse_entry_path(p)
        if parsed is not None:
            table_schema(parsed[0]).check_file(root.joinpath(*p.split("/")))
    return root


def snapshot_bare(sha: str, hf_cache: Path, patterns: list[str], endpoint: str) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(REPO, repo_type="dataset", revision=sha,
                                  allow_patterns=patterns, cache_dir=hf_cache,
                                  endpoint=endpoint, token=TOKEN))


def timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def run_round(hub, sha: str, tables: list[str], patterns: list[str], work: Path,
              repeats: int) -> dict[str, dict[str, tuple[float, int]]]:
    """{candidate: {"cold"/"warm": (median seconds, HTTP requests of one call)}}."""
    candidates = {
        "lape-hub": lambda d: lape_hub_fetch(sha, d, tables),
        "snapshot+checks": lambda d: snapshot_with_checks(sha, d, tables, hub.url),
        "snapshot bare": lambda d: snapshot_bare(sha, d, patterns, hub.url),
    }
    got = {}
    for name, fetch in candidates.items():          # imports and first-call costs: untimed
        root = fetch(work / "warm-up" / name.replace(" ", "_").replace("+", "_"))
        got[name] = {p: (root / p).read_bytes() for p in patterns}
    assert all(g == got["lape-hub"] for g in got.values()), "the candidates disagree"
    times = {k: {"cold": [], "warm": []} for k in candidates}
    requests = {k: {} for k in candidates}
    for i in range(repeats):
        for name, fetch in candidates.items():
            cache = work / f"{name.replace(' ', '_').replace('+', '_')}-{i}"
            for phase in ("cold", "warm"):
                n0 = len(hub.requests)
                times[name][phase].append(timed(lambda: fetch(cache)))
                requests[name][phase] = len(hub.requests) - n0
            shutil.rmtree(cache)
    return {k: {ph: (statistics.median(v), requests[k][ph]) for ph, v in d.items()}
            for k, d in times.items()}


def oversized_stream(hub, sha: str, work: Path, extra_mb: int) -> dict[str, str]:
    """The server streams ``extra_mb`` MiB more than it lists for one file."""
    import lape_hub.hub_files as hf
    from lape_hub.errors import LapeHubError

    target = next(p for p in hub.files(REPO) if p.startswith("neurons/"))
    extra = os.urandom(extra_mb << 20)
    hub.resolve_hook = lambda path, data: data + extra if path == target else data
    out = {}
    seen: list[int] = []

    class Counting(hf._stream):
        def __enter__(self):
            chunks = super().__enter__()
            return (seen.append(len(c)) or c for c in chunks)

    real = hf._stream
    hf._stream = Counting
    try:
        lape_hub_fetch(sha, work / "over-lape", ["neurons"])
        out["lape-hub"] = "accepted (unexpected)"
    except LapeHubError as e:
        out["lape-hub"] = f"refused after reading {sum(seen) / 2**20:.1f} MiB: {e}"
    finally:
        hf._stream = real
    hf_cache = work / "over-hf"
    try:
        snapshot_bare(sha, hf_cache, [target], hub.url)
        out["snapshot_download"] = "accepted (unexpected)"
    except Exception as e:  # noqa: BLE001 - we report what huggingface_hub raises
        written = sum(p.stat().st_size for p in hf_cache.rglob("*") if p.is_file())
        first = str(e).splitlines()[0]
        out["snapshot_download"] = (f"refused after the whole body ({len(extra) / 2**20:.1f} "
                                    f"MiB extra) was received; {written / 2**20:.1f} MiB left "
                                    f"on disk: {type(e).__name__}: {first[:90]}")
    hub.resolve_hook = None
    return out


def tampered_cache(hub, sha: str, work: Path) -> dict[str, str]:
    """A cached file is changed on disk (same size); what does the next call hand out?"""
    from lape_hub.errors import LapeHubError

    target = next(p for p in hub.files(REPO) if p.startswith("neurons/"))
    good = hashlib.sha256(hub.files(REPO)[target]).hexdigest()
    out = {}
    root = lape_hub_fetch(sha, work / "tamper-lape", ["neurons"])
    f = root / target
    f.write_bytes(f.read_bytes()[:-8] + b"\0" * 8)
    try:
        root = lape_hub_fetch(sha, work / "tamper-lape", ["neurons"])
        ok = hashlib.sha256((root / target).read_bytes()).hexdigest() == good
        out["lape-hub"] = "noticed, downloaded again" if ok else "handed out the changed file"
    except LapeHubError as e:
        out["lape-hub"] = f"refused: {e}"
    root = snapshot_bare(sha, work / "tamper-hf", [target], hub.url)
    blob = (root / target).resolve()
    blob.write_bytes(blob.read_bytes()[:-8] + b"\0" * 8)
    root = snapshot_bare(sha, work / "tamper-hf", [target], hub.url)
    ok = hashlib.sha256((root / target).read_bytes()).hexdigest() == good
    out["snapshot_download"] = "the good file" if ok else \
        "handed out the changed file (no checksum check on cached files)"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=40, help="languages = activation_counts files")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rtt-ms", type=float, nargs="+", default=[0.0, 20.0])
    args = ap.parse_args()

    from huggingface_hub import constants
    from huggingface_hub.utils import disable_progress_bars

    import hub_server
    from lape_hub import config

    disable_progress_bars()
    logging.getLogger("lape_hub").setLevel(logging.ERROR)     # the tamper case warns
    constants.HF_HUB_DISABLE_XET = True
    config.RETRY_BACKOFF_S = 0.01
    work = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    os.environ.update(HF_TOKEN=TOKEN, LAPE_HUB_CACHE=str(work / "lape-cache"),
                      LAPE_HUB_CONFIG=str(work / "config.toml"),
                      HF_HUB_CACHE=str(work / "unused-hf"), HF_TOKEN_PATH=str(work / "tok"))
    cat = make_catalog(work / "local", args.files)
    files = local_files(cat.root)
    tables = ["activation_counts", "neurons"]
    patterns = sorted(p for p in files if p.endswith(".parquet") and "gemma" in p) + \
        ["CATALOG.json"]
    size = sum(len(files[p]) for p in patterns)
    delay = {"s": 0.0}
    real_dispatch = hub_server._Handler._dispatch

    def slow_dispatch(self):
        if delay["s"]:
            time.sleep(delay["s"])
        return real_dispatch(self)

    hub_server._Handler._dispatch = slow_dispatch
    hub_server._Handler.do_GET = hub_server._Handler.do_HEAD = slow_dispatch
    try:
        with hub_server.FakeHub({TOKEN: "bench"}, page_size=1000) as hub:
            os.environ["HF_ENDPOINT"] = hub.url
            hub.add_repo(REPO, files=files)
            sha = hub.repo(REPO).head
            print(f"# remote catalog fetch: {len(patterns)} files ({size / 2**20:.2f} MiB) of "
                  f"one pinned commit from a fake Hub on 127.0.0.1; medians of "
                  f"{args.repeats}")
            for rtt in args.rtt_ms:
                delay["s"] = rtt / 1000
                res = run_round(hub, sha, tables, patterns, work, args.repeats)
                print(f"\n## added round trip per request: {rtt:g} ms")
                for name, d in res.items():
                    print(f"  {name:<16} cold {d['cold'][0] * 1000:8.1f} ms "
                          f"({d['cold'][1]:3d} requests)   warm {d['warm'][0] * 1000:8.1f} ms "
                          f"({d['warm'][1]:3d} requests)")
                for phase in ("cold", "warm"):
                    base = res["lape-hub"][phase][0]
                    print(f"  ratio {phase}: snapshot+checks / lape-hub "
                          f"{res['snapshot+checks'][phase][0] / base:.2f}, snapshot bare / "
                          f"lape-hub {res['snapshot bare'][phase][0] / base:.2f}")
            delay["s"] = 0.0
            print("\n## a server streaming 16 MiB more than it lists for one file")
            for k, v in oversized_stream(hub, sha, work, 16).items():
                print(f"  {k:<18} {v}")
            print("\n## a cached file changed on disk (same size)")
            for k, v in tampered_cache(hub, sha, work).items():
                print(f"  {k:<18} {v}")
    finally:
        hub_server._Handler._dispatch = real_dispatch
        hub_server._Handler.do_GET = hub_server._Handler.do_HEAD = real_dispatch
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
