"""Pieces shared by the Accelerate recipes (`recipes/pretrain.py`, `recipes/finetune.py`)."""

from .optim import (
    NO_WEIGHT_DECAY_NAMES,
    cosine_schedule_with_warmup,
    layer_decay_layer_id,
    parameter_groups,
    scaled_learning_rate,
    supports_layer_decay,
    warmup_cosine_learning_rate,
)

__all__ = [
    "NO_WEIGHT_DECAY_NAMES",
    "cosine_schedule_with_warmup",
    "layer_decay_layer_id",
    "parameter_groups",
    "scaled_learning_rate",
    "supports_layer_decay",
    "warmup_cosine_learning_rate",
]
