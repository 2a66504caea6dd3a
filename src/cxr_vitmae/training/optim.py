"""Optimizer pieces shared by the recipes: the MAE learning-rate scaling rule, AdamW parameter groups (no weight
decay on biases and norms, and in fine-tuning on the position table and CLS token; optional layer-wise lr decay for
ViT classifiers) and the per-iteration warmup + half-cosine learning-rate schedule.

Typical use (fine-tuning a ViT)::

    lr = scaled_learning_rate(2.5e-4, global_batch_size=1024)  # 1e-3
    groups = parameter_groups(model, weight_decay=0.05, layer_decay=0.55)
    optimizer = torch.optim.AdamW(groups, lr=lr)
    scheduler = cosine_schedule_with_warmup(
        optimizer, warmup_steps=warmup_updates, total_steps=total_updates, base_lr=lr, min_lr=1e-5
    )
    ...  # after every optimizer update: scheduler.step()
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

import torch
from accelerate.utils import extract_model_from_parallel
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ..models import CXRViTMAEForPreTraining

__all__ = [
    "NO_WEIGHT_DECAY_NAMES",
    "cosine_schedule_with_warmup",
    "layer_decay_layer_id",
    "parameter_groups",
    "scaled_learning_rate",
    "supports_layer_decay",
    "warmup_cosine_learning_rate",
]

#: Parameters (by their last name component) that get no weight decay in fine-tuning, whatever their shape: the
#: position table and the CLS token (the original fine-tuning's `no_weight_decay()` = {pos_embed, cls_token}). MAE
#: pre-training exempts none by name (timm's `add_weight_decay` without a skip list), so its CLS and mask tokens are
#: decayed there.
NO_WEIGHT_DECAY_NAMES = frozenset({"position_embeddings", "cls_token"})

_VIT_LAYER = re.compile(r"^vit\.layers\.(\d+)\.")


def scaled_learning_rate(base_lr: float, global_batch_size: int) -> float:
    """MAE's linear scaling rule: absolute lr = base_lr × global batch size / 256.

    `global_batch_size` is the number of samples per optimizer update: per-device batch × processes × gradient
    accumulation steps. Example: `scaled_learning_rate(1.5e-4, 2048) == 1.2e-3` (the paper's pre-training lr).
    """
    if global_batch_size <= 0:
        raise ValueError(f"global_batch_size must be positive, got {global_batch_size}")
    return base_lr * global_batch_size / 256


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model under DDP / DataParallel / DeepSpeed / torch.compile wrappers, so parameter names carry no
    `module.` or `_orig_mod.` prefix."""
    return extract_model_from_parallel(model, keep_torch_compile=False)


def _num_hidden_layers(model: nn.Module) -> int | None:
    """The number of ViT blocks if `model` has the ViT classifier layout (`config.num_hidden_layers`, `vit.embeddings`,
    `vit.layers`), else None."""
    model = _unwrap(model)
    config = getattr(model, "config", None)
    num_layers = getattr(config, "num_hidden_layers", None)
    vit = getattr(model, "vit", None)
    if not isinstance(num_layers, int) or vit is None:
        return None
    if not (hasattr(vit, "embeddings") and isinstance(getattr(vit, "layers", None), nn.ModuleList)):
        return None
    return num_layers


def supports_layer_decay(model: nn.Module) -> bool:
    """Whether `parameter_groups` can apply layer-wise lr decay to `model`: True for ViT models with the
    `vit.embeddings` / `vit.layers.N` layout and `config.num_hidden_layers` (ViTMAEForChestXray), False otherwise
    (DenseNetForChestXray). Recipes take the decision from the model family (`ModelFamily.layer_decay`); this checks
    the layout itself."""
    return _num_hidden_layers(model) is not None


def layer_decay_layer_id(name: str, num_layers: int) -> int:
    """The layer id of parameter `name` for layer-wise lr decay (MAE `util/lr_decay.py::get_layer_id_for_vit`):
    0 for the embeddings (CLS token, position table, patch embedding), i + 1 for `vit.layers.i`, and
    `num_layers + 1` for everything after the blocks (a final norm, `fc_norm`, `classifier`)."""
    if name.startswith("vit.embeddings."):
        return 0
    match = _VIT_LAYER.match(name)
    if match:
        index = int(match.group(1))
        if index >= num_layers:
            raise ValueError(f"parameter {name!r} belongs to block {index}, but config.num_hidden_layers={num_layers}")
        return index + 1
    return num_layers + 1


def _no_weight_decay(name: str, param: torch.Tensor, exempt_names: frozenset[str]) -> bool:
    """timm/MAE rule: no weight decay on 1-D parameters (biases, LayerNorm/BatchNorm weights), on any `.bias`, and on
    the tensors named in `exempt_names`."""
    return param.ndim <= 1 or name.endswith(".bias") or name.rsplit(".", 1)[-1] in exempt_names


def parameter_groups(
    model: nn.Module, *, weight_decay: float, layer_decay: float | None = None
) -> list[dict[str, Any]]:
    """AdamW parameter groups: weight decay split and, optionally, layer-wise lr decay.

    - Parameters with `requires_grad=False` (e.g. the MAE's fixed sin-cos position tables) are left out.
    - No weight decay (group `weight_decay` 0.0) on every 1-D parameter (biases, norm weights), every `.bias`, and,
      except for MAE pre-training models (the original decays their tokens), the tensors named in
      `NO_WEIGHT_DECAY_NAMES`; all other parameters get `weight_decay`.
    - `layer_decay=None`: two groups, `"decay"` and `"no_decay"`, with `lr_scale` 1.0 (DenseNet, MAE pre-training).
    - `layer_decay=d` (ViT classifiers only, see `supports_layer_decay`): with L = `config.num_hidden_layers`, each
      parameter gets the layer id of `layer_decay_layer_id` and `lr_scale = d ** (L + 1 - layer_id)`, so the head and
      `fc_norm` get 1, block `vit.layers.i` gets d ** (L - i) and the embeddings d ** (L + 1). Groups are named
      `"layer_{id}_decay"` / `"layer_{id}_no_decay"`. A model without the ViT layout raises ValueError.

    Every group carries `name`, `lr_scale`, `weight_decay`, `params` and `param_names` (torch's own key for named
    parameters, kept in the optimizer's state_dict); layer-decay groups also carry `layer_id`. The learning rate is
    set by `cosine_schedule_with_warmup`, which multiplies `lr_scale` in. Empty groups are dropped; the order is
    deterministic (by layer id, decay before no_decay), so optimizer checkpoints line up on resume.
    """
    if layer_decay is not None and layer_decay <= 0:
        raise ValueError(f"layer_decay must be positive, got {layer_decay}")
    num_layers = None
    if layer_decay is not None:
        num_layers = _num_hidden_layers(model)
        if num_layers is None:
            raise ValueError(
                f"layer_decay={layer_decay} needs a ViT classifier (config.num_hidden_layers, vit.embeddings, "
                f"vit.layers.N); {type(_unwrap(model)).__name__} has no such layout: pass layer_decay=None"
            )

    exempt_names = frozenset() if isinstance(_unwrap(model), CXRViTMAEForPreTraining) else NO_WEIGHT_DECAY_NAMES
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in _unwrap(model).named_parameters():
        if not param.requires_grad:
            continue
        decay = not _no_weight_decay(name, param, exempt_names)
        suffix = "decay" if decay else "no_decay"
        if num_layers is None:
            layer_id, group_name, scale = 0, suffix, 1.0
        else:
            layer_id = layer_decay_layer_id(name, num_layers)
            group_name = f"layer_{layer_id}_{suffix}"
            scale = float(layer_decay ** (num_layers + 1 - layer_id))
        if (layer_id, decay) not in groups:
            group: dict[str, Any] = {
                "name": group_name,
                "lr_scale": scale,
                "weight_decay": weight_decay if decay else 0.0,
                "params": [],
                "param_names": [],
            }
            if num_layers is not None:
                group["layer_id"] = layer_id
            groups[(layer_id, decay)] = group
        groups[(layer_id, decay)]["params"].append(param)
        groups[(layer_id, decay)]["param_names"].append(name)

    return [groups[key] for key in sorted(groups, key=lambda key: (key[0], not key[1]))]


def warmup_cosine_learning_rate(
    step: int | float, *, warmup_steps: int, total_steps: int, base_lr: float, min_lr: float = 0.0
) -> float:
    """The learning rate at optimizer update `step` (0-based), MAE `util/lr_sched.py::adjust_learning_rate` per
    iteration: `base_lr * step / warmup_steps` during warmup, then
    `min_lr + (base_lr - min_lr) * 0.5 * (1 + cos(pi * (step - warmup_steps) / (total_steps - warmup_steps)))`;
    `min_lr` from `total_steps` on (MAE would let the cosine rise again past the end)."""
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _lr_factor(step: int, *, warmup_steps: int, total_steps: int, base_lr: float, min_lr: float) -> float:
    # LambdaLR multiplies each group's initial lr (base_lr × lr_scale) by this factor.
    if base_lr == 0:
        return 0.0
    lr = warmup_cosine_learning_rate(
        step, warmup_steps=warmup_steps, total_steps=total_steps, base_lr=base_lr, min_lr=min_lr
    )
    return lr / base_lr


def cosine_schedule_with_warmup(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, base_lr: float, min_lr: float = 0.0
) -> LambdaLR:
    """Per-iteration linear warmup from 0 to `base_lr` over `warmup_steps`, then half-cosine to `min_lr` at
    `total_steps` (see `warmup_cosine_learning_rate`), for every group scaled by its `lr_scale`:
    `group["lr"] = lr(step) * group.get("lr_scale", 1)`.

    Implementation: a `torch.optim.lr_scheduler.LambdaLR`. Each group's `lr` and `initial_lr` are set to
    `base_lr * lr_scale` and the lambda returns `lr(step) / base_lr`, so the end of the schedule gives exactly
    `min_lr * lr_scale`. Right after construction the groups hold the lr of step 0 (0 when warming up); call
    `scheduler.step()` once after every optimizer update. Steps count optimizer updates, not micro-batches.

    Checkpointing: `state_dict()` holds the position (`last_epoch`), `base_lrs` and the last lrs, not the lambda
    (a `functools.partial` of a module-level function, whose shape comes from the arguments). To resume, rebuild
    the optimizer and the scheduler with the same arguments, then load both state dicts — which is what
    `accelerator.save_state` / `load_state` do for a prepared or `register_for_checkpointing`-ed scheduler.

    With Accelerate: a scheduler passed through `accelerator.prepare` is stepped `num_processes` times per
    `scheduler.step()` (unless `split_batches=True`), and not at all on accumulation micro-steps. Either build it
    with `warmup_steps * accelerator.num_processes` and `total_steps * accelerator.num_processes` before preparing it
    (the transformers examples' convention), or do not prepare it, `accelerator.register_for_checkpointing(scheduler)`
    and call `scheduler.step()` yourself when `accelerator.sync_gradients`.
    """
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if total_steps <= 0 or warmup_steps > total_steps:
        raise ValueError(f"need 0 < total_steps and warmup_steps <= total_steps, got {warmup_steps=} {total_steps=}")
    if base_lr < 0 or not 0 <= min_lr <= base_lr:
        raise ValueError(f"need 0 <= min_lr <= base_lr, got {min_lr=} {base_lr=}")
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = base_lr * group.get("lr_scale", 1.0)
    factor = functools.partial(
        _lr_factor, warmup_steps=warmup_steps, total_steps=total_steps, base_lr=base_lr, min_lr=min_lr
    )
    return LambdaLR(optimizer, factor)
