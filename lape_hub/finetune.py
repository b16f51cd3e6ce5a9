"""Fine-tune one language's neurons (LAPE sparse fine-tuning) and the paper's baselines.

Methods (all through the same loop, data, seed and evaluation):

=============  ======================================================  =========
method         what is trained                                         lr
=============  ======================================================  =========
lape-sparse    the language's neurons: gate/up rows, down columns      1e-4
random         as many random neurons, spread evenly over layers       1e-4
lora           LoRA on gate/up/down, rank matched to the set's size    1e-4
ia3            IA3 on k/v/down                                         1e-4
ffn            every FFN weight                                        1e-5
full           every weight                                            1e-5
=============  ======================================================  =========

Paper defaults: AdamW (weight decay 0.01), gradient clipping 1.0, batch size 2, one epoch
over a token budget of packed target-language text, validation every ``eval_every`` steps,
the best checkpoint by validation loss kept. The run is deterministic for a seed and resumes
from its last checkpoint (written atomically) when started again with the same settings.

The loop (:func:`finetune`) reads top to bottom like nanoGPT's ``train.py``: data, model,
optimizer, resume, loop with evaluation and checkpointing, artifact, catalog row.

Example::

    >>> from lape_hub.finetune import FinetuneConfig, finetune
    >>> cfg = FinetuneConfig(model="gemma-3-270m", lang="mlt_Latn",
    ...                      corpus="../shared/data/sib200", train_tokens=20_000)
    >>> result = finetune(cfg, "runs/mlt-sparse")                          # doctest: +SKIP
    >>> result.best_val_loss, result.adapter_dir                           # doctest: +SKIP
    (3.91, PosixPath('runs/mlt-sparse/adapter'))
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from lape_hub.atomic import atomic_path
from lape_hub.device import resolve_dtype_name
from lape_hub.errors import LapeHubError
from lape_hub.ffn import find_ffn_layers
from lape_hub.lm_loss import lm_loss
from lape_hub.sparse_adapter import (
    COMPONENTS,
    DENSE_WEIGHTS_NAME,
    METHODS,
    PEFT_METHODS,
    SPARSE_METHODS,
    AdapterConfig,
    SparseNeuronModel,
    artifact_sha256,
    parse_components,
)

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

    from lape_hub.catalog import Catalog
    from lape_hub.corpus import PackedCorpus
    from lape_hub.neuron_set import NeuronSet

__all__ = [
    "DEFAULT_LR",
    "FinetuneConfig",
    "FinetuneResult",
    "adapter_row",
    "autocast",
    "default_out_dir",
    "evaluate",
    "finetune",
    "lm_loss",
    "lora_params_per_rank",
    "matched_lora_rank",
    "random_neuron_set",
    "record_adapter",
]

DEFAULT_LR = {"lape-sparse": 1e-4, "random": 1e-4, "lora": 1e-4, "ia3": 1e-4, "ffn": 1e-5, "full": 1e-5}
NEEDS_NEURON_SET = ("lape-sparse", "random", "lora")


# =========================================================================== config
@dataclass
class FinetuneConfig:
    """Every setting of a fine-tuning run (the paper's defaults).

    ``train_tokens`` is the token budget (one epoch over that much packed text; ``None``:
    the whole train split). ``lr=None`` takes the method's default (:data:`DEFAULT_LR`).
    ``lora_rank=None`` matches LoRA's parameter count to the neuron set's (``lora_match``:
    ``"params"`` exactly, ``"paper"`` with the paper's count, see :func:`lora_params_per_rank`).
    ``revision`` names the model revision for models outside the registry (tests, local
    folders); registry models take it from the registry. ``dtype`` is the compute dtype:
    ``bfloat16`` trains under bf16 autocast (weights, deltas and optimizer state float32),
    ``auto`` picks bfloat16 where the device runs it natively (:func:`lape_hub.device.default_dtype`).

    >>> FinetuneConfig("gemma-3-270m", "mlt_Latn", corpus="sib200", method="full").resolved_lr
    1e-05
    """

    model: str
    lang: str
    corpus: str
    method: str = "lape-sparse"
    refset: str = "paper-12"
    components: tuple[str, ...] = COMPONENTS
    train_split: str = "train"
    val_split: str = "dev"
    train_tokens: int | None = None
    val_tokens: int | None = None
    seq_len: int = 512
    batch_size: int = 2
    lr: float | None = None
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eval_every: int = 50
    checkpoint_every: int | None = None
    seed: int = 0
    lora_rank: int | None = None
    lora_alpha: float = 32.0
    lora_match: str = "params"
    dtype: str = "auto"
    device: str = "cpu"
    revision: str | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise LapeHubError(f"unknown method {self.method!r}; use one of {', '.join(METHODS)}")
        self.components = parse_components(self.components)
        self.dtype = resolve_dtype_name(self.dtype, self.device)  # "auto" -> what runs; hashed in the run id
        for name in ("seq_len", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise LapeHubError(f"{name} must be >= 1")
        if self.train_tokens is not None and self.train_tokens < 1:
            raise LapeHubError("the token budget must be >= 1")

    @property
    def needs_neuron_set(self) -> bool:
        """lape-sparse and random train (a copy of the size of) the language's set; LoRA
        needs it to match its rank to the set's parameter count, unless ``lora_rank`` is given."""
        return self.method in NEEDS_NEURON_SET and not (self.method == "lora" and self.lora_rank)

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    @property
    def corpus_label(self) -> str:
        """``sib200:train`` for ``../shared/data/sib200`` (what signatures name)."""
        return f"{Path(self.corpus.rstrip('/')).name or self.corpus}:{self.train_split}"

    def hyperparameters(self, lora_rank: int | None = None) -> dict[str, Any]:
        """What an adapter records (and what the run id hashes)."""
        hp: dict[str, Any] = {
            "lr": self.resolved_lr, "weight_decay": self.weight_decay, "grad_clip": self.grad_clip,
            "batch_size": self.batch_size, "seq_len": self.seq_len, "train_tokens": self.train_tokens,
            "val_tokens": self.val_tokens, "eval_every": self.eval_every, "seed": self.seed,
            "optimizer": "adamw", "epochs": 1, "dtype": self.dtype,
            "train_split": self.train_split, "val_split": self.val_split,
        }
        if self.method in SPARSE_METHODS:
            hp["components"] = list(self.components)
            hp["weight_decay_on"] = "effective weights (W + delta)"
        if self.method == "lora":
            hp["lora_rank"] = lora_rank if lora_rank is not None else self.lora_rank
            hp["lora_alpha"] = self.lora_alpha
            hp["lora_match"] = "given" if self.lora_rank else self.lora_match
        return hp


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns (also written to ``<out>/run.json``)."""

    run_id: str
    out_dir: Path
    adapter_dir: Path
    config: AdapterConfig
    best_val_loss: float
    best_step: int
    steps: int
    tokens: int
    train_losses: list[tuple[int, float]]
    val_losses: list[tuple[int, float]]
    seconds: float
    catalog_path: Path | None = None

    @property
    def trainable_params(self) -> int:
        return self.config.trainable_params

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"], d["adapter_dir"] = str(self.out_dir), str(self.adapter_dir)
        d["catalog_path"] = str(self.catalog_path) if self.catalog_path else None
        d["config"] = self.config.to_dict()
        return d


# =========================================================================== baselines
def random_neuron_set(like: "NeuronSet", seed: int) -> "NeuronSet":
    """As many neurons as ``like``, spread evenly over its layers, chosen uniformly (seeded).

    Each layer gets ``n // L`` neurons; ``n % L`` layers (chosen at random) get one more.

    >>> import numpy as np
    >>> from lape_hub.neuron_set import NeuronSet
    >>> ns = NeuronSet("m", "mlt_Latn", [np.arange(7), np.array([], np.int64), np.arange(3)],
    ...                d_model=8, d_ffn=32)
    >>> r = random_neuron_set(ns, seed=0)
    >>> r.n_neurons, sorted(r.per_layer.tolist())
    (10, [3, 3, 4])
    """
    from lape_hub.neuron_set import NeuronSet

    rng = np.random.default_rng(seed)
    n, n_layers = like.n_neurons, like.n_layers
    counts = np.full(n_layers, n // n_layers, dtype=np.int64)
    counts[rng.choice(n_layers, size=n % n_layers, replace=False)] += 1
    if counts.max(initial=0) > like.d_ffn:
        raise LapeHubError(f"cannot place {n} neurons evenly in {n_layers} layers of {like.d_ffn}")
    layers = [np.sort(rng.choice(like.d_ffn, size=int(c), replace=False)) for c in counts]
    return NeuronSet(like.model, like.lang, layers, d_model=like.d_model, d_ffn=like.d_ffn,
                     refset=like.refset, total_params=like.total_params,
                     metadata={"random_seed": seed, "like": like.content_hash})


def lora_targets(model: nn.Module) -> list[str]:
    """Leaf names of the FFN projections (``gate_proj, up_proj, down_proj`` or fused)."""
    layer = find_ffn_layers(model)[0]
    names = []
    for ref in (layer.gate, layer.up, layer.down):
        name = next(n for n, m in layer.mlp.named_children() if m is ref.module)
        if name not in names:
            names.append(name)
    return names


def lora_params_per_rank(model: nn.Module, convention: str = "params") -> int:
    """LoRA parameters per unit of rank on the FFN projections.

    ``"params"`` (exact, the default): the sum of ``in + out`` over every adapted projection, i.e.
    ``3 * (d_model + d_ffn)`` per layer for separate gate/up/down. ``"paper"``: the
    paper's count, one ``d_model + d_ffn`` per layer; it reproduces the paper's rank 62
    for the Maltese set of Llama-3.1-8B (3015 neurons) but gives LoRA about 3x the set's
    parameters.
    """
    if convention not in ("params", "paper"):
        raise LapeHubError(f"unknown LoRA matching convention {convention!r}; use params or paper")
    total = 0
    for layer in find_ffn_layers(model):
        if convention == "paper":
            total += layer.d_model + layer.d_ffn
            continue
        for module in {id(r.module): r.module for r in (layer.gate, layer.up, layer.down)}.values():
            w = module.base_layer.weight if hasattr(module, "base_layer") else module.weight
            total += w.shape[0] + w.shape[1]
    return total


def matched_lora_rank(target_params: int, params_per_rank: int, *, round_down: bool = False) -> int:
    """The LoRA rank whose parameter count is closest to ``target_params`` (at least 1);
    with ``round_down`` the largest rank not above it.

    Llama-3.1-8B's Maltese set (3015 neurons, 37.0M parameters): rank 21 when LoRA's
    parameters are counted exactly on gate/up/down; the paper's rank 62 with the paper's
    one-projection-per-layer count, rounded down.

    >>> n, d, f, L = 3015, 4096, 14336, 32
    >>> matched_lora_rank(3 * d * n, L * 3 * (d + f)), matched_lora_rank(3 * d * n, L * (d + f), round_down=True)
    (21, 62)
    """
    if params_per_rank <= 0:
        raise LapeHubError("no LoRA target modules")
    ratio = target_params / params_per_rank
    return max(1, int(math.floor(ratio)) if round_down else int(round(ratio)))


def ia3_targets(model: nn.Module) -> tuple[list[str], list[str]]:
    """IA3 targets: key/value projections (``qkv_proj`` when fused) and ``down_proj``."""
    leaf = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    attn = ["k_proj", "v_proj"] if {"k_proj", "v_proj"} <= leaf else ["qkv_proj"] if "qkv_proj" in leaf else []
    if not attn:
        raise LapeHubError("IA3: the model has no k_proj/v_proj (or qkv_proj) modules")
    down = lora_targets(model)[-1]
    return attn + [down], [down]


@dataclass
class _Prepared:
    model: nn.Module                  # what to call (a PeftModel for peft methods)
    params: list[nn.Parameter]        # what the optimizer trains
    sparse: SparseNeuronModel | None
    neuron_set: "NeuronSet | None"    # the set trained (random: the random one)
    lora_rank: int | None


def prepare_method(model: nn.Module, cfg: FinetuneConfig, neuron_set: "NeuronSet | None",
                   adapter: AdapterConfig) -> _Prepared:
    """Freeze ``model`` and attach what ``cfg.method`` trains (seeded by the caller)."""
    method = cfg.method
    if cfg.needs_neuron_set and neuron_set is None:
        raise LapeHubError(f"method {method!r} needs the language's neuron set")
    if method in SPARSE_METHODS:
        ns = neuron_set if method == "lape-sparse" else random_neuron_set(neuron_set, cfg.seed)
        sparse = SparseNeuronModel.inject(model, ns.layers, adapter)
        return _Prepared(model, sparse.parameters(), sparse, ns, None)
    for p in model.parameters():
        p.requires_grad_(False)
    if method in PEFT_METHODS:
        from peft import IA3Config, LoraConfig, get_peft_model

        rank = None
        if method == "lora":
            rank = cfg.lora_rank or matched_lora_rank(
                neuron_set.trainable_params, lora_params_per_rank(model, cfg.lora_match),
                round_down=cfg.lora_match == "paper")
            pcfg = LoraConfig(r=rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, bias="none",
                              target_modules=lora_targets(model), task_type="CAUSAL_LM")
        else:
            targets, ff = ia3_targets(model)
            pcfg = IA3Config(target_modules=targets, feedforward_modules=ff, task_type="CAUSAL_LM")
        pm = get_peft_model(model, pcfg)
        return _Prepared(pm, [p for p in pm.parameters() if p.requires_grad], None, neuron_set, rank)
    if method == "ffn":
        for layer in find_ffn_layers(model):
            for ref in (layer.gate, layer.up, layer.down):
                ref.parameter.requires_grad_(True)
    else:  # full
        for p in model.parameters():
            p.requires_grad_(True)
    params = list({id(p): p for p in model.parameters() if p.requires_grad}.values())
    return _Prepared(model, params, None, neuron_set, None)


# =========================================================================== loss / eval
def autocast(device: "torch.device | str", dtype: str) -> "torch.autocast":
    """bfloat16 autocast on ``device`` when ``dtype == "bfloat16"`` (a no-op context otherwise).

    The weights, the trained deltas and the optimizer state stay float32; only the matrix
    products (and what autocast lists with them) run in bfloat16.
    """
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")


@torch.no_grad()
def evaluate(model: nn.Module, data: "PackedCorpus", batch_size: int = 2, *, dtype: str = "float32") -> float:
    """Mean next-token NLL (nats per token) of ``model`` on packed ``data``.

    ``math.exp`` of it is the perplexity. ``dtype="bfloat16"`` runs it under bf16 autocast.

    >>> math.exp(evaluate(model, packed_dev))                               # doctest: +SKIP
    41.7
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, data.n_sequences, batch_size):
        with autocast(device, dtype):
            nll, n = lm_loss(model, data.input_ids[i:i + batch_size].to(device),
                             data.attention_mask[i:i + batch_size].to(device))
        total += float(nll)
        count += n
    model.train(was_training)
    return total / max(count, 1)


# =========================================================================== helpers
def _identity(cfg: FinetuneConfig) -> tuple[str, str, str, int | None]:
    """(alias, repo_id, revision, total_params) from the registry, or from ``cfg``."""
    from lape_hub.builder import model_revision
    from lape_hub.registry import resolve_model

    try:
        spec = resolve_model(cfg.model)
    except LapeHubError:
        return cfg.model, "", cfg.revision or "", None
    return spec.alias, spec.repo_id, cfg.revision or model_revision(spec), spec.total_params


def run_id(cfg: FinetuneConfig, identity: tuple[str, str, str, Any], neuron_set_hash: str) -> str:
    """12 hex digits identifying a run: same settings, data and neuron set -> same id."""
    key = {"model": identity[0], "revision": identity[2], "lang": cfg.lang, "method": cfg.method,
           "corpus": cfg.corpus_label, "set": neuron_set_hash,
           "hp": cfg.hyperparameters(), "lora_rank": cfg.lora_rank, "v": 1}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def default_out_dir(cfg: FinetuneConfig, run: str) -> Path:
    """``runs/finetune/<model>/<lang>/<method>-<run id>`` (rerunning resumes there)."""
    return Path("runs") / "finetune" / cfg.model.replace("/", "--") / cfg.lang / f"{cfg.method}-{run}"


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


_CHECKPOINT_KEYS = frozenset({"run_key", "step", "tokens", "best_val", "best_step", "trainable", "optimizer", "rng"})


def _read_checkpoint(path: Path, keys: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``last.pt`` or ``best.pt`` as saved by :func:`finetune`, read without running pickled code.

    A file that is not one (damaged, a pickle that would import and call things, a symlink,
    a FIFO) is refused in one line instead of being executed or waited on.
    """
    from lape_hub.hub_files import open_regular

    try:  # a regular file only: a FIFO would block torch.load, a symlink points elsewhere
        with open_regular(path) as f:
            ck = torch.load(f, map_location="cpu", weights_only=True)
    except Exception:  # torch raises UnpicklingError, RuntimeError, EOFError, ... with advice to unpickle
        raise LapeHubError(f"{path} is not a lape-hub checkpoint (unreadable, or it holds objects other "
                           "than tensors and plain data, which are never unpickled); "
                           "use another --out or --fresh") from None
    if not isinstance(ck, dict) or not keys <= set(ck):
        raise LapeHubError(f"{path} is not a lape-hub checkpoint (keys missing); use another --out or --fresh")
    return ck


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of every trainable parameter; a tied (shared) one appears once, under its
    first name, as ``named_parameters()`` lists it."""
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters()
            if p.requires_grad}


@torch.no_grad()
def _load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    for name, t in state.items():
        model.get_parameter(name).copy_(t)


def _rank(loss: float) -> float:
    """A validation loss as compared for the best checkpoint: NaN counts as +inf."""
    return math.inf if math.isnan(loss) else loss


def _read_log(path: Path, upto_step: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["step"] <= upto_step]


def _decay_groups(model: nn.Module, params: list[nn.Parameter], wd: float) -> list[dict[str, Any]]:
    """Weight decay on weights, not on biases and norm scales (as the HF Trainer does)."""
    names = {id(p): n for n, p in model.named_parameters()}
    no = [p for p in params if p.ndim < 2 or "norm" in names.get(id(p), "").lower()]
    ids = {id(p) for p in no}
    return [{"params": [p for p in params if id(p) not in ids], "weight_decay": wd},
            {"params": no, "weight_decay": 0.0}]


def _save_artifact(prep: _Prepared, adapter: AdapterConfig, folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    if prep.sparse is not None:
        prep.sparse.save(folder)
        from lape_hub.errors import AdapterMismatchError
        from lape_hub.peft_form import write_peft_form

        try:  # the exact LoRA form beside it, so peft/transformers load the adapter too
            write_peft_form(folder, prep.sparse.model)
        except AdapterMismatchError:
            pass  # fused gate_up_proj (Phi-3): no LoRA form; lape-hub loads the sparse one
        return
    if adapter.method in PEFT_METHODS:
        prep.model.save_pretrained(str(folder))
    else:
        state = {n: t.contiguous() for n, t in _trainable_state(prep.model).items()}
        with atomic_path(folder / DENSE_WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "lape-hub-adapter", "method": adapter.method})
    adapter.save(folder)


# =========================================================================== the loop
def finetune(
    cfg: FinetuneConfig,
    out_dir: str | os.PathLike | None = None,
    *,
    model: nn.Module | None = None,
    tokenizer: "PreTrainedTokenizerBase | None" = None,
    neuron_set: "NeuronSet | None" = None,
    catalog: "Catalog | str | os.PathLike | None" = None,
    record: bool = True,
    fresh: bool = False,
    progress: bool = True,
) -> FinetuneResult:
    """Run one fine-tuning job; resume it if ``out_dir`` holds a checkpoint of the same run.

    ``model``/``tokenizer`` default to :func:`lape_hub.models.load_model` of ``cfg.model``;
    ``neuron_set`` to the catalog's set for (model, lang, refset) when the method needs one.
    Writes into ``out_dir``: ``checkpoint/{last,best}.pt``, ``log.jsonl`` (train/val
    losses), ``adapter/`` (the best checkpoint as an adapter) and ``run.json``; with
    ``record`` also a row of the catalog's ``adapters`` table.

    >>> res = finetune(FinetuneConfig("gemma-3-270m", "mlt_Latn", corpus="sib200",
    ...                               method="lora", train_tokens=20_000))  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    from lape_hub.corpus import read_documents, tokenize_and_pack

    t_start = time.time()
    identity = _identity(cfg)
    alias, repo_id, revision, total_params = identity
    lr, wd = cfg.resolved_lr, cfg.weight_decay

    # -- neuron set --------------------------------------------------------------------
    if neuron_set is None and cfg.needs_neuron_set:
        from lape_hub.catalog import Catalog

        cat = catalog if hasattr(catalog, "neuron_set") else Catalog(catalog)
        neuron_set = cat.neuron_set(cfg.model, cfg.lang, refset=cfg.refset)
    rid = run_id(cfg, identity, neuron_set.content_hash if neuron_set is not None else "")
    out = Path(out_dir) if out_dir is not None else default_out_dir(cfg, rid)
    ckpt_dir, log_path = out / "checkpoint", out / "log.jsonl"
    if fresh and ckpt_dir.exists():
        for p in ckpt_dir.iterdir():
            p.unlink()
        log_path.unlink(missing_ok=True)

    # -- model and data (text read first: a missing corpus fails before the model loads) --
    train_docs = read_documents(cfg.corpus, cfg.lang, cfg.train_split)
    val_docs = read_documents(cfg.corpus, cfg.lang, cfg.val_split)
    if model is None or tokenizer is None:
        from lape_hub.models import load_model

        model, tokenizer = load_model(cfg.model, device=cfg.device, dtype="float32")  # bf16 via autocast
    device = next(model.parameters()).device
    train = tokenize_and_pack(train_docs, tokenizer, cfg.seq_len, cfg.train_tokens, lang=cfg.lang)
    val = tokenize_and_pack(val_docs, tokenizer, cfg.seq_len, cfg.val_tokens, min_tokens=2, lang=cfg.lang)
    n_steps = math.ceil(train.n_sequences / cfg.batch_size)
    order = torch.randperm(train.n_sequences, generator=torch.Generator().manual_seed(cfg.seed))

    # -- method (seeded: LoRA init and the random set depend on it) ----------------------
    torch.manual_seed(cfg.seed)
    base_params = total_params or sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    adapter = AdapterConfig(model=alias, lang=cfg.lang, method=cfg.method, repo_id=repo_id,
                            revision=revision, components=cfg.components,
                            total_params=base_params, corpus=cfg.corpus_label)
    prep = prepare_method(model, cfg, neuron_set, adapter)
    ffn = find_ffn_layers(prep.model)
    adapter.n_layers, adapter.d_model, adapter.d_ffn = len(ffn), ffn[0].d_model, ffn[0].d_ffn
    adapter.model_type = getattr(model.config, "model_type", "") or ""
    adapter.trainable_params = sum(p.numel() for p in prep.params)
    if prep.neuron_set is not None:
        adapter.refset = neuron_set.refset
        adapter.neuron_set_hash = prep.neuron_set.content_hash
        adapter.n_neurons = prep.neuron_set.n_neurons
    adapter.hyperparameters = cfg.hyperparameters(prep.lora_rank)
    if cfg.method == "random":
        adapter.hyperparameters["random_set_like"] = neuron_set.content_hash

    # -- optimizer -----------------------------------------------------------------------
    if prep.sparse is not None:  # decay applied to the effective weights below
        optimizer = torch.optim.AdamW(prep.params, lr=lr, weight_decay=0.0)
    else:
        optimizer = torch.optim.AdamW(_decay_groups(prep.model, prep.params, wd), lr=lr)

    # -- resume --------------------------------------------------------------------------
    step, tokens_seen, best_val, best_step = 0, 0, math.inf, -1
    run_key = {"run_id": rid, "data": train.fingerprint(), "val": val.fingerprint(), "steps": n_steps}
    last = ckpt_dir / "last.pt"
    if last.is_file():
        ck = _read_checkpoint(last, _CHECKPOINT_KEYS)
        if ck["run_key"] != run_key:
            raise LapeHubError(f"{out} holds a checkpoint of another run (different settings or data); "
                               "use another --out or --fresh")
        _load_trainable_state(prep.model, ck["trainable"])
        optimizer.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["rng"])
        step, tokens_seen, best_val, best_step = ck["step"], ck["tokens"], ck["best_val"], ck["best_step"]
    log_rows = _read_log(log_path, step if last.is_file() else -1)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("".join(json.dumps(r) + "\n" for r in log_rows))
    log = log_path.open("a")

    def write_log(row: dict[str, Any]) -> None:
        log_rows.append(row)
        log.write(json.dumps(row) + "\n")
        log.flush()

    def checkpoint(state: dict[str, torch.Tensor]) -> None:
        _atomic_torch_save({"run_key": run_key, "step": step, "tokens": tokens_seen, "best_val": best_val,
                            "best_step": best_step, "trainable": state,
                            "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}, last)

    def validate(state: dict[str, torch.Tensor]) -> None:
        nonlocal best_val, best_step
        loss = evaluate(prep.model, val, cfg.batch_size, dtype=cfg.dtype)
        # the first validation (the base model) is always kept, so best.pt exists; a NaN
        # loss is worse than every number (`NaN < x` is False both ways, hence _rank)
        improved = best_step < 0 or _rank(loss) < _rank(best_val)
        if improved:
            best_val, best_step = loss, step
            _atomic_torch_save(state, ckpt_dir / "best.pt")
        write_log({"step": step, "split": "val", "loss": loss, "tokens": tokens_seen, "best": improved})

    if step == 0 and not last.is_file():
        state = _trainable_state(prep.model)  # one CPU copy for both files
        validate(state)  # the base model: a run that never improves keeps it
        checkpoint(state)

    # -- loop ----------------------------------------------------------------------------
    prep.model.train()
    bar = tqdm(total=n_steps, initial=step, desc=f"{cfg.method} {cfg.lang}", unit="step",
               disable=not progress, dynamic_ncols=True)
    t0, tok0 = time.time(), tokens_seen
    try:
        while step < n_steps:
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            ids, mask = train.input_ids[idx].to(device), train.attention_mask[idx].to(device)
            with autocast(device, cfg.dtype):
                nll, n = lm_loss(prep.model, ids, mask)
            loss = nll / max(n, 1)
            loss.backward()
            loss_value = loss.item()
            grad_norm = torch.nn.utils.clip_grad_norm_(prep.params, cfg.grad_clip)
            if prep.sparse is not None and wd:
                prep.sparse.decay_(lr * wd)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += int(mask.sum())
            write_log({"step": step, "split": "train", "loss": loss_value, "grad_norm": float(grad_norm),
                       "tokens": tokens_seen, "lr": lr})
            evaluate_now = step % cfg.eval_every == 0 or step == n_steps
            save_now = step % (cfg.checkpoint_every or cfg.eval_every) == 0 or step == n_steps
            if evaluate_now or save_now:
                state = _trainable_state(prep.model)  # one CPU copy for both files
                if evaluate_now:
                    validate(state)
                if save_now:
                    checkpoint(state)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", best_val=f"{best_val:.3f}",
                            tok_s=f"{(tokens_seen - tok0) / max(time.time() - t0, 1e-9):.0f}")
    finally:
        bar.close()
        log.close()

    # -- artifact: the best checkpoint as an adapter ---------------------------------------
    _load_trainable_state(prep.model, _read_checkpoint(ckpt_dir / "best.pt"))
    adapter.tokens, adapter.steps = tokens_seen, step
    adapter.best_step, adapter.best_val_loss = best_step, best_val
    adapter_dir = out / "adapter"
    _save_artifact(prep, adapter, adapter_dir)
    result = FinetuneResult(
        run_id=rid, out_dir=out, adapter_dir=adapter_dir, config=adapter, best_val_loss=best_val,
        best_step=best_step, steps=step, tokens=tokens_seen,
        train_losses=[(r["step"], r["loss"]) for r in log_rows if r["split"] == "train"],
        val_losses=[(r["step"], r["loss"]) for r in log_rows if r["split"] == "val"],
        seconds=time.time() - t_start)
    if record:
        result.catalog_path = record_adapter(adapter_row(result), catalog)
    (out / "run.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result


# =========================================================================== catalog
def adapter_row(result: FinetuneResult, *, created_at: datetime | None = None) -> dict[str, Any]:
    """One row of the ``adapters`` table (``schemas/adapters.json``) for a finished run."""
    a = result.config
    return {
        "model": a.model, "lang": a.lang, "method": a.method, "run_id": result.run_id,
        "revision": a.revision, "repo_id": a.repo_id, "refset": a.refset or None,
        "components": ",".join(a.components) or None, "neuron_set_hash": a.neuron_set_hash or None,
        "n_neurons": a.n_neurons or None, "trainable_params": a.trainable_params,
        "share": a.share if a.share is not None else float("nan"), "tokens": a.tokens, "steps": a.steps,
        "best_step": a.best_step, "best_val_loss": a.best_val_loss,
        "artifact_path": str(result.adapter_dir), "artifact_sha256": artifact_sha256(result.adapter_dir),
        "signature": a.signature, "lape_hub_version": a.lape_hub_version,
        "created_at": created_at or datetime.now(timezone.utc),
        "params": json.dumps({"hyperparameters": a.hyperparameters, "corpus": a.corpus,
                              "total_params": a.total_params, "seconds": round(result.seconds, 1)},
                             sort_keys=True),
    }


def record_adapter(row: dict[str, Any], catalog: "Catalog | str | os.PathLike | None" = None) -> Path:
    """Write ``row`` as the catalog entry ``adapters/model=/lang=/method=/run_id=``."""
    import pyarrow as pa

    from lape_hub.catalog import Catalog
    from lape_hub.schemas import table_schema

    cat = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
    schema = table_schema("adapters")
    table = pa.Table.from_pylist([row], schema=schema.arrow)
    return cat.write("adapters", table, key={k: str(row[k]) for k in schema.partition_by})
