"""Neuron sets in and out: Parquet, JSON, and the paper's torch list format.

The published format is ``torch.save`` of a ``List[List[LongTensor]]`` (languages ×
layers -> neuron indices) with the language order given separately. It is loaded with
``torch.load(weights_only=True)`` only, and validated against the registry.

Example::

    >>> import numpy as np, tempfile, os
    >>> ns = NeuronSet("gemma-3-270m", "mlt_Latn", [np.array([1, 5])] + [np.array([], np.int64)] * 17,
    ...                d_model=640, d_ffn=2048)
    >>> path = os.path.join(tempfile.mkdtemp(), "mt.json")
    >>> write_neuron_sets([ns], path, "json")
    >>> read_neuron_sets(path)[0] == ns
    True
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa

from lape_hub import __version__
from lape_hub.atomic import atomic_path
from lape_hub.digest import file_sha256
from lape_hub.errors import NeuronSetFormatError, require
from lape_hub.neuron_set import NeuronSet

FORMATS = ("parquet", "json", "pt")


def _atomic(path: Path, write) -> None:
    """Write through a temp file renamed into place; an OS refusal is one line."""
    from lape_hub.errors import OutputPathError

    try:
        with atomic_path(path) as tmp:
            write(tmp)
    except OSError as e:
        raise OutputPathError(f"{path}: cannot write ({e.strerror or type(e).__name__})") from None


def neuron_sets_table(sets: Sequence[NeuronSet]) -> pa.Table:
    """Long table (model, refset, lang, layer, neuron) of several neuron sets."""
    cols: dict[str, list] = {"model": [], "refset": [], "lang": [], "layer": [], "neuron": []}
    for ns in sets:
        layer, neuron = ns.pairs()
        n = len(layer)
        cols["model"] += [ns.model] * n
        cols["refset"] += [ns.refset] * n
        cols["lang"] += [ns.lang] * n
        cols["layer"].append(layer)
        cols["neuron"].append(neuron)
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int32))
    return pa.table({
        "model": pa.array(cols["model"], pa.string()),
        "refset": pa.array(cols["refset"], pa.string()),
        "lang": pa.array(cols["lang"], pa.string()),
        "layer": pa.array(cat(cols["layer"]), pa.int32()),
        "neuron": pa.array(cat(cols["neuron"]), pa.int32()),
    })


def write_neuron_sets(sets: Sequence[NeuronSet], path: str | os.PathLike,
                      fmt: str | None = None) -> None:
    """Write neuron sets (all of one model) as parquet, json or pt, atomically."""
    path = Path(path)
    fmt = format_of(path, fmt)
    if not sets:
        raise NeuronSetFormatError("nothing to write: no neuron sets")
    first = sets[0]
    header = {"model": first.model, "refset": first.refset, "n_layers": first.n_layers,
              "d_model": first.d_model, "d_ffn": first.d_ffn, "langs": [s.lang for s in sets],
              "lape_hub_version": __version__}
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = neuron_sets_table(sets)
        table = table.replace_schema_metadata({"lape_hub": json.dumps(header)})
        _atomic(path, lambda p: pq.write_table(table, p, compression="zstd"))
    elif fmt == "json":
        doc = {**header, "sets": {s.lang: {"content_hash": s.content_hash,
                                           "signature": s.metadata.get("signature"),
                                           "layers": [a.tolist() for a in s.layers]}
                                  for s in sets}}
        _atomic(path, lambda p: p.write_text(json.dumps(doc) + "\n"))
    elif fmt == "pt":
        torch = require("torch", "build", purpose="writing torch (.pt) neuron-set files")
        obj = [[torch.as_tensor(a, dtype=torch.long) for a in s.layers] for s in sets]

        def save(p: Path) -> None:
            with open(p, "wb") as f:  # an unwritable path is an OSError here, not torch's
                try:
                    torch.save(obj, f)
                except RuntimeError as e:  # torch's writer reports I/O failures this way
                    raise OSError(str(e).splitlines()[-1]) from None

        _atomic(path, save)
    else:
        raise NeuronSetFormatError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


# -- reading: every format goes through one validation -----------------------------------

#: hard limits on what a file may claim before anything is allocated for it
MAX_LANGS = 10_000


@dataclass
class RawNeuronSets:
    """What a neuron-set file says, before validation (see :func:`validate_neuron_sets`).

    ``langs`` are the language names as written (None for the torch list format, whose
    language order comes from ``--langs``); per language either ``layers`` (a sequence of
    per-layer index containers: lists, numpy arrays or torch tensors) or ``pairs`` (parallel
    layer and neuron arrays) is set. ``header`` holds what the file claims about the model
    (``model``, ``refset``, ``n_layers``, ``d_model``, ``d_ffn``), each possibly absent.
    """

    source: Path
    langs: list | None
    layers: list | None = None
    pairs: list | None = None
    header: dict = field(default_factory=dict)


def _bad(raw: RawNeuronSets, msg: str) -> NeuronSetFormatError:
    return NeuronSetFormatError(f"{raw.source}: {msg}")


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _index_array(raw: RawNeuronSets, where: str, x, limit: int, what: str) -> np.ndarray:
    """One layer's indices as a 1-D int64 array: integers only (no bool, float, complex,
    strings, nesting, sparse or multi-dimensional tensors), each in [0, limit), no repeats."""
    if type(x).__module__.startswith("torch"):
        import torch

        if not isinstance(x, torch.Tensor):
            raise _bad(raw, f"{where} is a {type(x).__name__}, not an integer tensor")
        if x.layout != torch.strided:
            raise _bad(raw, f"{where} is a sparse tensor; expected a dense 1-D integer tensor")
        if x.dtype == torch.bool or x.is_floating_point() or x.is_complex() or \
                x.dtype not in (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64):
            raise _bad(raw, f"{where} has dtype {str(x.dtype).replace('torch.', '')}; "
                            "expected integers (int64)")
        if x.dim() != 1:
            raise _bad(raw, f"{where} is a {x.dim()}-D tensor; expected 1-D")
        try:
            a = x.detach().cpu().numpy().astype(np.int64)
        except Exception as e:  # meta, quantized or other tensors numpy cannot hold
            raise _bad(raw, f"{where} cannot be read as integers ({type(e).__name__})") from None
    elif isinstance(x, np.ndarray):
        if x.dtype.kind not in "iu":
            raise _bad(raw, f"{where} has dtype {x.dtype}; expected integers")
        if x.ndim != 1:
            raise _bad(raw, f"{where} is {x.ndim}-D; expected 1-D")
        if x.dtype.kind == "u" and x.size and int(x.max()) >= 2 ** 63:
            raise _bad(raw, f"{where} has {what} {int(x.max())} outside [0, {limit})")
        a = x.astype(np.int64)
    elif isinstance(x, (list, tuple)):
        for v in x:
            if not _is_int(v):
                raise _bad(raw, f"{where} holds {type(v).__name__} {_short(v)}; "
                                "expected integers")
        if x and (min(x) < 0 or max(x) >= limit):
            v = min(x) if min(x) < 0 else max(x)
            raise _bad(raw, f"{where} has {what} {_short(v)} outside [0, {limit})")
        a = np.asarray(x, dtype=np.int64).reshape(-1)
    else:
        raise _bad(raw, f"{where} is a {type(x).__name__}; expected a list of integers")
    if a.size and (a.min() < 0 or a.max() >= limit):
        v = int(a.min()) if a.min() < 0 else int(a.max())
        raise _bad(raw, f"{where} has {what} {v} outside [0, {limit})")
    if np.unique(a).size != a.size:
        raise _bad(raw, f"{where} lists a {what} twice")
    return a


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 24 else text[:20] + "..."


def validate_neuron_sets(raw: RawNeuronSets, *, model: str | None = None,
                         langs: Sequence[str] | None = None,
                         refset: str | None = None) -> list[NeuronSet]:
    """The one check every imported or read neuron-set file goes through.

    - the model (``model``, else the file's) resolves in the registry, and what the file
      claims about it (``n_layers``, ``d_model``, ``d_ffn``) matches the registry;
    - every language name resolves in the registry, appears once, and belongs to the
      reference set when that is a registry one;
    - each language has exactly the model's layer count; each layer's ids are integers
      (no bool, float, complex, sparse or multi-dimensional tensors) in [0, d_ffn), unique.

    ``langs`` gives the order of a torch list (which has no names); for a file that names
    its languages it selects some of them (each must be in the file).

    Raises:
        NeuronSetFormatError (or UnknownModelError, UnknownLanguageError): one line naming
        the file and the problem.
    """
    from lape_hub.errors import UnknownLanguageError, UnknownModelError, UnknownRefsetError
    from lape_hub.languages import resolve_language
    from lape_hub.registry import resolve_model, resolve_refset

    head = raw.header if isinstance(raw.header, dict) else {}
    file_model = head.get("model")
    if file_model is not None and not isinstance(file_model, str):
        raise _bad(raw, "the model name is not a string")
    if not (model or file_model):
        raise _bad(raw, "the file does not name its model: pass --model")
    try:
        spec = resolve_model(model or file_model)
        other = resolve_model(file_model).alias if model and file_model else spec.alias
    except UnknownModelError as e:
        if model and e.name == model:
            raise
        raise _bad(raw, f"names model {_short(file_model)}, which is not in the registry") from None
    if other != spec.alias:
        raise _bad(raw, f"holds neuron sets of {other}, not {spec.alias}")
    for key in ("n_layers", "d_model", "d_ffn"):
        if key in head and head[key] is not None:
            if not _is_int(head[key]) or int(head[key]) != getattr(spec, key):
                raise _bad(raw, f"says {key} = {_short(head[key])}, {spec.alias} has "
                                f"{getattr(spec, key)}")
    refset_name = refset or head.get("refset") or ""
    if not isinstance(refset_name, str):
        raise _bad(raw, "the reference set name is not a string")

    # languages: the file's names, or --langs for a torch list
    items = raw.layers if raw.layers is not None else raw.pairs
    if not isinstance(items, (list, tuple)):
        raise _bad(raw, "expected one entry per language")
    if raw.langs is None:
        if not langs:
            raise _bad(raw, "the torch list format needs --langs (the file's language order)")
        names = list(langs)
        if len(items) != len(names):
            raise _bad(raw, f"holds {len(items)} languages but --langs names {len(names)}")
    else:
        names = raw.langs
        if not isinstance(names, (list, tuple)) or not all(isinstance(x, str) for x in names):
            raise _bad(raw, "the language list is not a list of names")
        if len(items) != len(names):
            raise _bad(raw, f"names {len(names)} languages but holds {len(items)} sets")
    if len(names) > MAX_LANGS:
        raise _bad(raw, f"holds {len(names)} languages (at most {MAX_LANGS})")
    codes = []
    for x in names:
        try:
            codes.append(resolve_language(x).code)
        except UnknownLanguageError:
            if raw.langs is None:  # the names came from --langs: the usual message
                raise
            raise _bad(raw, f"unknown language {_short(x)}") from None
    dup = sorted({c for c in codes if codes.count(c) > 1})
    if dup:
        raise _bad(raw, f"holds {', '.join(dup)} more than once")
    order = list(range(len(codes)))
    if raw.langs is not None and langs:
        wanted = [resolve_language(x).code for x in langs]
        twice = sorted({c for c in wanted if wanted.count(c) > 1})
        if twice:
            raise _bad(raw, f"--langs names {', '.join(twice)} more than once")
        missing = [c for c in wanted if c not in codes]
        if missing:
            raise _bad(raw, f"has no set for {', '.join(missing)} (it holds {', '.join(codes)})")
        order = [codes.index(c) for c in wanted]
    if refset_name:
        try:
            members = set(resolve_refset(refset_name).langs)
        except UnknownRefsetError:
            members = None  # a custom reference set of the catalog: nothing to check against
        if members is not None:
            outside = [codes[i] for i in order if codes[i] not in members]
            if outside:
                raise _bad(raw, f"{', '.join(outside)} not in reference set {refset_name}")

    out = []
    for i in order:
        code, item = codes[i], items[i]
        if raw.layers is not None:
            if not isinstance(item, (list, tuple)):
                raise _bad(raw, f"{code}: expected a list of layers, got {type(item).__name__}")
            if len(item) != spec.n_layers:
                raise _bad(raw, f"{code} has {len(item)} layers, {spec.alias} has {spec.n_layers}")
            arrays = [_index_array(raw, f"{code} layer {k}", t, spec.d_ffn, "neuron index")
                      for k, t in enumerate(item)]
        else:
            layer = _pair_column(raw, code, "layer", item[0], spec.n_layers)
            neuron = _pair_column(raw, code, "neuron", item[1], spec.d_ffn)
            arrays = [neuron[layer == k] for k in range(spec.n_layers)]
            for k, a in enumerate(arrays):
                if np.unique(a).size != a.size:
                    raise _bad(raw, f"{code} layer {k} lists a neuron index twice")
        out.append(NeuronSet(spec.alias, code, arrays, d_model=spec.d_model, d_ffn=spec.d_ffn,
                             refset=refset_name, total_params=spec.total_params))
    return out


def _pair_column(raw: RawNeuronSets, code: str, name: str, values, limit: int) -> np.ndarray:
    a = np.asarray(values)
    if a.dtype.kind not in "iu" or a.ndim != 1:
        raise _bad(raw, f"{code}: column {name!r} is not integers")
    if a.size and (int(a.min()) < 0 or int(a.max()) >= limit):
        v = int(a.min()) if int(a.min()) < 0 else int(a.max())
        raise _bad(raw, f"{code}: {name} index {v} outside [0, {limit})")
    return a.astype(np.int64)


def read_neuron_sets(path: str | os.PathLike, fmt: str | None = None, *,
                     model: str | None = None, langs: Sequence[str] | None = None,
                     refset: str | None = None) -> list[NeuronSet]:
    """Read a file written by ``write_neuron_sets`` or a published torch list, validated
    against the registry by :func:`validate_neuron_sets`.

    The torch format carries no metadata: ``model`` and ``langs`` (the file's language
    order) are required for it. Torch files are loaded with ``weights_only=True``.
    """
    path = Path(path)
    if path.is_dir():
        raise NeuronSetFormatError(f"{path} is a folder, not a neuron-set file")
    if not path.is_file():
        raise NeuronSetFormatError(f"no such file: {path}")
    fmt = format_of(path, fmt)
    raw = {"pt": _load_torch_list, "json": _load_json, "parquet": _load_parquet}[fmt](path)
    return validate_neuron_sets(raw, model=model, langs=langs, refset=refset)


def format_of(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The format of a neuron-set file: ``fmt``, else its suffix (.pt/.pth, .json,
    .parquet/.pq); a name that tells no format is refused.

    >>> format_of("llama-3.1-8b.top5.pth")
    'pt'
    """
    from lape_hub.output_paths import NEURON_SET_SUFFIXES

    if fmt is not None:
        if fmt not in FORMATS:
            raise NeuronSetFormatError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in NEURON_SET_SUFFIXES:
        raise NeuronSetFormatError(f"{path}: cannot tell the format from its name; pass "
                                   f"--format ({', '.join(FORMATS)})")
    return NEURON_SET_SUFFIXES[suffix]


def _load_torch_list(path: Path) -> RawNeuronSets:
    import pickle
    import warnings

    torch = require("torch", "build", purpose="reading torch (.pt) neuron-set files")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        msg = str(e).lower()
        kind = ("refused by weights_only: it references code" if "global" in msg
                else "corrupt or not a tensor list")
        raise NeuronSetFormatError(f"{path}: cannot load as a torch neuron list ({kind})") from None
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:  # a hostile file can make the loader raise anything
        raise NeuronSetFormatError(f"{path}: cannot load as a torch neuron list (corrupt or not "
                                   f"a tensor list: {type(e).__name__})") from None
    if not isinstance(obj, (list, tuple)) or not all(isinstance(x, (list, tuple)) for x in obj):
        raise NeuronSetFormatError(f"{path}: expected List[List[LongTensor]] (languages × layers)")
    return RawNeuronSets(path, None, layers=list(obj))


def _load_json(path: Path) -> RawNeuronSets:
    try:
        doc = json.loads(path.read_bytes())
    except OSError as e:
        raise NeuronSetFormatError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    except (ValueError, RecursionError, UnicodeDecodeError) as e:
        raise NeuronSetFormatError(f"{path}: not JSON ({type(e).__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("sets"), dict):
        raise NeuronSetFormatError(f"{path}: not a lape-hub neuron-set JSON (expected an object "
                                   "with a \"sets\" object)")
    names, layers = [], []
    for lang, v in doc["sets"].items():
        if not isinstance(v, dict) or "layers" not in v:
            raise NeuronSetFormatError(f"{path}: set {_short(lang)} has no \"layers\" list")
        names.append(lang)
        layers.append(v["layers"])
    header = {k: doc.get(k) for k in ("model", "refset", "n_layers", "d_model", "d_ffn")}
    return RawNeuronSets(path, names, layers=layers, header=header)


def _load_parquet(path: Path) -> RawNeuronSets:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
    except Exception as e:  # pyarrow raises several types for damaged files
        raise NeuronSetFormatError(f"{path}: not a Parquet file ({type(e).__name__})") from None
    try:
        header = json.loads((schema.metadata or {})[b"lape_hub"])
    except (KeyError, ValueError, RecursionError):
        raise NeuronSetFormatError(f"{path}: not a lape-hub neuron-set Parquet (no lape_hub "
                                   "header)") from None
    if not isinstance(header, dict):
        raise NeuronSetFormatError(f"{path}: its lape_hub header is not an object")
    types = {f.name: f.type for f in schema}
    want = {"lang": pa.types.is_string, "layer": pa.types.is_integer,
            "neuron": pa.types.is_integer}
    bad = [c for c, ok in want.items() if c not in types or not ok(types[c])]
    if bad:
        raise NeuronSetFormatError(f"{path}: not a lape-hub neuron-set Parquet (columns "
                                   f"{', '.join(bad)} missing or of the wrong type)")
    langs = header.get("langs")
    if not isinstance(langs, list) or not all(isinstance(x, str) for x in langs):
        raise NeuronSetFormatError(f"{path}: its header has no language list")
    if len(langs) > MAX_LANGS:
        raise NeuronSetFormatError(f"{path}: its header lists {len(langs)} languages (at most "
                                   f"{MAX_LANGS})")
    limit = max(len(langs), 1) * 1024 * 1024  # far above any model's layers × d_ffn
    if pf.metadata.num_rows > limit:
        raise NeuronSetFormatError(f"{path}: {pf.metadata.num_rows:,} rows is more than "
                                   f"{len(langs)} neuron sets can hold")
    try:
        table = pf.read(columns=["lang", "layer", "neuron"])
    except Exception as e:
        raise NeuronSetFormatError(f"{path}: damaged Parquet file ({type(e).__name__})") from None
    if table.column("layer").null_count or table.column("neuron").null_count \
            or table.column("lang").null_count:
        raise NeuronSetFormatError(f"{path}: has empty (null) cells")
    lang_col = np.asarray(table.column("lang").to_pylist(), dtype=object)
    stray = sorted(set(lang_col.tolist()) - set(langs))
    if stray:
        raise NeuronSetFormatError(f"{path}: rows of {_short(stray[0])}, which its header "
                                   "does not list")
    layer = table.column("layer").to_numpy()
    neuron = table.column("neuron").to_numpy()
    pairs = [(layer[lang_col == x], neuron[lang_col == x]) for x in langs]
    return RawNeuronSets(path, list(langs), pairs=pairs, header=header)


def neurons_entry(sets: Sequence[NeuronSet], *, revision: str, selection: str,
                  signature: str, params: dict, probs: Sequence[np.ndarray] | None = None,
                  entropies: Sequence[np.ndarray] | None = None) -> pa.Table:
    """Rows of the ``neurons`` catalog table for several languages of one entry."""
    base = neuron_sets_table(sets)
    n = base.num_rows
    now = datetime.now(timezone.utc)
    hashes = np.concatenate([[s.content_hash] * s.n_neurons for s in sets]) if n else []
    p = np.concatenate(probs).astype(np.float32) if probs is not None and n else None
    e = np.concatenate(entropies).astype(np.float32) if entropies is not None and n else None
    return pa.table({
        "model": base.column("model"), "revision": pa.array([revision] * n, pa.string()),
        "refset": base.column("refset"), "selection": pa.array([selection] * n, pa.string()),
        "lang": base.column("lang"), "layer": base.column("layer"),
        "neuron": base.column("neuron"),
        "p": pa.array(p, pa.float32()) if p is not None else pa.nulls(n, pa.float32()),
        "entropy": pa.array(e, pa.float32()) if e is not None else pa.nulls(n, pa.float32()),
        "signature": pa.array([signature] * n, pa.string()),
        "lape_hub_version": pa.array([__version__] * n, pa.string()),
        "params": pa.array([json.dumps(params, sort_keys=True)] * n, pa.string()),
        "created_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        "content_hash": pa.array(hashes, pa.string()),
    })


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_neuron_sets` did: ``status`` is ``"added"`` (new languages),
    ``"replaced"`` (``changed`` languages had other neurons; needs ``replace=True``) or
    ``"unchanged"`` (the catalog already held exactly these sets; nothing was written)."""

    sets: list
    status: str
    entry: str
    changed: list = field(default_factory=list)


def import_neuron_sets(catalog, path: str | os.PathLike, *, model: str, langs: Sequence[str],
                       refset: str, selection: str = "top0.05-f0.95-b0.95",
                       fmt: str | None = None, replace: bool = False) -> ImportResult:
    """Import a published neuron-set file into ``catalog`` (those languages only).

    The file is validated first (:func:`validate_neuron_sets`). Importing sets the entry
    already holds changes nothing; a language whose stored set differs is refused
    (:class:`~lape_hub.errors.CatalogConflictError`, naming the entry) unless ``replace``,
    and the entry file is then rewritten atomically under the catalog's lock.

    Example: the paper's Llama-3.1-8B release::

        import_neuron_sets(Catalog(), "llama-3.1-8b.top5.pth", model="llama-3.1-8b",
                           langs="mt af is cy mk lv lt sl sk et ka ne".split(), refset="paper-12")
    """
    from lape_hub.errors import CatalogConflictError
    from lape_hub.registry import resolve_model, resolve_refset
    from lape_hub.schemas import table_schema
    from lape_hub.signature import signature as make_signature

    import re

    spec = resolve_model(model)
    refset = resolve_refset(refset).name
    if not isinstance(selection, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}",
                                                          selection):
        raise NeuronSetFormatError(f"selection {_short(selection)} is not a selection key "
                                   "(letters, digits, '.', '_', '-'; e.g. top0.05-f0.95-b0.95)")
    sets = read_neuron_sets(path, fmt, model=spec.alias, langs=langs, refset=refset)
    key = {"model": spec.alias, "refset": refset, "selection": selection}
    entry = f"{spec.alias} · {refset} · {selection}"
    schema = table_schema("neurons")
    with catalog.lock():
        old = catalog.read("neurons", **key)
        stored = _stored_hashes(old, spec)
        new_sets = [s for s in sets if stored.get(s.lang) != s.content_hash]
        changed = [s.lang for s in new_sets if s.lang in stored]
        if not new_sets:
            return ImportResult(sets, "unchanged", entry)
        if changed and not replace:
            raise CatalogConflictError(
                f"catalog entry {entry} already holds other neurons for {', '.join(changed)}; pass "
                "--replace to replace them")
        sha = file_sha256(path)
        params = {"source": "import", "file": Path(path).name, "file_sha256": sha,
                  "langs": [s.lang for s in new_sets], "selection": selection}
        sig = make_signature(spec.alias, spec.revision, refset=refset, selection=selection,
                             src=f"import:{sha[:12]}")
        new = neurons_entry(new_sets, revision=spec.revision, selection=selection,
                            signature=sig, params=params).cast(schema.arrow)
        if old.num_rows:
            drop = {s.lang for s in new_sets}
            keep = np.array([x not in drop for x in old.column("lang").to_pylist()], dtype=bool)
            new = pa.concat_tables([old.filter(pa.array(keep)).cast(schema.arrow), new])
        catalog.write("neurons", new, key)
    return ImportResult(sets, "replaced" if changed else "added", entry, changed)


def _stored_hashes(old: pa.Table, spec) -> dict[str, str]:
    """lang -> content hash of the sets an entry holds; a language listed in the entry's
    params without rows holds the empty set."""
    out: dict[str, str] = {}
    if not old.num_rows:
        return out
    for lang, h in zip(old.column("lang").to_pylist(), old.column("content_hash").to_pylist()):
        out.setdefault(lang, h)
    empty = NeuronSet(spec.alias, "", [np.zeros(0, np.int64)] * spec.n_layers,
                      d_model=spec.d_model, d_ffn=spec.d_ffn).content_hash
    for text in set(old.column("params").to_pylist()):
        try:
            listed = json.loads(text).get("langs") or []
        except (ValueError, AttributeError):
            continue
        for lang in listed if isinstance(listed, list) else []:
            out.setdefault(str(lang), empty)
    return out
