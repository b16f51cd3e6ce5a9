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
import re
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
DTYPES = ("float32", "bfloat16")
BOS_RULES = ("count", "skip")
#: The counting rule of entries whose corpus id has no tags (every entry before dtype and
#: BOS became part of the identity): float32 weights, every BOS position counted.
LEGACY_DTYPE, LEGACY_BOS = "float32", "count"
#: The default BOS rule of new counts (see docs/builder.md, "Counting choices").
DEFAULT_BOS = "count"
_TAGS = {"bf16": ("dtype", "bfloat16"), "nobos": ("bos", "skip")}
_CORPUS_ID = re.compile(r"^(?P<name>[^:@+]+):(?P<split>[^:@+]+)(?:@(?P<tok>[0-9]+))?"
                        r"(?P<tags>(?:\+[a-z0-9]+)*)$")


def model_revision(spec: ModelSpec) -> str:
    """The revision counts are computed on: the offline GGUF build, or the pinned revision."""
    return spec.offline_revision if spec.gguf_package and spec.offline_revision else spec.revision


def _cpu_has_bf16() -> bool:
    """True when this CPU has bfloat16 instructions (see :func:`lape_hub.device.fast_bf16`)."""
    from lape_hub.device import fast_bf16

    return fast_bf16("cpu")


def resolve_counting_dtype(dtype: str = "auto", device: str = "cpu") -> str:
    """``auto`` -> ``bfloat16`` where the device computes it fast (CUDA, a CPU with bf16
    instructions), else ``float32``; other values are checked and returned.

    >>> resolve_counting_dtype("float32", "cuda")
    'float32'
    >>> resolve_counting_dtype("auto", "cuda:0")
    'bfloat16'
    """
    d = str(dtype).lower()
    aliases = {"bf16": "bfloat16", "fp32": "float32", "f32": "float32"}
    d = aliases.get(d, d)
    if d == "auto":
        return "bfloat16" if str(device).startswith("cuda") or _cpu_has_bf16() else "float32"
    if d not in DTYPES:
        raise ValueError(f"counting dtype {dtype!r}: use auto, {', '.join(DTYPES)}")
    return d


@dataclass(frozen=True)
class CorpusKey:
    """What a counts entry was computed on and how: the parts of a corpus id.

    >>> k = parse_corpus_id("sib200:train@16384+bf16")
    >>> (k.name, k.split, k.max_tokens, k.dtype, k.bos)
    ('sib200', 'train', 16384, 'bfloat16', 'count')
    >>> k.with_tokens(900).id
    'sib200:train@900+bf16'
    """

    name: str
    split: str
    max_tokens: int | None = None
    dtype: str = LEGACY_DTYPE
    bos: str = LEGACY_BOS

    @property
    def id(self) -> str:
        out = f"{self.name}:{self.split}"
        if self.max_tokens:
            out += f"@{self.max_tokens}"
        if self.dtype == "bfloat16":
            out += "+bf16"
        if self.bos == "skip":
            out += "+nobos"
        return out

    def with_tokens(self, n: int | None) -> "CorpusKey":
        return CorpusKey(self.name, self.split, n, self.dtype, self.bos)

    def same_rule(self, other: "CorpusKey") -> bool:
        """Same corpus, split, dtype and BOS rule (the token budget may differ)."""
        return (self.name, self.split, self.dtype, self.bos) == \
            (other.name, other.split, other.dtype, other.bos)

    def describe(self) -> str:
        bos = "BOS counted" if self.bos == "count" else "BOS skipped"
        budget = f"{self.max_tokens:,} tokens" if self.max_tokens else "all tokens"
        return f"{self.name} {self.split}, {budget}, {self.dtype}, {bos}"

    def cli_args(self) -> str:
        """The ``--split/--max-tokens/--dtype/--bos`` options that ask for this key."""
        out = f"--split {self.split}"
        if self.max_tokens:
            out += f" --max-tokens {self.max_tokens}"
        return out + f" --dtype {self.dtype} --bos {self.bos}"


def parse_corpus_id(cid: str) -> CorpusKey | None:
    """The parts of a corpus id (``None`` for ids not made by :func:`corpus_id`).

    No ``+bf16`` tag means float32 and no ``+nobos`` tag means BOS counted: the ids of
    entries written before dtype and BOS were recorded read as what they were.
    """
    m = _CORPUS_ID.match(cid)
    if not m:
        return None
    fields = {"dtype": LEGACY_DTYPE, "bos": LEGACY_BOS}
    for tag in filter(None, m["tags"].split("+")):
        if tag not in _TAGS:
            return None
        k, v = _TAGS[tag]
        fields[k] = v
    return CorpusKey(m["name"], m["split"], int(m["tok"]) if m["tok"] else None, **fields)


def corpus_name(source: str | os.PathLike) -> str:
    """``sib200`` for ``/data/sib200``, ``sib200`` or ``sib200/``; ``x`` for ``x.jsonl``."""
    text = str(source).rstrip("/\\") or str(source)
    is_path = os.path.exists(text) or text.startswith(("/", ".", "~"))
    name = Path(text).name if is_path else text.removeprefix("hf:")
    return Path(name).stem if Path(name).suffix in (".txt", ".jsonl", ".parquet", ".tsv") else name


def corpus_id(source: str | os.PathLike, split: str = "train", max_tokens: int | None = None,
              *, dtype: str = LEGACY_DTYPE, bos: str = LEGACY_BOS) -> str:
    """The corpus id of counts: ``name:split``, ``@N`` for a per-language token budget,
    ``+bf16`` for bfloat16 counting and ``+nobos`` when BOS positions are not counted.

    A path and its folder name give the same id, so ``plan`` and ``build`` agree.

    >>> corpus_id("sib200", "train", 16384)
    'sib200:train@16384'
    >>> corpus_id("/data/sib200", "train", 16384, dtype="bfloat16", bos="skip")
    'sib200:train@16384+bf16+nobos'
    """
    if bos not in BOS_RULES:
        raise ValueError(f"bos rule {bos!r}: use {' or '.join(BOS_RULES)}")
    return CorpusKey(corpus_name(source), split, max_tokens,
                     resolve_counting_dtype(dtype), bos).id


def _counts_hash(over_zero: np.ndarray, n_tokens: int) -> str:
    h = hashlib.sha256(f"{over_zero.shape}|{n_tokens}|".encode())
    h.update(np.ascontiguousarray(over_zero, dtype="<i8").tobytes())
    return h.hexdigest()


# -- activation counts in the catalog ------------------------------------------------------
def write_counts(cat: Catalog, model: str, lang: str, over_zero: np.ndarray, n_tokens: int, *,
                 revision: str, corpus: str, params: dict | None = None) -> Path:
    """Store one language's counts ``over_zero`` [layers, d_ffn] as one catalog entry.

    ``corpus`` is the full corpus id (:func:`corpus_id`): its dtype and BOS tags are also
    written into the entry's signature (``dtype:``, ``bos:``).
    """
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
    key = parse_corpus_id(corpus)
    rule = {"dtype": key.dtype, "bos": key.bos} if key else {}
    sig = signature(spec.alias, revision, lang=code, corpus=corpus, tokens=n_tokens, **rule)
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


def counts_index(cat: Catalog, model: str, *, revision: str, corpus: str) -> dict[str, str]:
    """``{lang: corpus id of its entry}`` for the languages counted under ``corpus``.

    A language whose corpus ran out before the budget (``@N`` with ``N`` below the asked
    budget, same dtype and BOS rule, and ``corpus_exhausted`` in its params) is counted:
    every token it has was counted, a larger budget would count the same tokens.
    """
    out = {e.key["lang"]: corpus for e in cat.entries("activation_counts", model=model,
                                                      revision=revision, corpus=corpus)}
    want = parse_corpus_id(corpus)
    if want is None or not want.max_tokens:
        return out
    for e in cat.entries("activation_counts", model=model, revision=revision):
        lang, have = e.key["lang"], parse_corpus_id(e.key["corpus"])
        if lang in out or have is None or not have.same_rule(want) or not have.max_tokens \
                or have.max_tokens >= want.max_tokens:
            continue
        row = first_row(e.path, ["params"])
        if row is not None and json.loads(row["params"] or "{}").get("corpus_exhausted"):
            out[lang] = e.key["corpus"]
    return out


def read_counts(cat: Catalog, model: str, langs: Sequence[str], *, revision: str,
                corpus: str) -> StoredCounts:
    """Counts of ``langs`` stacked as [layers, d_ffn, langs]; missing languages raise."""
    spec = resolve_model(model)
    where = counts_index(cat, spec.alias, revision=revision, corpus=corpus)
    missing = [x for x in langs if x not in where]
    if missing:
        raise NotInCatalogError(f"no activation counts of {spec.alias}@{revision} on {corpus} for "
                                f"{len(missing)} languages ({', '.join(missing[:8])}"
                                f"{', …' if len(missing) > 8 else ''})")
    over = np.zeros((spec.n_layers, spec.d_ffn, len(langs)), dtype=np.int64)
    n_tokens = np.zeros(len(langs), dtype=np.int64)
    hashes = {}
    for k, lang in enumerate(langs):
        t = cat.read("activation_counts", model=spec.alias, revision=revision,
                     corpus=where[lang], lang=lang)
        t = t.sort_by("layer")
        values = t.column("over_zero").combine_chunks().flatten().to_numpy()
        over[:, :, k] = values.reshape(spec.n_layers, spec.d_ffn)
        n_tokens[k] = t.column("n_tokens")[0].as_py()
        hashes[lang] = t.column("content_hash")[0].as_py()
    return StoredCounts(list(langs), n_tokens, over, hashes)


def counted_langs(cat: Catalog, model: str, *, revision: str, corpus: str) -> set[str]:
    """Languages with counts under ``corpus`` (see :func:`counts_index`)."""
    return set(counts_index(cat, model, revision=revision, corpus=corpus))


def stored_corpora(cat: Catalog, model: str, *, revision: str) -> dict[str, set[str]]:
    """``{corpus id: languages}`` of every counts entry of ``model`` at ``revision``."""
    out: dict[str, set[str]] = {}
    for e in cat.entries("activation_counts", model=model, revision=revision):
        out.setdefault(e.key["corpus"], set()).add(e.key["lang"])
    return out


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
    ckey = parse_corpus_id(corpus)
    rule = {"dtype": ckey.dtype, "bos": ckey.bos} if ckey else {}
    sig = signature(spec.alias, revision, refset=refset, selection=params.key, corpus=corpus,
                    tokens=total_tokens, **rule)
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
    """What the catalog lacks for (model, refset, corpus id), and the command that builds it."""

    model: str
    revision: str
    refset: str
    corpus: str
    langs: list[str]
    missing_counts: list[str]
    lape_status: str          # "missing" | "stale" | "current"
    reason: str = ""
    source: str = ""          # what --corpus was given as (path or id); the build command uses it
    others: dict[str, int] = field(default_factory=dict)   # other corpus ids: refset languages held

    @property
    def up_to_date(self) -> bool:
        return not self.missing_counts and self.lape_status == "current"

    @property
    def key(self) -> CorpusKey | None:
        return parse_corpus_id(self.corpus)

    def _options(self) -> str:
        key = self.key
        return key.cli_args() if key else ""

    def build_command(self) -> str:
        """The one command that brings this plan's entries up to date."""
        src = self.source or (self.key.name if self.key else self.corpus)
        return (f"lape-hub build --model {self.model} --refset {self.refset} "
                f"--corpus {_shell_word(src)} {self._options()}").rstrip()

    def other_plan_commands(self) -> list[str]:
        """``plan`` commands for the other counting identities this catalog holds (most
        languages of the reference set first)."""
        out = []
        for cid, n in sorted(self.others.items(), key=lambda kv: (-kv[1], kv[0])):
            key = parse_corpus_id(cid)
            if key is None:
                continue
            out.append(f"{cid} ({key.describe()}; {n} of {len(self.langs)} languages): "
                       f"lape-hub plan --model {self.model} --refset {self.refset} "
                       f"--corpus {_shell_word(self.source or key.name)} {key.cli_args()}")
        return out

    def describe(self) -> str:
        key = self.key
        head = f"{self.model}@{self.revision} · refset {self.refset} · corpus {self.corpus}"
        lines = [head + (f" ({key.describe()})" if key else "")]
        if self.missing_counts:
            shown = ", ".join(self.missing_counts[:12])
            more = f", … (+{len(self.missing_counts) - 12} more)" if len(self.missing_counts) > 12 else ""
            lines.append(f"missing activation counts: {len(self.missing_counts)} of "
                         f"{len(self.langs)} languages: {shown}{more}")
        else:
            lines.append(f"activation counts: all {len(self.langs)} languages present")
        lines.append(f"LAPE + neuron sets: {self.lape_status}" +
                     (f" ({self.reason})" if self.reason else ""))
        if self.up_to_date:
            lines.append("nothing to build")
            return "\n".join(lines)
        others = self.other_plan_commands()
        if others:
            lines.append("the catalog holds counts of this model with other settings:")
            lines += [f"  {x}" for x in others[:3]]
        lines.append(f"to bring the catalog up to date: {self.build_command()}")
        return "\n".join(lines)


def _shell_word(text: str) -> str:
    import shlex

    return shlex.quote(str(text))


def plan(cat: Catalog, model: str, refset: str, *, corpus: str, langs: Sequence[str] | None = None,
         params: SelectionParams = SelectionParams(), source: str | None = None) -> Plan:
    """Compare the catalog with ``refset`` for counts under the corpus id ``corpus``.

    ``source`` is what the user named the corpus by (a path or an id): the printed build
    command repeats it.
    """
    spec = resolve_model(model)
    revision = model_revision(spec)
    ref = resolve_refset(refset)
    codes = [resolve_language(x).code for x in langs] if langs else list(ref.langs)
    where = counts_index(cat, spec.alias, revision=revision, corpus=corpus)
    missing = [c for c in ref.langs if c not in where and c in codes]
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
            changed = [x for x in ref.langs
                       if info["counts_hashes"].get(x) != _entry_hash(cat, spec.alias, revision,
                                                                     where.get(x), x)]
            if changed:
                status, reason = "stale", f"counts changed for {', '.join(changed[:6])}"
    others = {}
    if missing or status != "current":
        wanted = set(ref.langs)
        for cid, held in stored_corpora(cat, spec.alias, revision=revision).items():
            n = len(held & wanted)
            if cid != corpus and n:
                others[cid] = n
    return Plan(spec.alias, revision, ref.name, corpus, list(ref.langs), missing, status, reason,
                source=source or "", others=others)


def _entry_hash(cat: Catalog, model: str, revision: str, corpus: str | None, lang: str) -> str | None:
    if corpus is None:
        return None
    path = cat.entry_path("activation_counts", {"model": model, "revision": revision,
                                                "corpus": corpus, "lang": lang})
    row = first_row(path, ["content_hash"]) if path.exists() else None
    return row["content_hash"] if row else None


def build_hint(cat: Catalog, model: str, lang: str, refset: str | None = None) -> str:
    """The build command that gives ``lang`` a neuron set, judged from the stored counts.

    The reference set is ``refset``, else the registry set holding ``lang`` of which the
    catalog has counted the most languages (a partial build), else paper-12 or flores-200.
    The counting identity (corpus, budget, dtype, BOS) is the one with the most of its
    languages; a language already counted is never asked for again.

    >>> build_hint(Catalog(), "gemma-3-270m", "mt")  # doctest: +SKIP
    'lape-hub build --model gemma-3-270m --refset paper-12 --corpus sib200 ...'
    """
    from lape_hub.registry import refsets

    spec = resolve_model(model)
    code = resolve_language(lang).code
    revision = model_revision(spec)
    corpora = stored_corpora(cat, spec.alias, revision=revision)
    sets = {r.name: r for r in refsets().values() if code in r.langs}
    note = ""
    if refset is not None:
        try:
            asked = resolve_refset(refset)
        except Exception:  # a custom set: the catalog's own, not the registry's
            return (f"lape-hub build --model {spec.alias} --refset {refset} --lang {code} "
                    f"--corpus PATH")
        if code in asked.langs:
            sets = {asked.name: asked}
        else:
            note = f"({code} is not in {asked.name}) "

    def held(r) -> int:
        return max((len(set(r.langs) & got) for got in corpora.values()), default=0)

    # the reference set a build of this language was run for (recorded in its counts)
    recorded = set()
    for e in cat.entries("activation_counts", model=spec.alias, revision=revision, lang=code):
        row = first_row(e.path, ["params"])
        recorded.add(json.loads(row["params"] or "{}").get("refset") if row else None)
    ranked = sorted(sets.values(), key=lambda r: (r.name not in recorded, -held(r),
                                                  r.name != "paper-12",
                                                  r.name != "flores-200", r.name))
    if not ranked:
        return f"lape-hub build --model {spec.alias} --refset flores-200 --corpus PATH"
    ref = ranked[0]
    return note + _hint_for(cat, spec, revision, ref, corpora)


def _hint_for(cat: Catalog, spec: ModelSpec, revision: str, ref, corpora: dict) -> str:
    best = max(corpora.items(), key=lambda kv: (len(set(ref.langs) & kv[1]), kv[0]),
               default=None)
    key = parse_corpus_id(best[0]) if best and set(ref.langs) & best[1] else None
    if key is None:
        return (f"lape-hub build --model {spec.alias} --refset {ref.name} --corpus PATH "
                f"--max-tokens N")
    p = plan(cat, spec.alias, ref.name, corpus=best[0], source=key.name)
    return p.build_command()


# -- build ------------------------------------------------------------------------------------
@dataclass
class BuildReport:
    counted: list[str] = field(default_factory=list)
    tokens: dict[str, int] = field(default_factory=dict)
    lape_updated: bool = False
    waiting_for: list[str] = field(default_factory=list)
    corpus: str = ""                  # the corpus id of the counts
    short: dict[str, int] = field(default_factory=dict)   # languages whose corpus ran out: tokens
    threads: int | None = None
    next_command: str = ""            # what completes the reference set (when waiting)


def build(cat: Catalog, model: str, refset: str, corpus: str | os.PathLike, *, split: str = "train",
          langs: Sequence[str] | None = None, max_tokens: int | None = None,
          min_tokens: int = 1000, seq_len: int = 512, batch_size: int = 8, device: str = "cpu",
          dtype: str = "auto", bos: str = DEFAULT_BOS, threads: int | None = None,
          text_column: str | None = None, checkpoint_every: int = 64,
          params: SelectionParams = SelectionParams(), progress: bool = True,
          echo: Callable[[str], None] = print,
          warn: Callable[[str], None] | None = None) -> BuildReport:
    """Count the missing languages of ``refset`` (or of ``langs``), then update LAPE.

    - ``dtype``: ``auto`` (bfloat16 on CUDA and on CPUs with bf16 instructions, float32
      elsewhere), ``float32`` or ``bfloat16``; ``bos``: ``count`` (default, as the reference
      code) or ``skip`` (BOS goes into the model, its positions are not counted). Both are
      part of the corpus id the counts are stored under, so differently counted entries
      never mix.
    - ``threads``: CPU threads (default: the fastest, measured once and cached; see
      :func:`lape_hub.activation_counts.set_threads`).
    - A language whose corpus holds fewer than ``max_tokens`` tokens is counted whole, with a
      warning, and stored under ``@<tokens counted>``; it still completes the reference set.

    Resumable: each language checkpoints into the cache while it runs; finished languages
    are catalog entries and are skipped on the next run. Under ``torchrun`` each rank counts
    a shard of every language and rank 0 writes the catalog.
    """
    from lape_hub.activation_counts import count_activations, init_distributed, set_threads
    from lape_hub.corpus import iter_documents, locate_corpus, tokenize_and_pack
    from lape_hub.models import load_model
    from lape_hub.paths import cache_dir

    warn = warn or log.warning
    spec = resolve_model(model)
    ref = resolve_refset(refset)
    revision = model_revision(spec)
    if str(dtype).lower() == "auto" and str(device).startswith("cuda"):
        import torch  # a GPU without bfloat16 (before Ampere) counts in float32

        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            dtype = "float32"
    dtype = resolve_counting_dtype(dtype, device)
    if bos not in BOS_RULES:
        raise ValueError(f"bos rule {bos!r}: use {' or '.join(BOS_RULES)}")
    source = str(corpus)
    key = CorpusKey(corpus_name(source), split, max_tokens, dtype, bos)
    cid = key.id
    have = counted_langs(cat, spec.alias, revision=revision, corpus=cid)
    wanted = [resolve_language(x).code for x in langs] if langs else list(ref.langs)
    todo = [c for c in wanted if c not in have]
    dist = init_distributed()  # one process unless launched by torchrun
    report = BuildReport(corpus=cid)
    # open every language's corpus (lazily) so a missing one fails before hours of compute
    docs = {}
    if todo:
        path = locate_corpus(source)
        for code in todo:
            it = iter_documents(path, code, split, text_column=text_column)
            first = next(it, None)
            if first is None:
                raise CorpusError(f"corpus {source} has no {split} text for {code}")
            docs[code] = itertools.chain([first], it)
    if todo:
        report.threads = set_threads(threads, dtype=dtype) if str(device).startswith("cpu") else threads
        model_obj, tokenizer = load_model(spec, device=device, dtype=dtype)
        skip_id = tokenizer.bos_token_id if bos == "skip" else None
        work = cache_dir() / "work" / spec.alias / cid.replace(":", "_").replace("/", "_")
        work.mkdir(parents=True, exist_ok=True)
        for i, code in enumerate(todo, 1):
            packed = tokenize_and_pack(docs[code], tokenizer, seq_len, max_tokens,
                                       min_tokens=min_tokens, lang=code)
            entry_cid = cid
            exhausted = bool(max_tokens) and packed.n_tokens < max_tokens
            if exhausted:
                entry_cid = key.with_tokens(packed.n_tokens).id
                if dist.is_main:
                    warn(f"warning: corpus for {code} has only {packed.n_tokens:,} tokens "
                         f"(< --max-tokens {max_tokens:,}): counted all of them, stored as "
                         f"{entry_cid}")
            if dist.is_main:
                echo(f"[{i}/{len(todo)}] {code}: {packed.n_tokens:,} tokens in "
                     f"{packed.n_sequences} sequences of {seq_len} ({dtype}, BOS {bos}"
                     + (f", {report.threads} threads)" if report.threads else ")"))
            ckpt = work / f"{code}.ckpt.npz"
            counts = count_activations(model_obj, packed, batch_size=batch_size,
                                       checkpoint_path=ckpt, checkpoint_every=checkpoint_every,
                                       progress=progress and dist.is_main, desc=code,
                                       skip_token_id=skip_id)
            if dist.is_main:
                write_counts(cat, spec.alias, code, counts.over_zero, counts.n_tokens,
                             revision=revision, corpus=entry_cid,
                             params={"corpus_source": corpus_name(source), "split": split,
                                     "max_tokens": max_tokens, "seq_len": seq_len,
                                     "n_sequences": packed.n_sequences,
                                     "n_documents": packed.n_documents,
                                     "n_input_tokens": packed.n_tokens,
                                     "corpus_exhausted": exhausted, "dtype": dtype,
                                     "bos": bos, "device": device, "refset": ref.name,
                                     "world_size": dist.world_size})
            for leftover in work.glob(f"{code}.ckpt*"):
                leftover.unlink(missing_ok=True)
            report.counted.append(code)
            report.tokens[code] = counts.n_tokens
            if exhausted:
                report.short[code] = packed.n_tokens
    if dist.is_main:
        after = plan(cat, spec.alias, refset, corpus=cid, params=params, source=source)
        report.waiting_for = after.missing_counts
        if report.waiting_for:
            report.next_command = after.build_command()
        if not report.waiting_for and after.lape_status != "current":
            update_lape(cat, spec.alias, ref.name, revision=revision, corpus=cid, params=params)
            report.lape_updated = True
    return report
