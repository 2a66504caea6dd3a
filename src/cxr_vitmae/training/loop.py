"""The optimisation loop both recipes share: gradient accumulation, per-iteration schedule, logging, resumable
checkpoints, a stop on non-finite loss, and an epoch-end hook (validation or reconstruction figures)."""

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; nothing of that step was applied or saved."""


@dataclass
class TrainerState:
    """Counters a resumed run continues from; saved with every checkpoint."""

    step: int = 0  # optimiser updates done
    epoch: int = 0  # current epoch
    batches_in_epoch: int = 0  # batches of the current epoch already consumed
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None  # the selected checkpoint's validation record (fine-tuning)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainerState":
        return cls(**{key: values[key] for key in ("step", "epoch", "batches_in_epoch", "history", "best")})


@dataclass
class Schedule:
    """Steps of the run, in optimiser updates."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int

    @classmethod
    def plan(
        cls, batches_per_epoch: int, accumulation: int, epochs: float, max_steps: int | None, warmup_epochs: float
    ):
        # Accelerate also steps at the end of every pass over the loader, on a shorter accumulation window.
        steps_per_epoch = max(1, math.ceil(batches_per_epoch / accumulation))
        total = max_steps if max_steps is not None else max(1, math.ceil(epochs * steps_per_epoch))
        return cls(steps_per_epoch, total, min(total, round(warmup_epochs * steps_per_epoch)))


def train(
    accelerator: Accelerator,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    train_loader: DataLoader,
    schedule: Schedule,
    state: TrainerState,
    output_dir: str | Path,
    checkpointing_steps: int | None,
    logging_steps: int,
    on_epoch_end: Callable[[TrainerState, bool], None],
) -> TrainerState:
    """Run optimiser steps until `schedule.total_steps` over the `prepare`d `train_loader`. `on_epoch_end(state,
    is_last)` runs after every complete epoch but the
    last, and once at the end of the run."""
    progress = tqdm(
        total=schedule.total_steps, initial=state.step, disable=not accelerator.is_local_main_process, desc="train"
    )
    window_start, window_images, window_loss, window_batches = time.perf_counter(), 0, 0.0, 0
    while state.step < schedule.total_steps:
        # Training mode for every pass: `from_pretrained` returns a model in eval mode, and the epoch-end hook's
        # validation leaves it there; without this, drop path and BatchNorm's batch statistics would be off.
        model.train()
        # accelerate's loader passes the epoch to our sampler and dataset (new shuffle, new augmentations); the
        # skipping copy of a resumed run inherits it.
        train_loader.set_epoch(state.epoch)
        batches = (
            accelerator.skip_first_batches(train_loader, state.batches_in_epoch)
            if state.batches_in_epoch
            else train_loader
        )
        for batch in batches:
            with accelerator.accumulate(model):
                loss = model(**{key: value for key, value in batch.items() if key != "index"}).loss
                # Every process's loss: all stop together, where one raising alone would leave the others waiting in
                # the gradient all-reduce until the collective's timeout.
                losses = accelerator.gather(loss.detach().float().reshape(1))
                if not torch.isfinite(losses).all():
                    last = latest_checkpoint(output_dir)
                    raise NonFiniteLossError(
                        f"non-finite loss ({', '.join(f'{value:g}' for value in losses.tolist())}, one per process) "
                        f"at step {state.step + 1}, epoch {state.epoch}; the step was not applied. Last good "
                        f"checkpoint: {last or 'none (set --checkpointing_steps)'}"
                    )
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            state.batches_in_epoch += 1
            window_loss += loss.detach().float().item()
            window_batches += 1
            window_images += len(batch["pixel_values"]) * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            state.step += 1
            progress.update(1)
            if state.step % logging_steps == 0 or state.step == schedule.total_steps:
                elapsed = time.perf_counter() - window_start
                record = {
                    "step": state.step,
                    "epoch": round(state.epoch + state.batches_in_epoch / max(1, len(train_loader)), 4),
                    "train_loss": window_loss / window_batches,
                    "lr": max(group["lr"] for group in optimizer.param_groups),
                    "images_per_s": window_images / elapsed,
                }
                state.history.append(record)
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=state.step)
                progress.set_postfix(loss=f"{record['train_loss']:.4f}", lr=f"{record['lr']:.2e}")
                window_start, window_images, window_loss, window_batches = time.perf_counter(), 0, 0.0, 0
            if checkpointing_steps and state.step % checkpointing_steps == 0:
                save_checkpoint(accelerator, output_dir, state.step, asdict(state))
            if state.step >= schedule.total_steps:
                break
        if state.batches_in_epoch >= len(train_loader):  # a complete epoch, also when the budget ended with it
            state.epoch, state.batches_in_epoch = state.epoch + 1, 0
            if state.step < schedule.total_steps:
                on_epoch_end(state, False)
    progress.close()
    # Also reached by a run resumed from its final checkpoint, which has no step left to take.
    on_epoch_end(state, True)
    return state


def resume_state(accelerator: Accelerator, checkpoint: Path | None) -> TrainerState:
    if checkpoint is None:
        return TrainerState()
    state = TrainerState.from_dict(load_checkpoint(accelerator, checkpoint))
    accelerator.print(f"resumed from {checkpoint} at step {state.step} (epoch {state.epoch})")
    return state
