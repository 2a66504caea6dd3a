"""Helpers shared by the model tests."""

import os
import subprocess
import sys
import textwrap

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


def run_without_package(script: str, tmp_path) -> str:
    """Run `script` in a fresh interpreter where `import cxr_vitmae` fails, offline, with an empty HF cache."""
    guard = "import sys\nsys.modules['cxr_vitmae'] = None  # makes any import of the package raise ImportError\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", guard + textwrap.dedent(script)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def one_error_line(capsys, argv: list[str]) -> str:
    """Run `cxr-vitmae ARGV` in-process, expect exit status 1, and return its single stderr line."""
    from cxr_vitmae.cli import main

    capsys.readouterr()  # what came before the command (e.g. save_pretrained's progress bar) is not its output
    assert main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]
