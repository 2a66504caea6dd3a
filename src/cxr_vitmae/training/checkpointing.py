"""Resumable checkpoints: accelerate's `save_state` (model, optimiser, scheduler, grad scaler, every process's RNG
states) plus the trainer's own counters, written so that a checkpoint directory exists only once it is complete."""

import json
import os
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator

TRAINER_STATE = "trainer_state.json"


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def save_checkpoint(accelerator: Accelerator, output_dir: str | Path, step: int, trainer_state: dict[str, Any]) -> Path:
    """Write checkpoints/step-N. It is written under a temporary name and renamed when complete, so a run killed
    while saving leaves the previous checkpoint as the latest one."""
    final = checkpoints_dir(output_dir) / f"step-{step:08d}"
    partial = final.with_name(final.name + ".partial")
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / TRAINER_STATE).write_text(json.dumps({**trainer_state, "step": step}, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
    accelerator.wait_for_everyone()
    return final


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    complete = sorted(path for path in checkpoints_dir(output_dir).glob("step-*") if (path / TRAINER_STATE).is_file())
    return complete[-1] if complete else None


def resolve_checkpoint(resume_from_checkpoint: str | None, output_dir: str | Path) -> Path | None:
    """`--resume_from_checkpoint`: a checkpoint directory, or "latest" (None when the run has none yet)."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        return latest_checkpoint(output_dir)
    path = Path(resume_from_checkpoint)
    if not (path / TRAINER_STATE).is_file():
        raise FileNotFoundError(f"{path}: not a complete checkpoint (no {TRAINER_STATE})")
    return path


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict[str, Any]:
    """Restore everything `save_checkpoint` wrote; returns the trainer's counters."""
    accelerator.load_state(str(path))
    return json.loads((path / TRAINER_STATE).read_text())
