"""Activation counts: for each FFN neuron, on how many of a language's tokens its gate fires.

``over_zero[l, i]`` is the number of (unpadded) tokens on which ``act(gate(x)) > 0`` for
neuron ``i`` of layer ``l``; with ``n_tokens`` it gives the activation probability LAPE uses.
Counting runs the decoder trunk only (no LM head), hooks the activation modules and sums on
the model's device in int64. It is resumable (atomic checkpoints every ``checkpoint_every``
sequences), halves the batch on out-of-memory, and shards over ranks under ``torchrun``.

Example::

    >>> from lape_hub.activation_counts import count_activations
    >>> counts = count_activations(model, packed, batch_size=8,
    ...                            checkpoint_path="npi.ckpt.npz")   # doctest: +SKIP
    >>> counts.over_zero.shape, counts.n_tokens                      # doctest: +SKIP
    ((18, 2048), 100000)

Scale-out (each rank counts a contiguous shard of the sequences, counts are all-reduced)::

    torchrun --nproc-per-node 4 $(which lape-hub) build ...   # the CLI calls init_distributed()
"""
from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from lape_hub.atomic import atomic_path
from lape_hub.corpus import PackedCorpus
from lape_hub.errors import LapeHubError
from lape_hub.ffn import find_ffn_layers, hook_post_activations, trunk

__all__ = ["ActivationCounts", "DistInfo", "count_activations", "fastest_threads", "init_distributed",
           "set_threads"]

log = logging.getLogger(__name__)
_CKPT_VERSION = 1


@dataclass
class ActivationCounts:
    """Per-neuron firing counts over ``n_tokens`` tokens (``over_zero``: int64 ``[n_layers, d_ffn]``).

    >>> c = ActivationCounts(4, np.array([[0, 2], [4, 1]]))
    >>> c.probabilities().tolist()
    [[0.0, 0.5], [1.0, 0.25]]
    """

    n_tokens: int
    over_zero: np.ndarray
    n_sequences: int = 0

    def __post_init__(self) -> None:
        self.over_zero = np.asarray(self.over_zero, dtype=np.int64)
        if self.over_zero.ndim != 2:
            raise ValueError(f"over_zero must be [n_layers, d_ffn], got shape {self.over_zero.shape}")

    @property
    def n_layers(self) -> int:
        return int(self.over_zero.shape[0])

    @property
    def d_ffn(self) -> int:
        return int(self.over_zero.shape[1])

    def probabilities(self) -> np.ndarray:
        """``over_zero / n_tokens`` as float64 (the activation probability per neuron)."""
        return self.over_zero / max(self.n_tokens, 1)

    def __add__(self, other: "ActivationCounts") -> "ActivationCounts":
        """Counts of two disjoint token sets (e.g. two corpora of one language) combined."""
        if self.over_zero.shape != other.over_zero.shape:
            raise ValueError(f"shape {self.over_zero.shape} != {other.over_zero.shape}")
        return ActivationCounts(
            self.n_tokens + other.n_tokens, self.over_zero + other.over_zero, self.n_sequences + other.n_sequences
        )

    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` atomically (temp file + rename)."""
        _atomic_savez(Path(path), n_tokens=self.n_tokens, over_zero=self.over_zero, n_sequences=self.n_sequences)

    @classmethod
    def load(cls, path: str | Path) -> "ActivationCounts":
        with np.load(path) as z:
            return cls(int(z["n_tokens"]), z["over_zero"], int(z["n_sequences"]))


def _atomic_savez(path: Path, **arrays: object) -> None:
    # through a file handle: np.savez appends ".npz" to names that lack it
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


# --------------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly one-process) run."""

    rank: int
    world_size: int
    local_rank: int
    device: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the ``torchrun`` process group (env:// rendezvous) if launched by it; else a no-op.

    The backend is NCCL when CUDA is available and gloo otherwise. Returns the rank, world
    size and the device this rank should load the model on.

    >>> info = init_distributed()   # plain `python`: one process
    >>> info.rank, info.world_size, info.is_main
    (0, 1, True)
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        backend = backend or ("nccl" if cuda else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    rank, world = _dist_world()
    return DistInfo(rank, world, local_rank, f"cuda:{local_rank}" if cuda else "cpu")


def _dist_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1



# --------------------------------------------------------------------------- threads
def _thread_candidates(n_cpus: int) -> list[int]:
    out = sorted({1, n_cpus, *[2**k for k in range(1, 8) if 2**k < n_cpus]})
    return [n for n in out if 1 <= n <= n_cpus]


def _time_threads(n: int, dtype: torch.dtype, repeats: int = 3) -> float:
    """Seconds for a decoder-FFN-shaped matmul (256 tokens × 640 → 2048) on ``n`` threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(256, 640, generator=g).to(dtype)
        w = torch.randn(2048, 640, generator=g).to(dtype)
        x @ w.T  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(4):
                x @ w.T
            best = min(best, time.perf_counter() - t0)
        return best
    finally:
        torch.set_num_threads(before)


def fastest_threads(*, dtype: str = "bfloat16", cache: bool = True) -> int:
    """The CPU thread count that ran a small FFN matmul fastest on this machine.

    Measured once (well under a second) and cached in ``<user cache>/threads.json`` per
    machine (CPU count, processor, torch version, dtype); delete the file to measure again.
    On a loaded machine fewer threads than cores often win: this picks by measurement.

    >>> 1 <= fastest_threads(cache=False) <= (os.cpu_count() or 1)
    True
    """
    from lape_hub.paths import cache_dir

    n_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    key = f"{n_cpus}|{platform.processor() or platform.machine()}|{torch.__version__}|{dtype}"
    path = cache_dir() / "threads.json"
    known: dict[str, int] = {}
    if cache and path.is_file():
        try:
            known = json.loads(path.read_text())
            if isinstance(known.get(key), int) and 1 <= known[key] <= n_cpus:
                return known[key]
        except (OSError, ValueError, AttributeError):
            known = {}
    tdtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    times = {n: _time_threads(n, tdtype) for n in _thread_candidates(n_cpus)}
    best = min(times, key=lambda n: (times[n], n))
    log.info("thread counts timed: %s; using %d", {n: round(t, 4) for n, t in times.items()}, best)
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                Path(tmp).write_text(json.dumps({**known, key: best}, indent=1))
        except OSError:
            pass  # an unwritable cache only costs a re-measurement next time
    return best


def set_threads(threads: int | None = None, *, dtype: str = "bfloat16") -> int:
    """Use ``threads`` CPU threads (``None``: :func:`fastest_threads`); returns the count.

    >>> set_threads(1)
    1
    """
    if threads is not None and threads < 1:
        raise ValueError("threads must be >= 1")
    n = threads if threads is not None else fastest_threads(dtype=dtype)
    torch.set_num_threads(n)
    return n


# --------------------------------------------------------------------------- counting
def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "not enough memory" in msg)


def _model_device(module: nn.Module) -> torch.device:
    emb = module.get_input_embeddings() if hasattr(module, "get_input_embeddings") else None
    if emb is not None and getattr(emb, "weight", None) is not None:
        return emb.weight.device
    return next(module.parameters()).device


class _Checkpoint:
    """Per-rank counting state on disk: counts + position, written atomically."""

    def __init__(self, path: Path, fingerprint: str, shape: tuple[int, int], rank: int, world: int):
        self.path = path if world == 1 else path.with_name(f"{path.name}.rank{rank}-of-{world}")
        self.fingerprint, self.shape, self.world = fingerprint, shape, world

    def load(self) -> tuple[int, np.ndarray, int, int] | None:
        """``(position, over_zero, n_tokens, n_sequences)`` or ``None`` if there is none."""
        if not self.path.exists():
            return None
        try:
            with np.load(self.path) as z:
                meta = (int(z["version"]), str(z["fingerprint"]), tuple(z["over_zero"].shape), int(z["world"]))
                state = (int(z["position"]), z["over_zero"].astype(np.int64), int(z["n_tokens"]), int(z["n_sequences"]))
        except Exception as exc:  # unreadable file: say which one, no traceback
            raise LapeHubError(f"checkpoint {self.path} is unreadable ({exc}); delete it to start over") from exc
        if meta != (_CKPT_VERSION, self.fingerprint, self.shape, self.world):
            raise LapeHubError(
                f"checkpoint {self.path} was made for another corpus, model or world size; "
                "delete it or choose another checkpoint path"
            )
        return state

    def save(self, position: int, over_zero: torch.Tensor, n_tokens: int, n_sequences: int) -> None:
        _atomic_savez(
            self.path,
            version=_CKPT_VERSION,
            fingerprint=self.fingerprint,
            world=self.world,
            position=position,
            over_zero=over_zero.cpu().numpy(),
            n_tokens=n_tokens,
            n_sequences=n_sequences,
        )


def count_activations(
    model: nn.Module,
    packed: PackedCorpus,
    *,
    batch_size: int = 8,
    checkpoint_path: str | Path | None = None,
    checkpoint_every: int = 256,
    progress: bool = True,
    desc: str | None = None,
    skip_token_id: int | None = None,
) -> ActivationCounts:
    """Count, per FFN neuron, the tokens of ``packed`` on which ``act(gate(x)) > 0``.

    - ``skip_token_id`` (e.g. the tokenizer's BOS id): positions holding this token still go
      through the model (the other tokens attend to them) but are not counted, neither in
      ``over_zero`` nor in ``n_tokens``.
    - Counting is strict (``> 0``): an activation of exactly 0 or -0.0 (GELU returns -0.0
      for inputs below about -12) is not a firing.

    - Runs ``trunk(model)`` only (no LM head) in inference mode, ``batch_size`` rows at a time.
    - ``checkpoint_path``: counts and position are saved every ``checkpoint_every`` sequences
      (rounded up to whole batches) and at the end; a rerun (e.g. after SIGKILL) continues
      from there and gives counts identical to an uninterrupted run with the same
      ``batch_size`` (same batches, same arithmetic). A finished checkpoint is kept, so
      rerunning returns at once. Under torchrun each rank has its own file
      (``<path>.rank<r>-of-<world>``). A checkpoint of another corpus, model shape or world
      size raises :class:`~lape_hub.errors.LapeHubError`.
    - Out of memory on a batch: the batch size is halved (logged as a warning) and the
      batch retried; at batch size 1 a :class:`~lape_hub.errors.LapeHubError` is raised.
    - Under ``torch.distributed`` (see :func:`init_distributed`) each rank counts a
      contiguous shard of the rows and the counts are all-reduced: every rank returns the
      totals.

    >>> counts = count_activations(model, packed, batch_size=4)   # doctest: +SKIP
    >>> counts.probabilities().max() <= 1.0                      # doctest: +SKIP
    True
    """
    if batch_size < 1 or checkpoint_every < 1:
        raise ValueError("batch_size and checkpoint_every must be >= 1")
    layers = find_ffn_layers(model)
    body = trunk(model)
    device = _model_device(body)
    n_layers, d_ffn = len(layers), layers[0].d_ffn
    if any(layer.d_ffn != d_ffn for layer in layers):
        raise LapeHubError("layers with different FFN widths are not supported by count_activations")
    rank, world = _dist_world()
    rows = torch.tensor_split(torch.arange(packed.n_sequences), world)[rank]
    lo, n_local = (int(rows[0]) if len(rows) else 0), len(rows)
    ids_all = packed.input_ids[lo : lo + n_local]
    mask_all = packed.attention_mask[lo : lo + n_local]
    counted_all = mask_all if skip_token_id is None else mask_all * (ids_all != skip_token_id)
    tokens_per_row = counted_all.sum(dim=1).tolist()

    counts = torch.zeros(n_layers, d_ffn, dtype=torch.int64, device=device)
    pos, n_tokens, n_seqs = 0, 0, 0
    ckpt = None
    if checkpoint_path is not None:
        dtype = next(body.parameters()).dtype
        fingerprint = f"{packed.fingerprint()}|{dtype}|skip={skip_token_id}"
        ckpt = _Checkpoint(Path(checkpoint_path), fingerprint, (n_layers, d_ffn), rank, world)
        state = ckpt.load()
        if state is not None:
            pos, oz, n_tokens, n_seqs = state
            counts.copy_(torch.from_numpy(oz))
            if pos:
                log.info("resuming activation counting at sequence %d of %d from %s", pos, n_local, ckpt.path)

    batch_counts = torch.zeros_like(counts)  # this batch only: dropped if the batch fails
    token_mask: list[torch.Tensor | None] = [None]

    def on_activation(layer: int, act: torch.Tensor) -> None:
        fired = (act > 0).reshape(-1, act.shape[-1])
        if token_mask[0] is not None:
            fired = fired & token_mask[0]
        batch_counts[layer] += fired.sum(dim=0, dtype=torch.int32).to(device)

    from tqdm.auto import tqdm

    bar = tqdm(
        total=sum(tokens_per_row),
        initial=sum(tokens_per_row[:pos]),
        unit="tok",
        unit_scale=True,
        desc=desc or ("counting" if world == 1 else f"counting (rank 0 of {world})"),
        disable=not progress or rank != 0,
    )
    bs = batch_size
    next_ckpt = pos + checkpoint_every
    was_training = body.training
    body.eval()
    try:
        with torch.inference_mode(), hook_post_activations(layers, on_activation):
            while pos < n_local:
                end = min(pos + bs, n_local)
                mask = mask_all[pos:end]
                counted = counted_all[pos:end]
                ntok = sum(tokens_per_row[pos:end])
                ids = ids_all[pos:end].to(device)
                dev_mask = None if bool(mask.all()) else mask.to(device)
                token_mask[0] = None if ntok == counted.numel() else \
                    counted.to(device).reshape(-1, 1).bool()
                batch_counts.zero_()
                try:
                    body(input_ids=ids, attention_mask=dev_mask, use_cache=False)
                except Exception as exc:
                    if not _is_oom(exc):
                        raise
                    del exc
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    if bs == 1:
                        raise LapeHubError(
                            f"out of memory counting activations even with batch size 1 "
                            f"(seq_len {packed.seq_len}); use a shorter --seq-len or a bigger device"
                        ) from None
                    log.warning("out of memory at batch size %d; halving it to %d and going on", bs, bs // 2)
                    bs //= 2
                    continue
                counts += batch_counts
                n_tokens += ntok
                n_seqs += end - pos
                pos = end
                bar.update(ntok)
                if ckpt is not None and (pos >= next_ckpt or pos == n_local):
                    ckpt.save(pos, counts, n_tokens, n_seqs)
                    next_ckpt = pos + checkpoint_every
    finally:
        bar.close()
        body.train(was_training)
    if ckpt is not None and n_local == 0 and not ckpt.path.exists():
        ckpt.save(0, counts, 0, 0)

    if world > 1:
        comm = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        totals = counts.to(comm)
        scalars = torch.tensor([n_tokens, n_seqs], dtype=torch.int64, device=comm)
        dist.all_reduce(totals)
        dist.all_reduce(scalars)
        counts, (n_tokens, n_seqs) = totals, scalars.tolist()
    return ActivationCounts(int(n_tokens), counts.cpu().numpy(), int(n_seqs))
