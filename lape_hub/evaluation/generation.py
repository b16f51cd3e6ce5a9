"""Greedy generation for the evaluation tasks: batched, left-padded, with a KV cache.

The paper's settings: greedy decoding, repetition penalty 1.1, at most 128 new tokens, and
generation stops at the first stop string. Prompts are sorted by length and run in batches
through ``transformers``' ``generate`` (which keeps a KV cache), left-padded so every row's
new tokens start at the same position; outputs come back in the prompts' order. bfloat16 is
used where the device supports it (:func:`preferred_dtype`).

Example::

    >>> out = generate(model, tok, ["Translate to English.\\nFrench: Bonjour.\\nEnglish:"])  # doctest: +SKIP
    >>> out.texts, round(out.tokens_per_s)                                                    # doctest: +SKIP
    ([' Hello.'], 212)
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn
    from transformers import PreTrainedTokenizerBase

__all__ = ["STOP_STRINGS", "GenerationSettings", "GenerationOutput", "generate",
           "ensure_pad_token", "left_padding", "preferred_dtype"]

#: Generation ends at the first of these (the answer is one line).
STOP_STRINGS: tuple[str, ...] = ("\n", "</s>", "<end_of_turn>", "<|eot_id|>", "<|im_end|>")


@dataclass(frozen=True)
class GenerationSettings:
    """How text is generated (stored with every generated result).

    >>> GenerationSettings().to_dict()["repetition_penalty"]
    1.1
    """

    max_new_tokens: int = 128
    repetition_penalty: float = 1.1
    stop: tuple[str, ...] = STOP_STRINGS
    batch_size: int = 16
    greedy: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass
class GenerationOutput:
    """Generated continuations (stop strings cut off), in the prompts' order."""

    texts: list[str]
    new_tokens: int
    seconds: float
    per_prompt_tokens: list[int] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


def preferred_dtype(device: str) -> str:
    """``"bfloat16"`` where the device runs it natively (CUDA with bf16, recent CPUs are
    emulated and slow, so ``"float32"`` there).

    >>> preferred_dtype("cpu")
    'float32'
    """
    import torch

    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"


def ensure_pad_token(tokenizer: "PreTrainedTokenizerBase") -> int:
    """The pad token id; a tokenizer without one pads with EOS (or UNK, or id 0).

    Padding is always masked out, so which id pads does not change the results.
    """
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    for name in ("eos_token", "unk_token", "bos_token"):
        if getattr(tokenizer, name, None) is not None:
            tokenizer.pad_token = getattr(tokenizer, name)
            return int(tokenizer.pad_token_id)
    return 0


@contextlib.contextmanager
def left_padding(tokenizer: "PreTrainedTokenizerBase") -> Iterator[None]:
    """Pad on the left for the duration (restores the tokenizer's setting)."""
    old = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield
    finally:
        tokenizer.padding_side = old


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first stop string (leading whitespace kept for the caller).

    >>> cut_at_stop(" Hello.\\nFrench:", ["\\n"])
    ' Hello.'
    """
    stripped = text.lstrip()
    offset = len(text) - len(stripped)
    cut = len(stripped)
    for s in stop:
        i = stripped.find(s)
        if i >= 0:
            cut = min(cut, i)
    return text[:offset + cut]


def _batches(order: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(order), size):
        yield order[i:i + size]


def generate(model: "nn.Module", tokenizer: "PreTrainedTokenizerBase", prompts: Sequence[str],
             settings: GenerationSettings | None = None, *, progress: Any = None) -> GenerationOutput:
    """Greedy continuations of ``prompts`` (batched, left padding, KV cache).

    ``settings.batch_size=1`` is one ``generate`` call per prompt (the benchmark's baseline).
    ``progress`` is called with the number of prompts done after each batch.
    """
    import torch

    settings = settings or GenerationSettings()
    pad_id = ensure_pad_token(tokenizer)
    device = next(model.parameters()).device
    lengths = [len(tokenizer(p).input_ids) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (-lengths[i], i))
    texts: list[str] = [""] * len(prompts)
    counts = [0] * len(prompts)
    eos = tokenizer.eos_token_id
    start = time.perf_counter()
    with left_padding(tokenizer), torch.inference_mode():
        done = 0
        for idx in _batches(order, max(1, settings.batch_size)):
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(device)
            out = model.generate(
                **enc, do_sample=False, max_new_tokens=settings.max_new_tokens,
                repetition_penalty=settings.repetition_penalty, pad_token_id=pad_id,
                eos_token_id=eos, stop_strings=list(settings.stop) or None, tokenizer=tokenizer,
                use_cache=True, num_beams=1, temperature=None, top_p=None, top_k=None)
            new = out[:, enc["input_ids"].shape[1]:]
            for row, i in zip(new, idx):
                ids = row.tolist()
                n = len(ids)
                while n and ids[n - 1] == pad_id and pad_id != eos:
                    n -= 1
                if eos is not None and eos in ids[:n]:
                    n = ids.index(eos) + 1
                counts[i] = n
                text = tokenizer.decode(ids[:n], skip_special_tokens=True)
                texts[i] = cut_at_stop(text, settings.stop)
            done += len(idx)
            if progress is not None:
                progress(done)
    seconds = time.perf_counter() - start
    return GenerationOutput(texts, sum(counts), seconds, counts)
