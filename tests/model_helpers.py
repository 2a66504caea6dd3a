"""Helpers shared by the model tests."""

import argparse
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch


def randomize_(model: torch.nn.Module, std: float = 0.05) -> torch.nn.Module:
    """Give every parameter and float buffer random values (norm weights around 1), so a mapping or formula
    mistake cannot hide behind zeros, ones or a symmetric init."""
    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator) * std
            if name.endswith("running_var"):
                tensor.copy_(1.0 + noise.abs())
            elif tensor.ndim == 1 and name.endswith("weight"):
                tensor.copy_(1.0 + noise)
            else:
                tensor.copy_(noise)
    return model


def run_python(script: str, tmp_path, *args: str) -> str:
    """Run `script` (dedented) with ARGS as sys.argv[1:] in a fresh interpreter: offline, with an empty HF cache
    under `tmp_path` and no PYTHONPATH; assert it exits 0 and return its stdout."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


# Makes any import of the package raise ImportError, and checks that it does before the script proper runs.
_BLOCK_PACKAGE = """\
import sys
sys.modules["cxr_vitmae"] = None
try:
    import cxr_vitmae
    raise SystemExit("cxr_vitmae should not be importable here")
except ImportError:
    pass
"""


def run_without_package(script: str, tmp_path, *args: str) -> str:
    """`run_python` where `import cxr_vitmae` fails."""
    return run_python(_BLOCK_PACKAGE + textwrap.dedent(script), tmp_path, *args)


def save_like_mae(path: Path, weights: dict, *, optimizer: dict | None = None, epoch: int = 799, **args) -> Path:
    """facebookresearch/mae's util/misc.py::save_model layout (the paper's code saves this way), ARGS being its
    argparse namespace."""
    if optimizer is None:
        optimizer = {"state": {}, "param_groups": [{"lr": 1.2e-3, "weight_decay": 0.05, "params": [0, 1]}]}
    scaler = {  # torch.cuda.amp.GradScaler.state_dict()
        "scale": 65536.0,
        "growth_factor": 2.0,
        "backoff_factor": 0.5,
        "growth_interval": 2000,
        "_growth_tracker": 7,
    }
    checkpoint = {"model": weights, "optimizer": optimizer, "epoch": epoch, "scaler": scaler}
    torch.save({**checkpoint, "args": argparse.Namespace(**args)}, path)
    return path


def tiny_vit_config(**overrides):
    """The vit-tiny preset shrunk to 32 px and one block (OVERRIDES win)."""
    from cxr_vitmae import CXRViTMAEConfig

    return CXRViTMAEConfig.from_preset("vit-tiny", **{"image_size": 32, "num_hidden_layers": 1, **overrides})


def small_densenet_config(**overrides):
    """A DenseNet with growth rate 8 and two 2-layer blocks at 32 px: not one of torchvision's / timm's variants."""
    from cxr_vitmae import CXRDenseNetConfig

    return CXRDenseNetConfig(**{"growth_rate": 8, "block_config": (2, 2), "image_size": 32, **overrides})


def one_error_line(capsys, argv: list[str]) -> str:
    """Run `cxr-vitmae ARGV` in-process, expect exit status 1, and return its single stderr line."""
    from cxr_vitmae.cli import main

    capsys.readouterr()  # what came before the command (e.g. save_pretrained's progress bar) is not its output
    assert main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def assert_readable_png(path: Path) -> None:
    """A figure a person can read: a PNG whose sides both reach the panel minimum, with something drawn on it."""
    import numpy as np
    from PIL import Image

    from cxr_vitmae.evaluation.figures import PANEL_PIXELS

    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) >= PANEL_PIXELS, (path, image.size)
        assert np.asarray(image.convert("L")).std() > 5, path


def set_checkpointing(model: torch.nn.Module, enabled: bool) -> None:
    """Activation checkpointing on or off under the name the installed transformers gives it (`activation_*` from
    5.23, `gradient_*` before it and deprecated after), checking the model reports the new state."""
    prefix = "activation" if hasattr(model, "activation_checkpointing_enable") else "gradient"
    getattr(model, f"{prefix}_checkpointing_{'enable' if enabled else 'disable'}")()
    assert getattr(model, f"is_{prefix}_checkpointing") is enabled
