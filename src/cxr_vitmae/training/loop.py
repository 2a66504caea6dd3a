"""The optimisation loop both recipes share: gradient accumulation, per-iteration schedule, logging, resumable
checkpoints, a stop on non-finite loss, and an epoch-end hook (validation or reconstruction figures).

The loop never waits for the device between steps: the loss is summed on the device and read (and checked for
NaN/inf, across processes) only at logging steps, before every checkpoint and before every epoch-end hook, so no
checkpoint, selected model or figure comes from non-finite weights. A GPU thus runs ahead of Python by as many
steps as it can queue; the price is that a non-finite loss is reported at the next check, naming the steps since
the previous one."""

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

from .arguments import RecipeArguments
from .checkpointing import latest_checkpoint, load_checkpoint, resolve_checkpoint, save_checkpoint


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; nothing since the previous check (see the loop's docstring) was saved."""


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
    args: RecipeArguments,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    train_loader: DataLoader,
    schedule: Schedule,
    on_epoch_end: Callable[[TrainerState, bool], None],
    prepare_batch: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> TrainerState:
    """Run optimiser steps until `schedule.total_steps` over the `prepare`d `train_loader`, and return the final
    `TrainerState`. `on_epoch_end(state, is_last)` runs after every complete epoch but the last, and once at the end
    of the run. `prepare_batch` turns each batch, already on the device, into the model's inputs (the device half of
    augmentation).

    From the recipe's `args`: the run resumes from `resume_from_checkpoint` when given (a checkpoint directory, or
    "latest" in output_dir/checkpoints, which starts afresh when there is none yet), saves a checkpoint every
    `checkpointing_steps` into `output_dir`, and logs every `logging_steps`."""
    output_dir, checkpointing_steps, logging_steps = args.output_dir, args.checkpointing_steps, args.logging_steps
    state = resume_state(accelerator, resolve_checkpoint(args.resume_from_checkpoint, output_dir))
    progress = tqdm(
        total=schedule.total_steps, initial=state.step, disable=not accelerator.is_local_main_process, desc="train"
    )
    window = _Window(accelerator)
    checked_step = state.step
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
            if prepare_batch is not None:
                batch = prepare_batch(batch)
            with accelerator.accumulate(model):
                loss = model(**{key: value for key, value in batch.items() if key != "index"}).loss
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            state.batches_in_epoch += 1
            window.add(loss, len(batch["pixel_values"]))
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            state.step += 1
            progress.update(1)
            logging = state.step % logging_steps == 0 or state.step == schedule.total_steps
            saving = bool(checkpointing_steps) and state.step % checkpointing_steps == 0
            if logging or saving:
                mean_loss = window.checked_mean_loss(state, checked_step, output_dir)
                checked_step = state.step
            if logging:
                record = {
                    "step": state.step,
                    "epoch": round(state.epoch + state.batches_in_epoch / max(1, len(train_loader)), 4),
                    "train_loss": mean_loss,
                    "lr": max(group["lr"] for group in optimizer.param_groups),
                    "images_per_s": window.images_per_second(),
                }
                state.history.append(record)
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=state.step)
                progress.set_postfix(loss=f"{record['train_loss']:.4f}", lr=f"{record['lr']:.2e}")
                window.reset()
            if saving:
                save_checkpoint(accelerator, output_dir, state.step, asdict(state))
            if state.step >= schedule.total_steps:
                break
        if state.batches_in_epoch >= len(train_loader):  # a complete epoch, also when the budget ended with it
            state.epoch, state.batches_in_epoch = state.epoch + 1, 0
            if state.step < schedule.total_steps:
                window.checked_mean_loss(state, checked_step, output_dir)
                checked_step = state.step
                on_epoch_end(state, False)
    progress.close()
    window.checked_mean_loss(state, checked_step, output_dir)
    # Also reached by a run resumed from its final checkpoint, which has no step left to take.
    on_epoch_end(state, True)
    return state


class _Window:
    """Loss and images since the last logging step, the loss summed on the device (no host synchronisation)."""

    def __init__(self, accelerator: Accelerator) -> None:
        self.accelerator = accelerator
        self.reset()

    def reset(self) -> None:
        self.start, self.images, self.batches, self.loss_sum = time.perf_counter(), 0, 0, None

    def add(self, loss: torch.Tensor, batch_size: int) -> None:
        loss = loss.detach().float()
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
        self.batches += 1
        self.images += batch_size * self.accelerator.num_processes

    def checked_mean_loss(self, state: TrainerState, checked_step: int, output_dir: str | Path) -> float | None:
        """The window's mean loss over every process; raises `NonFiniteLossError` if any process's sum is not
        finite (a sum of losses is finite exactly when each is). Every process reaches this at the same step:
        all stop together, where one raising alone would leave the others waiting in the next all-reduce."""
        local = self.loss_sum if self.loss_sum is not None else torch.zeros((), device=self.accelerator.device)
        sums = self.accelerator.gather(local.reshape(1))
        if not torch.isfinite(sums).all():
            last = latest_checkpoint(output_dir)
            steps = f"step {state.step}" if state.step - checked_step <= 1 else f"steps {checked_step + 1}-{state.step}"
            raise NonFiniteLossError(
                f"non-finite loss (summed since the last check: {', '.join(f'{v:g}' for v in sums.tolist())}, one per "
                f"process) in {steps}, epoch {state.epoch}; nothing since was saved. Last good checkpoint: "
                f"{last or 'none (set --checkpointing_steps)'}"
            )
        return float(sums.sum()) / (self.batches * self.accelerator.num_processes) if self.batches else None

    def images_per_second(self) -> float:
        return self.images / (time.perf_counter() - self.start)


def resume_state(accelerator: Accelerator, checkpoint: Path | None) -> TrainerState:
    if checkpoint is None:
        return TrainerState()
    state = TrainerState.from_dict(load_checkpoint(accelerator, checkpoint))
    accelerator.print(f"resumed from {checkpoint} at step {state.step} (epoch {state.epoch})")
    return state
