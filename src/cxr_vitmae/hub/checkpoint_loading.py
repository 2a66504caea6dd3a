"""Reading checkpoint files safely: safetensors, or PyTorch pickles through torch's weights-only unpickler with an
explicit allow-list, never unrestricted unpickling."""

import argparse
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..models.conversion_utils import ConversionError

# Globals the paper's and related training codes put in their checkpoints besides tensors and containers:
# `args` is an argparse.Namespace (facebookresearch/mae's misc.save_model), and numpy scalars/dtypes appear in the
# metadata some codebases store (e.g. a best loss). Nothing here can execute code when unpickled.
_NUMPY_CORE = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed the module
ALLOWED_GLOBALS = [
    argparse.Namespace,
    np.dtype,
    _NUMPY_CORE.multiarray.scalar,
    *{type(np.dtype(name)) for name in ("float16", "float32", "float64", "int32", "int64", "bool")},
]

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".tar", ".ckpt")


class CheckpointError(ConversionError):
    """A checkpoint file is missing, unreadable, or refused by the safe loader."""


def load_checkpoint_file(path: str | Path) -> Any:
    """The object stored in `path`: a dict of tensors for safetensors, the unpickled object otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f"the global {refused.group(1)}" if refused else "an object"
        raise CheckpointError(
            f"{path}: refused to unpickle {what}, which is not on the allow-list of safe checkpoint contents "
            f"(tensors, containers, argparse.Namespace, numpy scalars). Re-save the file with plain tensors."
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, perhaps truncated ({error})") from error


def unwrap_state_dict(checkpoint: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint, whichever training code wrote it.

    Accepts a bare state dict or a dict that keeps it under `model` (facebookresearch/mae and the paper's code),
    `state_dict` (CheXNet-style code, Lightning) or `model_state_dict`; a `module.` prefix left by DataParallel or
    DistributedDataParallel is removed.
    """
    if isinstance(checkpoint, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise CheckpointError(f"{path}: holds no state dict (expected a dict of tensors, or one under 'model')")
    non_tensors = [key for key, value in checkpoint.items() if not isinstance(value, torch.Tensor)]
    if non_tensors:
        raise CheckpointError(
            f"{path}: expected a dict of tensors, but {len(non_tensors)} entries are not tensors "
            f"(e.g. {', '.join(map(str, non_tensors[:5]))})"
        )
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}


def training_args(checkpoint: Any) -> argparse.Namespace | None:
    """The `args` Namespace that facebookresearch/mae-style checkpoints carry, if any."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("args"), argparse.Namespace):
        return checkpoint["args"]
    return None
