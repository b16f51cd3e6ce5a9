"""The builder: what is missing from the catalog, and computing it.

``plan`` compares the catalog with a reference set: languages without activation counts
for the model and corpus, and LAPE / neuron entries that are missing or older than the
counts they were computed from. ``build`` counts only the missing languages (resumable,
torchrun-aware), then recomputes LAPE and the neuron sets from the stored counts: adding
one language never re-runs the model for the others.

Example::

    >>> from lape_hub.catalog import Catalog
    >>> p = plan(Catalog(), "gemma-3-270m", "paper-12", corpus="sib200:train")  # doctest: +SKIP
    >>> p.missing_counts, p.lape_status                                        # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa

from lape_hub import __version__
from lape_hub.catalog import Catalog, first_row
from lape_hub.errors import CorpusError, NotInCatalogError
from lape_hub.formats import neurons_entry
from lape_hub.lape import LapeResult, SelectionParams, select_lape
from lape_hub.languages import resolve_language
from lape_hub.neuron_set import NeuronSet
from lape_hub.registry import ModelSpec, resolve_model, resolve_refset
from lape_hub.signature import signature

log = logging.getLogger(__name__)


# -- identities ------------------------------------------------------------------------
def model_revision(spec: ModelSpec) -> str:
    """The revision counts are computed on: the offline GGUF build, or the pinned revision."""
    return spec.offline_revision if spec.gguf_package and spec.offline_revision else spec.revision


def corpus_id(source: str | os.PathLike, split: str = "train", max_tokens: int | None = None) -> str:
    """``sib200:train`` for a folder of per-language folders, ``name:split`` otherwise;
    ``@N`` is appended for a per-language token budget."""
    text = str(source)
    is_path = os.path.exists(text) or text.startswith(("/", ".", "~")) or os.sep + os.sep in text
    name = Path(text).name if is_path else text
    name = Path(name).stem if Path(name).suffix in (".txt", ".jsonl", ".parquet") else name
    out = f"{name}:{split}"
    return f"{out}@{max_tokens}" if max_tokens else out


def _counts_hash(over_zero: np.ndarray, n_tokens: int) -> str:
    h = hashlib.sha256(f"{over_zero.shape}|{n_tokens}|".encode())
    h.update(np.ascontiguousarray(over_zero, dtype="<i8").tobytes())
    return h.hexdigest()


# -- activation counts in the catalog ------------------------------------------------------
def write_counts(cat: Catalog, model: str, lang: str, over_zero: np.ndarray, n_tokens: int, *,
                 revision: str, corpus: str, params: dict | None = None) -> Path:
    """Store one language's counts ``over_zero`` [layers, d_ffn] as one catalog entry."""
    spec = resolve_model(model)
    code = resolve_language(lang).code
    over_zero = np.asarray(over_zero, dtype=np.int64)
    if over_zero.shape != (spec.n_layers, spec.d_ffn):
        raise ValueError(f"counts of shape {over_zero.shape}, {spec.alias} is "
                         f"({spec.n_layers}, {spec.d_ffn})")
    if n_tokens <= 0 or (over_zero < 0).any() or (over_zero > n_tokens).any():
        raise ValueError("counts must lie in [0, n_tokens] with n_tokens > 0")
    n = spec.n_layers
    now = datetime.now(timezone.utc)
    sig = signature(spec.alias, revision, lang=code, corpus=corpus, tokens=n_tokens)
    table = pa.table({
        "model": [spec.alias] * n, "revision": [revision] * n, "corpus": [corpus] * n,
        "lang": [code] * n, "layer": pa.array(np.arange(n), pa.int32()),
        "n_tokens": pa.array([n_tokens] * n, pa.int64()),
        "over_zero": pa.array(list(over_zero), pa.list_(pa.int64())),
        "signature": [sig] * n, "lape_hub_version": [__version__] * n,
        "params": [json.dumps(params or {}, sort_keys=True)] * n,
        "created_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        "content_hash": [_counts_hash(over_zero, n_tokens)] * n,
    })
    return cat.write("activation_counts", table)


@dataclass(frozen=True)
class StoredCounts:
    langs: list[str]
    n_tokens: np.ndarray      # [langs]
    over_zero: np.ndarray     # [layers, d_ffn, langs]
    hashes: dict[str, str]


def read_counts(cat: Catalog, model: str, langs: Sequence[str], *, revision: str,
                corpus: str) -> StoredCounts:
    """Counts of ``langs`` stacked as [layers, d_ffn, langs]; missing languages raise."""
    spec = resolve_model(model)
    have = counted_langs(cat, spec.alias, revision=revision, corpus=corpus)
    missing = [x for x in langs if x not in have]
    if missing:
        raise NotInCatalogError(f"no activation counts of {spec.alias}@{revision} on {corpus} for "
                                f"{len(missing)} languages ({', '.join(missing[:8])}"
                                f"{'...' if len(missing) > 8 else ''})")
    over = np.zeros((spec.n_layers, spec.d_ffn, len(langs)), dtype=np.int64)
    n_tokens = np.zeros(len(langs), dtype=np.int64)
    hashes = {}
    for k, lang in enumerate(langs):
        t = cat.read("activation_counts", model=spec.alias, revision=revision, corpus=corpus,
                     lang=lang)
        t = t.sort_by("layer")
        values = t.column("over_zero").combine_chunks().flatten().to_numpy()
        over[:, :, k] = values.reshape(spec.n_layers, spec.d_ffn)
        n_tokens[k] = t.column("n_tokens")[0].as_py()
        hashes[lang] = t.column("content_hash")[0].as_py()
    return StoredCounts(list(langs), n_tokens, over, hashes)


def counted_langs(cat: Catalog, model: str, *, revision: str, corpus: str) -> set[str]:
    return {e.key["lang"] for e in cat.entries("activation_counts", model=model,
                                               revision=revision, corpus=corpus)}


# -- LAPE ---------------------------------------------------------------------------------
def update_lape(cat: Catalog, model: str, refset: str, *, langs: Sequence[str] | None = None,
                revision: str | None = None, corpus: str,
                params: SelectionParams = SelectionParams()) -> LapeResult:
    """Recompute LAPE and the neuron sets of ``refset`` from stored counts and write both.

    ``langs`` overrides the registry's language list (a custom reference set).
    """
    spec = resolve_model(model)
    revision = revision or model_revision(spec)
    codes = [resolve_language(x).code for x in langs] if langs else list(resolve_refset(refset).langs)
    refset = refset.lower()
    stored = read_counts(cat, spec.alias, codes, revision=revision, corpus=corpus)
    result = select_lape(stored.over_zero, stored.n_tokens, params.top_rate, params.filter_rate,
                         params.bar_rate)
    total_tokens = int(stored.n_tokens.sum())
    info = {
        "langs": codes, "corpus": corpus, "n_tokens": dict(zip(codes, stored.n_tokens.tolist())),
        "counts_hashes": stored.hashes, "top_rate": params.top_rate,
        "filter_rate": params.filter_rate, "bar_rate": params.bar_rate,
        "tau_filter": result.tau_filter, "tau_bar": result.tau_bar,
        "n_selected": int(result.selected.sum()),
    }
    sig = signature(spec.alias, revision, refset=refset, selection=params.key, corpus=corpus,
                    tokens=total_tokens)
    key = {"model": spec.alias, "refset": refset, "selection": params.key}
    now = datetime.now(timezone.utc)
    n_layers, d_ffn = result.entropy.shape
    n = n_layers * d_ffn
    probs = result.probs.reshape(n, len(codes))
    lape_hash = hashlib.sha256(result.entropy.tobytes() + probs.tobytes()).hexdigest()
    params_json = json.dumps(info, sort_keys=True)
    lape_table = pa.table({
        "model": [spec.alias] * n, "revision": [revision] * n, "refset": [refset] * n,
        "selection": [params.key] * n,
        "layer": pa.array(np.repeat(np.arange(n_layers), d_ffn), pa.int32()),
        "neuron": pa.array(np.tile(np.arange(d_ffn), n_layers), pa.int32()),
        "entropy": pa.array(result.entropy.reshape(n), pa.float32()),
        "max_p": pa.array(probs.max(axis=1), pa.float32()),
        "selected": pa.array(result.selected.reshape(n)),
        "probs": pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1), pa.float32()),
                                                   len(codes)).cast(pa.list_(pa.float32())),
        "tau_filter": pa.array([result.tau_filter] * n, pa.float64()),
        "tau_bar": pa.array([result.tau_bar] * n, pa.float64()),
        "signature": [sig] * n, "lape_hub_version": [__version__] * n,
        "params": [params_json] * n,
        "created_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        "content_hash": [lape_hash] * n,
    })
    sets, p_cols, e_cols = [], [], []
    for k, code in enumerate(codes):
        layers = result.layers(k)
        ns = NeuronSet(spec.alias, code, layers, d_model=spec.d_model, d_ffn=spec.d_ffn,
                       refset=refset, total_params=spec.total_params)
        layer, neuron = ns.pairs()
        sets.append(ns)
        p_cols.append(result.probs[layer, neuron, k])
        e_cols.append(result.entropy[layer, neuron])
    neurons_table = neurons_entry(sets, revision=revision, selection=params.key, signature=sig,
                                  params=info, probs=p_cols, entropies=e_cols)
    with cat.lock():
        cat.write("lape", lape_table, key)
        cat.write("neurons", neurons_table, key)
    return result


# -- plan ------------------------------------------------------------------------------------
@dataclass
class Plan:
    model: str
    revision: str
    refset: str
    corpus: str
    langs: list[str]
    missing_counts: list[str]
    lape_status: str          # "missing" | "stale" | "current"
    reason: str = ""

    @property
    def up_to_date(self) -> bool:
        return not self.missing_counts and self.lape_status == "current"

    def describe(self) -> str:
        head = f"{self.model}@{self.revision} · refset {self.refset} · corpus {self.corpus}"
        lines = [head]
        if self.missing_counts:
            shown = ", ".join(self.missing_counts[:12])
            more = f" (+{len(self.missing_counts) - 12} more)" if len(self.missing_counts) > 12 else ""
            lines.append(f"missing activation counts: {len(self.missing_counts)} of "
                         f"{len(self.langs)} languages: {shown}{more}")
        else:
            lines.append(f"activation counts: all {len(self.langs)} languages present")
        lines.append(f"LAPE + neuron sets: {self.lape_status}" +
                     (f" ({self.reason})" if self.reason else ""))
        if self.up_to_date:
            lines.append("nothing to build")
        return "\n".join(lines)


def plan(cat: Catalog, model: str, refset: str, *, corpus: str, langs: Sequence[str] | None = None,
         params: SelectionParams = SelectionParams()) -> Plan:
    spec = resolve_model(model)
    revision = model_revision(spec)
    ref = resolve_refset(refset)
    codes = [resolve_language(x).code for x in langs] if langs else list(ref.langs)
    have = counted_langs(cat, spec.alias, revision=revision, corpus=corpus)
    missing = [c for c in ref.langs if c not in have and c in codes]
    status, reason = "current", ""
    key = {"model": spec.alias, "refset": ref.name, "selection": params.key}
    path = cat.entry_path("lape", key)
    if not path.exists():
        status = "missing"
    else:
        row = first_row(path, ["params", "revision"])
        info = json.loads(row["params"])
        if info.get("corpus") != corpus or row["revision"] != revision:
            status, reason = "stale", f"built on {row['revision']} · {info.get('corpus')}"
        elif info.get("langs") != list(ref.langs):
            status, reason = "stale", "reference set changed"
        else:
            t = cat.read("activation_counts", columns=["lang", "content_hash"],
                         model=spec.alias, revision=revision, corpus=corpus)
            current = dict(zip(t.column("lang").to_pylist(), t.column("content_hash").to_pylist()))
            changed = [x for x in ref.langs if info["counts_hashes"].get(x) != current.get(x)]
            if changed:
                status, reason = "stale", f"counts changed for {', '.join(changed[:6])}"
    return Plan(spec.alias, revision, ref.name, corpus, list(ref.langs), missing, status, reason)


# -- build ------------------------------------------------------------------------------------
@dataclass
class BuildReport:
    counted: list[str] = field(default_factory=list)
    tokens: dict[str, int] = field(default_factory=dict)
    lape_updated: bool = False
    waiting_for: list[str] = field(default_factory=list)


def build(cat: Catalog, model: str, refset: str, corpus: str | os.PathLike, *, split: str = "train",
          langs: Sequence[str] | None = None, max_tokens: int | None = None,
          min_tokens: int = 1000, seq_len: int = 512, batch_size: int = 8, device: str = "cpu",
          dtype: str = "float32", text_column: str | None = None, checkpoint_every: int = 64,
          params: SelectionParams = SelectionParams(), progress: bool = True,
          echo: Callable[[str], None] = print) -> BuildReport:
    """Count the missing languages of ``refset`` (or of ``langs``), then update LAPE.

    Resumable: each language checkpoints into the cache while it runs; finished languages
    are catalog entries and are skipped on the next run. Under ``torchrun`` each rank counts
    a shard of every language and rank 0 writes the catalog.
    """
    from lape_hub.activation_counts import count_activations, init_distributed
    from lape_hub.corpus import iter_documents, tokenize_and_pack
    from lape_hub.models import load_model
    from lape_hub.paths import cache_dir

    spec = resolve_model(model)
    ref = resolve_refset(refset)
    revision = model_revision(spec)
    cid = corpus_id(corpus, split, max_tokens)
    have = counted_langs(cat, spec.alias, revision=revision, corpus=cid)
    wanted = [resolve_language(x).code for x in langs] if langs else list(ref.langs)
    todo = [c for c in wanted if c not in have]
    dist = init_distributed()  # one process unless launched by torchrun
    report = BuildReport()
    # open every language's corpus (lazily) so a missing one fails before hours of compute
    docs = {}
    for code in todo:
        it = iter_documents(corpus, code, split, text_column=text_column)
        first = next(it, None)
        if first is None:
            raise CorpusError(f"corpus {corpus} has no {split} text for {code}")
        docs[code] = itertools.chain([first], it)
    if todo:
        model_obj, tokenizer = load_model(spec, device=device, dtype=dtype)
        work = cache_dir() / "work" / spec.alias / cid.replace(":", "_").replace("/", "_")
        work.mkdir(parents=True, exist_ok=True)
        for i, code in enumerate(todo, 1):
            packed = tokenize_and_pack(docs[code], tokenizer, seq_len, max_tokens,
                                       min_tokens=min_tokens, lang=code)
            if dist.is_main:
                echo(f"[{i}/{len(todo)}] {code}: {packed.n_tokens:,} tokens in "
                     f"{packed.n_sequences} sequences of {seq_len}")
            ckpt = work / f"{code}.ckpt.npz"
            counts = count_activations(model_obj, packed, batch_size=batch_size,
                                       checkpoint_path=ckpt, checkpoint_every=checkpoint_every,
                                       progress=progress and dist.is_main, desc=code)
            if dist.is_main:
                write_counts(cat, spec.alias, code, counts.over_zero, counts.n_tokens,
                             revision=revision, corpus=cid,
                             params={"corpus_source": Path(str(corpus)).name, "split": split,
                                     "max_tokens": max_tokens, "seq_len": seq_len,
                                     "n_sequences": packed.n_sequences,
                                     "n_documents": packed.n_documents, "dtype": dtype,
                                     "device": device, "world_size": dist.world_size})
            for leftover in work.glob(f"{code}.ckpt*"):
                leftover.unlink(missing_ok=True)
            report.counted.append(code)
            report.tokens[code] = counts.n_tokens
    if dist.is_main:
        after = plan(cat, spec.alias, refset, corpus=cid, params=params)
        report.waiting_for = after.missing_counts
        if not report.waiting_for and after.lape_status != "current":
            update_lape(cat, spec.alias, ref.name, revision=revision, corpus=cid, params=params)
            report.lape_updated = True
    return report
