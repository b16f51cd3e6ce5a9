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
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa

from lape_hub import __version__
from lape_hub.atomic import atomic_path
from lape_hub.digest import file_sha256
from lape_hub.errors import NeuronSetFormatError
from lape_hub.neuron_set import NeuronSet

FORMATS = ("parquet", "json", "pt")


def format_from_path(path: str | os.PathLike, fmt: str | None = None) -> str:
    if fmt:
        return fmt
    suffix = Path(path).suffix.lower().lstrip(".")
    return {"pth": "pt", "pq": "parquet"}.get(suffix, suffix if suffix in FORMATS else "parquet")


def _atomic(path: Path, write) -> None:
    with atomic_path(path, fsync=False) as tmp:
        write(tmp)


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
    fmt = format_from_path(path, fmt)
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
        import torch

        obj = [[torch.as_tensor(a, dtype=torch.long) for a in s.layers] for s in sets]
        _atomic(path, lambda p: torch.save(obj, p))
    else:
        raise NeuronSetFormatError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def read_neuron_sets(path: str | os.PathLike, fmt: str | None = None, *,
                     model: str | None = None, langs: Sequence[str] | None = None,
                     refset: str = "") -> list[NeuronSet]:
    """Read a file written by ``write_neuron_sets`` or a published torch list.

    The torch format carries no metadata: ``model`` and ``langs`` (the file's language
    order) are required for it and checked against the registry.
    """
    path = Path(path)
    fmt = format_from_path(path, fmt)
    if not path.is_file():
        raise NeuronSetFormatError(f"no such file: {path}")
    if fmt == "pt":
        if not model or not langs:
            raise NeuronSetFormatError("the torch list format needs --model and --langs")
        return _read_torch_list(path, model, langs, refset)
    if fmt == "json":
        try:
            doc = json.loads(path.read_text())
            return [NeuronSet(doc["model"], lang, [np.asarray(a, np.int64) for a in v["layers"]],
                              d_model=doc["d_model"], d_ffn=doc["d_ffn"], refset=doc["refset"])
                    for lang, v in doc["sets"].items()]
        except (ValueError, KeyError, TypeError) as e:
            raise NeuronSetFormatError(f"{path}: not a lape-hub neuron-set JSON ({e})") from None
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
            header = json.loads(table.schema.metadata[b"lape_hub"])
        except (pa.ArrowInvalid, OSError, KeyError, TypeError, ValueError) as e:
            raise NeuronSetFormatError(f"{path}: not a lape-hub neuron-set Parquet ({e})") from None
        lang_col = table.column("lang").to_numpy(zero_copy_only=False)
        layer = table.column("layer").to_numpy()
        neuron = table.column("neuron").to_numpy()
        return [NeuronSet.from_pairs(header["model"], lang, layer[lang_col == lang],
                                     neuron[lang_col == lang], n_layers=header["n_layers"],
                                     d_model=header["d_model"], d_ffn=header["d_ffn"],
                                     refset=header["refset"])
                for lang in header["langs"]]
    raise NeuronSetFormatError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def _read_torch_list(path: Path, model: str, langs: Sequence[str], refset: str) -> list[NeuronSet]:
    import pickle

    import torch

    from lape_hub.languages import resolve_language
    from lape_hub.registry import resolve_model

    spec = resolve_model(model)
    codes = [resolve_language(x).code for x in langs]
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as e:
        kind = ("refused by weights_only: it references code" if "global" in str(e).lower()
                else "corrupt or not a tensor list")
        raise NeuronSetFormatError(f"{path}: cannot load as a torch neuron list ({kind}: "
                                   f"{type(e).__name__})") from None
    if not isinstance(obj, (list, tuple)) or not all(isinstance(x, (list, tuple)) for x in obj):
        raise NeuronSetFormatError(f"{path}: expected List[List[LongTensor]] (languages × layers)")
    if len(obj) != len(codes):
        raise NeuronSetFormatError(f"{path} holds {len(obj)} languages but --langs names {len(codes)}")
    out = []
    for code, layers in zip(codes, obj):
        if len(layers) != spec.n_layers:
            raise NeuronSetFormatError(f"{path}: {code} has {len(layers)} layers, {spec.alias} "
                                       f"has {spec.n_layers}")
        arrays = []
        for i, t in enumerate(layers):
            if not isinstance(t, torch.Tensor) or t.is_floating_point():
                raise NeuronSetFormatError(f"{path}: {code} layer {i} is not an integer tensor")
            a = t.reshape(-1).numpy().astype(np.int64)
            if a.size and (a.min() < 0 or a.max() >= spec.d_ffn):
                raise NeuronSetFormatError(f"{path}: {code} layer {i} has neuron index "
                                           f"{int(a.max())} outside [0, {spec.d_ffn})")
            arrays.append(a)
        out.append(NeuronSet(spec.alias, code, arrays, d_model=spec.d_model, d_ffn=spec.d_ffn,
                             refset=refset, total_params=spec.total_params))
    return out


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


def import_neuron_sets(catalog, path: str | os.PathLike, *, model: str, langs: Sequence[str],
                       refset: str, selection: str = "top0.05-f0.95-b0.95",
                       fmt: str | None = None) -> list[NeuronSet]:
    """Import a published neuron-set file into ``catalog`` (replacing those languages only).

    Example: the paper's Llama-3.1-8B release::

        import_neuron_sets(Catalog(), "llama-3.1-8b.top5.pth", model="llama-3.1-8b",
                           langs="mt af is cy mk lv lt sl sk et ka ne".split(), refset="paper-12")
    """
    import pyarrow.compute as pc

    from lape_hub.registry import resolve_model, resolve_refset
    from lape_hub.signature import signature as make_signature

    spec = resolve_model(model)
    refset = resolve_refset(refset).name
    sets = read_neuron_sets(path, fmt, model=spec.alias, langs=langs, refset=refset)
    if any(s.model != spec.alias for s in sets):
        raise NeuronSetFormatError(f"{path} holds neuron sets of another model")
    sets = [NeuronSet(spec.alias, s.lang, s.layers, d_model=spec.d_model, d_ffn=spec.d_ffn,
                      refset=refset, total_params=spec.total_params) for s in sets]
    if any(s.n_layers != spec.n_layers for s in sets):
        raise NeuronSetFormatError(f"{path}: layer count differs from {spec.alias}'s {spec.n_layers}")
    sha = file_sha256(path)
    params = {"source": "import", "file": Path(path).name, "file_sha256": sha,
              "langs": [s.lang for s in sets], "selection": selection}
    sig = make_signature(spec.alias, spec.revision, refset=refset, selection=selection,
                         src=f"import:{sha[:12]}")
    new = neurons_entry(sets, revision=spec.revision, selection=selection, signature=sig,
                        params=params)
    key = {"model": spec.alias, "refset": refset, "selection": selection}
    with catalog.lock():
        old = catalog.read("neurons", **key)
        if old.num_rows:
            keep = pc.invert(pc.is_in(old.column("lang"), pa.array([s.lang for s in sets])))
            new = pa.concat_tables([old.filter(keep), new])
        catalog.write("neurons", new, key)
    return sets
