"""Which number format and how many threads a heavy command should use on this machine.

``--dtype auto`` means bfloat16 where the hardware runs it fast (CUDA GPUs with bf16, CPUs with
the ``avx512_bf16`` or ``amx_bf16`` instructions) and float32 elsewhere: on a CPU without bf16
instructions PyTorch emulates bfloat16 matrix products and they are *slower* than float32.

Example::

    >>> from lape_hub.device import default_dtype, resolve_dtype_name
    >>> default_dtype("cpu") in ("bfloat16", "float32")
    True
    >>> resolve_dtype_name("float32", "cpu")
    'float32'
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from lape_hub.errors import LapeHubError

__all__ = ["DTYPE_CHOICES", "apply_threads", "cpu_flags", "default_dtype", "fast_bf16", "resolve_dtype_name"]

DTYPE_CHOICES = ("auto", "float32", "bfloat16")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where that file does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") or line.startswith("Features"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def fast_bf16(device: str = "cpu") -> bool:
    """True when ``device`` computes in bfloat16 natively (so bf16 is faster than float32).

    >>> fast_bf16("cpu") == bool(set(BF16_CPU_FLAGS) & cpu_flags())
    True
    """
    kind = str(device).split(":", 1)[0]
    if kind == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind == "cpu":
        return bool(set(BF16_CPU_FLAGS) & cpu_flags())
    return False


def default_dtype(device: str = "cpu") -> str:
    """``"bfloat16"`` where :func:`fast_bf16`, else ``"float32"`` (what ``--dtype auto`` picks)."""
    return "bfloat16" if fast_bf16(device) else "float32"


def resolve_dtype_name(choice: str | None, device: str = "cpu") -> str:
    """``auto``/``None`` -> :func:`default_dtype`; ``float32``/``bfloat16`` as given.

    >>> resolve_dtype_name("bf16", "cpu")
    'bfloat16'
    """
    name = (choice or "auto").strip().lower()
    name = {"fp32": "float32", "f32": "float32", "bf16": "bfloat16"}.get(name, name)
    if name == "auto":
        return default_dtype(device)
    if name not in DTYPE_CHOICES:
        raise LapeHubError(f"unknown dtype {choice!r}; use one of {', '.join(DTYPE_CHOICES)}")
    return name


def apply_threads(threads: int | None, *, device: str = "cpu", dtype: str = "float32") -> int:
    """Set torch's intra-op CPU threads; return the count.

    ``None`` on a CPU device: the count that ran an FFN-shaped product fastest here, measured
    once and cached (:func:`lape_hub.activation_counts.fastest_threads`; on a machine shared
    with other jobs fewer threads than cores often win). ``None`` elsewhere: torch's default.
    """
    import torch

    if threads is not None:
        if threads < 1:
            raise LapeHubError("--threads must be >= 1")
        torch.set_num_threads(threads)
    elif str(device).split(":", 1)[0] == "cpu":
        from lape_hub.activation_counts import fastest_threads

        torch.set_num_threads(fastest_threads(dtype=dtype))
    return torch.get_num_threads()


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
