"""Corpora: read one language's documents, tokenize them and pack them into fixed-length rows.

Sources (``source`` argument):

- a file: ``.txt`` (one document per line), ``.jsonl`` or ``.parquet`` (a text column,
  ``text_column``, default ``"text"``), ``.tsv`` (a ``text`` column, as in SIB-200);
- a folder with one entry per language: ``<folder>/<lang>/<split>.{tsv,txt,jsonl,parquet}``
  (the SIB-200 layout: ``sib200/npi_Deva/train.tsv``) or ``<folder>/<lang>.{txt,jsonl,parquet}``;
- a Hugging Face dataset (online only): ``"hf:<repo_id>"`` or a ``"owner/name"`` that is not
  a local path, read by streaming ``datasets.load_dataset`` (see :func:`iter_hf_documents`).
- a corpus id: a bare name such as ``sib200`` is looked up in the folders listed in
  ``$LAPE_HUB_CORPORA`` (``os.pathsep``-separated), so ``plan`` and ``build`` accept the same
  ``--corpus`` values (see :func:`locate_corpus`).

Packing concatenates documents (each starting with BOS when the tokenizer has one) into rows
of ``seq_len`` tokens, so no compute is spent on padding: only the last row may be padded.

Example::

    >>> from lape_hub.corpus import read_documents, tokenize_and_pack
    >>> docs = read_documents("../shared/data/sib200", "npi_Deva", split="train")  # doctest: +SKIP
    >>> packed = tokenize_and_pack(docs, tokenizer, seq_len=512, max_tokens=100_000)  # doctest: +SKIP
    >>> packed.input_ids.shape, packed.n_tokens                                       # doctest: +SKIP
    (torch.Size([60, 512]), 30412)
"""
from __future__ import annotations

import csv
import difflib
import hashlib
import itertools
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from lape_hub.errors import CorpusError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "PackedCorpus",
    "iter_documents",
    "iter_file_documents",
    "iter_hf_documents",
    "locate_corpus",
    "read_documents",
    "tokenize_and_pack",
]

_FILE_EXTS = (".tsv", ".txt", ".jsonl", ".parquet")
_HF_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# --------------------------------------------------------------------------- local files
def iter_file_documents(path: str | Path, *, text_column: str = "text") -> Iterator[str]:
    """Documents of one local file (empty lines/cells are skipped).

    >>> list(iter_file_documents("tests/fixtures/corpus/flat/eng_Latn.txt"))[:1]  # doctest: +SKIP
    ['The cat sat on the mat.']
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext == ".txt":
        with p.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield line.rstrip("\n")
    elif ext == ".tsv":
        csv.field_size_limit(sys.maxsize)
        with p.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t")
            if reader.fieldnames is None or text_column not in reader.fieldnames:
                raise CorpusError(f"{p}: no column {text_column!r} (columns: {reader.fieldnames})")
            for row in reader:
                if (row[text_column] or "").strip():
                    yield row[text_column]
    elif ext == ".jsonl":
        with p.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line).get(text_column)
                except (json.JSONDecodeError, AttributeError) as exc:
                    raise CorpusError(f"{p}:{n}: not a JSON object ({exc})") from exc
                if text is None:
                    raise CorpusError(f"{p}:{n}: no field {text_column!r}")
                if str(text).strip():
                    yield str(text)
    elif ext == ".parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(p)
        if text_column not in pf.schema_arrow.names:
            raise CorpusError(f"{p}: no column {text_column!r} (columns: {pf.schema_arrow.names})")
        for batch in pf.iter_batches(columns=[text_column], batch_size=4096):
            for text in batch.column(0).to_pylist():
                if text and str(text).strip():
                    yield str(text)
    else:
        raise CorpusError(f"{p}: unsupported corpus file type {ext!r} (use {', '.join(_FILE_EXTS)})")


def _language_file(folder: Path, lang: str, split: str) -> Path:
    """The file holding ``lang``/``split`` in a per-language folder; CorpusError if missing."""
    sub = folder / lang
    if sub.is_dir():
        for ext in _FILE_EXTS:
            if (sub / f"{split}{ext}").is_file():
                return sub / f"{split}{ext}"
        have = sorted(f.name for f in sub.iterdir() if f.suffix.lower() in _FILE_EXTS)
        raise CorpusError(f"{sub}: no {split!r} split (files: {', '.join(have) or 'none'})")
    for ext in _FILE_EXTS:
        if (folder / f"{lang}{ext}").is_file():
            return folder / f"{lang}{ext}"
    names = sorted({e.name if e.is_dir() else e.stem for e in folder.iterdir() if not e.name.startswith(".")})
    close = difflib.get_close_matches(lang, names, n=3, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise CorpusError(f"corpus {folder} has no language {lang!r} ({len(names)} entries{hint})")


# --------------------------------------------------------------------------- Hugging Face
#: Per-dataset defaults: config name from a FLORES-200 code, text column, split, and the
#: dataset's own names for lape-hub's splits (local corpora say ``dev``; SIB-200 on the Hub
#: says ``validation``).
HF_PRESETS: dict[str, dict[str, Any]] = {
    "cis-lmu/GlotCC-V1": {"config": lambda lang: lang.replace("_", "-"), "text_column": "content"},
    "openlanguagedata/flores_plus": {"config": lambda lang: lang, "text_column": "text", "split": "dev"},
    "Davlan/sib200": {"config": lambda lang: lang, "text_column": "text",
                      "split_names": {"dev": "validation"}},
}


def iter_hf_documents(
    repo_id: str,
    lang: str,
    split: str | None = None,
    *,
    text_column: str | None = None,
    config: str | None = None,
    revision: str | None = None,
) -> Iterator[str]:
    """Stream documents of a Hub dataset (needs network; ``datasets`` is imported lazily).

    The config defaults to the FLORES-200 code ``lang`` (GlotCC: ``npi-Deva``); presets in
    :data:`HF_PRESETS` give the text column and split of known datasets.

    >>> next(iter_hf_documents("cis-lmu/GlotCC-V1", "npi_Deva"))   # doctest: +SKIP
    """
    try:
        import datasets
    except ImportError as exc:
        raise CorpusError("reading Hub datasets needs the 'datasets' package: pip install datasets") from exc
    preset = HF_PRESETS.get(repo_id, {})
    name = config or preset.get("config", lambda x: x)(lang)
    col = text_column or preset.get("text_column", "text")
    split = split or preset.get("split", "train")
    split = preset.get("split_names", {}).get(split, split)
    try:
        ds = datasets.load_dataset(repo_id, name, split=split, streaming=True, revision=revision)
    except Exception as exc:  # datasets raises many types (network, missing config, auth)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CorpusError(
            f"cannot read Hub dataset {repo_id!r} config {name!r} (not a local file or folder either): {first}"
        ) from exc
    for row in ds:
        text = row.get(col)
        if text is None:
            raise CorpusError(f"Hub dataset {repo_id!r} has no column {col!r} (columns: {sorted(row)})")
        if str(text).strip():
            yield str(text)


# --------------------------------------------------------------------------- dispatch
CORPORA_ENV = "LAPE_HUB_CORPORA"


def locate_corpus(source: str | Path) -> str:
    """``source`` itself when it is a file, a folder or a Hub dataset name; a bare corpus id
    (``sib200``) is found in the folders of ``$LAPE_HUB_CORPORA``; otherwise one-line
    :class:`~lape_hub.errors.CorpusError` saying how to name it.

    >>> locate_corpus("cis-lmu/GlotCC-V1")
    'cis-lmu/GlotCC-V1'
    """
    s = os.fspath(source)
    p = Path(s).expanduser()
    if p.exists() or s.startswith("hf:") or _HF_NAME.match(s):
        return str(p) if p.exists() else s
    roots = [r for r in os.environ.get(CORPORA_ENV, "").split(os.pathsep) if r]
    if os.sep not in s and "/" not in s:
        for root in roots:
            base = Path(root).expanduser()
            for cand in [base / s, *(base / f"{s}{ext}" for ext in _FILE_EXTS)]:
                if cand.exists():
                    return str(cand)
    where = f"; looked in ${CORPORA_ENV} ({os.pathsep.join(roots)})" if roots else \
        f"; to use the id, set ${CORPORA_ENV} to the folder that holds {s}"
    raise CorpusError(f"corpus {s!r} not found: not a file, folder or Hub dataset name{where}")


def iter_documents(
    source: str | Path,
    lang: str | None = None,
    split: str = "train",
    *,
    text_column: str | None = None,
) -> Iterator[str]:
    """Documents of ``lang`` from a file, a per-language folder or a Hub dataset (lazily).

    ``text_column`` defaults to ``text`` for local files and to the preset of a known Hub
    dataset (:data:`HF_PRESETS`).
    """
    s = locate_corpus(source)
    p = Path(s).expanduser()
    if p.is_file():
        return iter_file_documents(p, text_column=text_column or "text")
    if p.is_dir():
        if lang is None:
            raise CorpusError(f"{p} is a folder of languages; name the language")
        return iter_file_documents(_language_file(p, lang, split), text_column=text_column or "text")
    if s.startswith("hf:") or _HF_NAME.match(s):
        if lang is None:
            raise CorpusError(f"Hub dataset {s!r}: name the language")
        repo = s.removeprefix("hf:")
        return iter_hf_documents(repo, lang, split, text_column=text_column)
    raise CorpusError(f"corpus {s!r} not found (not a file, folder or Hub dataset name)")


def read_documents(
    source: str | Path,
    lang: str | None = None,
    split: str = "train",
    *,
    text_column: str | None = None,
    max_documents: int | None = None,
) -> list[str]:
    """A list of documents of ``lang`` (see :func:`iter_documents`); at most ``max_documents``.

    >>> len(read_documents("../shared/data/sib200", "npi_Deva", "test"))  # doctest: +SKIP
    204
    """
    it = iter_documents(source, lang, split, text_column=text_column)
    return list(itertools.islice(it, max_documents) if max_documents is not None else it)


# --------------------------------------------------------------------------- packing
@dataclass(frozen=True)
class PackedCorpus:
    """Token rows ready for the model: ``input_ids``/``attention_mask`` ``[n_seq, seq_len]``.

    ``n_tokens`` is the number of real (unpadded) tokens; only the last row can be padded.
    """

    input_ids: "torch.Tensor"
    attention_mask: "torch.Tensor"
    n_tokens: int
    n_documents: int
    truncated: bool = False

    @property
    def n_sequences(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])

    def fingerprint(self) -> str:
        """A short hash of the tokens and mask (identifies the corpus in checkpoints)."""
        h = hashlib.sha256()
        h.update(str(tuple(self.input_ids.shape)).encode())
        h.update(self.input_ids.contiguous().numpy().tobytes())
        h.update(self.attention_mask.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def tokenize_and_pack(
    docs: Iterable[str],
    tokenizer: "PreTrainedTokenizerBase",
    seq_len: int,
    max_tokens: int | None = None,
    *,
    min_tokens: int | None = None,
    add_bos: bool = True,
    lang: str | None = None,
    batch_docs: int = 1000,
) -> PackedCorpus:
    """Tokenize documents and pack them into rows of ``seq_len`` tokens.

    Each document gets BOS first (if the tokenizer has one and ``add_bos``); documents are
    concatenated and cut into rows, long documents continuing on the next row. Reading stops
    once ``max_tokens`` (the per-language budget) is reached. Fewer than ``min_tokens``
    (default: ``seq_len``) real tokens raise :class:`~lape_hub.errors.CorpusError`.

    >>> packed = tokenize_and_pack(["a b", "c"], tok, seq_len=4, min_tokens=1)  # doctest: +SKIP
    >>> packed.attention_mask.tolist()                                          # doctest: +SKIP
    [[1, 1, 1, 1], [1, 0, 0, 0]]
    """
    import torch

    if seq_len < 1:
        raise ValueError("seq_len must be >= 1")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    min_tokens = seq_len if min_tokens is None else min_tokens
    bos = tokenizer.bos_token_id if add_bos else None
    ids: list[int] = []
    n_docs = 0
    truncated = False
    it = iter(docs)
    while max_tokens is None or len(ids) < max_tokens:
        chunk = list(itertools.islice(it, batch_docs))
        if not chunk:
            break
        encoded = tokenizer(chunk, add_special_tokens=False)["input_ids"]
        for k, doc_ids in enumerate(encoded):
            if not doc_ids:
                continue
            if bos is not None:
                ids.append(bos)
            ids.extend(doc_ids)
            n_docs += 1
            if max_tokens is not None and len(ids) >= max_tokens:
                more = k + 1 < len(encoded) or next(it, None) is not None
                truncated = len(ids) > max_tokens or more
                break
    if max_tokens is not None and len(ids) > max_tokens:
        del ids[max_tokens:]
    what = f"corpus for {lang!r}" if lang else "corpus"
    if len(ids) < max(min_tokens, 1):
        raise CorpusError(
            f"{what} is too short: {len(ids)} tokens in {n_docs} documents, need at least {max(min_tokens, 1)}"
        )
    n = len(ids)
    n_seq = -(-n // seq_len)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    flat = torch.full((n_seq * seq_len,), pad, dtype=torch.long)
    flat[:n] = torch.tensor(ids, dtype=torch.long)
    mask = torch.zeros(n_seq * seq_len, dtype=torch.long)
    mask[:n] = 1
    return PackedCorpus(flat.view(n_seq, seq_len), mask.view(n_seq, seq_len), n, n_docs, truncated)
