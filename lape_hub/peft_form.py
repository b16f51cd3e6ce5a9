"""The PEFT-loadable form of a sparse neuron adapter: an exact LoRA with one-hot factors.

A sparse adapter changes ``k`` rows of ``gate_proj``/``up_proj`` and ``k`` columns of
``down_proj`` per layer. Each of those changes is exactly a rank-``k`` LoRA update
``ΔW = B @ A`` (scale ``lora_alpha / r = 1``) whose other factor is one-hot::

    gate/up rows:   B = onehot(idx)  [d_ffn, k]     A = dG      [k, d_model]
    down columns:   B = dD           [d_model, k]   A = onehot(idx).T  [k, d_ffn]

so ``PeftModel.from_pretrained(base, folder)``, ``model.load_adapter(folder)`` and
``merge_and_unload()`` reproduce lape-hub's own apply and merge, with nothing but peft
installed. The rank differs per layer (the neuron set's size there); peft's
``rank_pattern``/``alpha_pattern`` carry it, and layers without neurons are not targeted.

The LoRA form stores the one-hot factors as dense tensors, so it is larger than the sparse
form (``lape_adapter.safetensors``): both are written side by side, the sparse form stays
the source of truth, and cards say which is which.

Example::

    >>> from lape_hub.peft_form import write_peft_form
    >>> write_peft_form("runs/mlt", model, base_model_name_or_path="google/gemma-3-270m")  # doctest: +SKIP
    PosixPath('runs/mlt/adapter_model.safetensors')
    >>> from peft import PeftModel
    >>> PeftModel.from_pretrained(base, "runs/mlt")                                # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lape_hub.atomic import atomic_path, atomic_write_text
from lape_hub.errors import AdapterMismatchError
from lape_hub.ffn import find_ffn_layers
from lape_hub.sparse_adapter import ADAPTER_WEIGHTS_NAME, AdapterConfig

PEFT_CONFIG_NAME = "adapter_config.json"
PEFT_WEIGHTS_NAME = "adapter_model.safetensors"
_PROJ = {"gate": "gate", "up": "up", "down": "down"}


def _module_names(model: nn.Module) -> dict[tuple[int, str], str]:
    """(layer, component) -> the full module name of that projection in ``model``."""
    by_id = {id(m): name for name, m in model.named_modules()}
    out: dict[tuple[int, str], str] = {}
    for layer in find_ffn_layers(model):
        if layer.layout != "separate":
            raise AdapterMismatchError(
                f"the PEFT form needs separate gate/up projections; {type(model).__name__} "
                "fuses them (gate_up_proj): use lape-hub's own apply")
        for comp in ("gate", "up", "down"):
            module = getattr(layer, comp).module
            out[(layer.index, comp)] = by_id[id(module)]
    return out


def lora_form(sparse_tensors: dict[str, torch.Tensor], config: AdapterConfig,
              model: nn.Module) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(adapter_config.json dict, adapter_model.safetensors tensors)`` of the exact LoRA
    equal to a sparse adapter's ``lape_adapter.safetensors`` tensors."""
    names = _module_names(model)
    state: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    for key in sorted(k for k in sparse_tensors if k.endswith(".delta")):
        _, layer_s, comp, _ = key.split(".")
        layer = int(layer_s)
        idx = sparse_tensors[f"layers.{layer}.{comp}.indices"].long()
        delta = sparse_tensors[key].float()
        k = int(idx.numel())
        if k == 0:
            continue
        if (layer, comp) not in names:
            raise AdapterMismatchError(f"adapter tensor {key!r} has no module in this model")
        name = names[(layer, comp)]
        eye = torch.zeros(k, config.d_ffn)
        eye[torch.arange(k), idx] = 1.0
        if comp == "down":      # ΔW[:, idx] = dD  -> B = dD [d_model, k], A = onehot [k, d_ffn]
            a, b = eye, delta
        else:                   # ΔW[idx, :] = dG  -> B = onehot.T [d_ffn, k], A = dG [k, d_model]
            a, b = delta, eye.T.contiguous()
        state[f"base_model.model.{name}.lora_A.weight"] = a.contiguous()
        state[f"base_model.model.{name}.lora_B.weight"] = b.contiguous()
        ranks[name] = k
    if not ranks:
        raise AdapterMismatchError("the adapter trains no neurons: nothing to convert")
    r = max(ranks.values())
    peft_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": config.repo_id or config.model,
        "revision": config.revision or None,
        "target_modules": sorted(ranks),
        "r": r,
        "lora_alpha": r,
        # exact module names: dots escaped so peft's regex match cannot hit another layer
        "rank_pattern": {_exact(n): k for n, k in ranks.items()},
        "alpha_pattern": {_exact(n): k for n, k in ranks.items()},
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "inference_mode": True,
    }
    return peft_config, state


def _exact(name: str) -> str:
    return name.replace(".", r"\.")


def write_peft_form(folder: str | os.PathLike, model: nn.Module, *,
                    base_model_name_or_path: str | None = None) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` next to a sparse
    adapter's own files in ``folder`` (atomically); ``model`` is the base (any dtype; only
    its module names are read). Returns the weights path."""
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    config = AdapterConfig.load(folder)
    if not config.is_sparse:
        raise AdapterMismatchError(f"{folder} holds a {config.method} adapter, not a sparse one")
    tensors = load_file(str(folder / ADAPTER_WEIGHTS_NAME))
    peft_config, state = lora_form(tensors, config, model)
    if base_model_name_or_path:
        peft_config["base_model_name_or_path"] = base_model_name_or_path
    out = folder / PEFT_WEIGHTS_NAME
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "lape_hub_form": "exact-lora",
                                             "signature": config.signature})
    atomic_write_text(folder / PEFT_CONFIG_NAME, json.dumps(peft_config, indent=2) + "\n")
    return out
