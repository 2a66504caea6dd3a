"""Set-up steps both recipes take in the same way: the Accelerator, the corpus, the optimiser and its schedule, and
the record of the run (training_args.json, the start banner, the trackers)."""

import os
import sys
from collections.abc import Callable

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed

from ..data import load_cxr_dataset
from ..errors import InputError
from ..hub.provenance import write_training_args
from .arguments import RecipeArguments
from .loop import Schedule
from .optim import cosine_schedule_with_warmup, parameter_groups, scaled_learning_rate


def run_recipe(main: Callable[[], None]) -> None:
    """A recipe's entry point: what the user can fix from the message (a bad table row, a missing corpus file, an
    unreadable image) ends the process with that one line on stderr and exit status 1, in every process of an
    `accelerate launch`, before any training; anything else keeps its traceback, as does every error with
    CXR_VITMAE_DEBUG=1. (The launcher then adds its own report that a process failed; `accelerate launch --quiet`
    leaves it out.)"""
    from ..cli import DEBUG_ENVIRONMENT, USER_ERRORS

    try:
        main()
    except USER_ERRORS as error:
        if os.environ.get(DEBUG_ENVIRONMENT, "") not in ("", "0"):
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


def native_bf16_supported() -> bool:
    """Whether this process's device multiplies bf16 natively: an Ampere-or-newer GPU, or a CPU with AVX512-BF16 or
    AMX (oneDNN's bf16 kernels). Elsewhere bf16 autocast is emulated and slower than fp32."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_mixed_precision(requested: str) -> str:
    """`auto` → the launcher's `--mixed_precision` when it asked for one (ACCELERATE_MIXED_PRECISION other than
    "no"), else bf16 where it is native, else "no". Any other value is used as given."""
    if requested != "auto":
        return requested
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if launcher != "no":
        return launcher
    return "bf16" if native_bf16_supported() else "no"


def make_accelerator(args: RecipeArguments) -> Accelerator:
    """On a machine without CUDA, `cpu=True`: that is what makes `accelerate launch --multi_gpu --num_processes N`
    start N gloo processes on CPU instead of N independent single-process runs.

    The recipe's `--mixed_precision` is passed explicitly, so it, not the launcher's flag, decides (an explicit
    argument wins over ACCELERATE_MIXED_PRECISION in Accelerate); `auto` resolves as `resolve_mixed_precision`
    says, and `args.mixed_precision` then records what ran, for `training_args.json`."""
    args.mixed_precision = resolve_mixed_precision(args.mixed_precision)
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if args.report_to == "none" else args.report_to.split(","),
        project_dir=args.output_dir,
        # With the loaders' pinned memory (on CUDA), batches are copied to the GPU without blocking the host.
        dataloader_config=DataLoaderConfiguration(non_blocking=torch.cuda.is_available()),
    )
    # One stream per process, as the original MAE scripts seed (seed + rank): otherwise every GPU would draw the same
    # masks and drop-path patterns at the same batch position. DDP still starts every process from rank 0's weights.
    set_seed(args.seed, device_specific=True)
    return accelerator


def load_corpus(args: RecipeArguments, accelerator: Accelerator):
    """The corpus's DatasetDict, built (and cached) by each machine's main process first, then read by the others.

    Per machine, not once globally: the datasets cache is usually on each machine's own disk, and with the global
    main first, every process of the other machines would build its machine's copy at once. Where machines share
    one cache directory, datasets' lock on it makes the second builder wait and reuse the first's build."""
    with accelerator.local_main_process_first():
        splits = load_cxr_dataset(args.dataset, args.data_dir, **args.options())
    if getattr(args, "label_fraction", 1.0) < 1.0:
        splits["train"] = patient_subset(splits["train"], args.label_fraction, args.label_fraction_seed)
    if args.max_train_samples is not None:
        splits["train"] = splits["train"].select(range(min(args.max_train_samples, len(splits["train"]))))
    return splits


def check_validation_selects(validation, dataset: str) -> None:
    """Refuse, before training, a multi-label validation split on which no class has both a positive and a
    negative image: its mean AUROC is undefined at every epoch, so no checkpoint could be selected.

    Raises:
        InputError: naming the split's size and how to get a usable one.
    """
    labels = np.asarray(validation["labels"], dtype=np.float32)
    usable = [(column == 1).any() and (column == 0).any() for column in labels.T]
    if not any(usable):
        patients = len(set(validation["patient_id"]))
        raise InputError(
            f"{dataset}: the validation split ({len(labels)} images of {patients} patients) has no class with both "
            "positive and negative images, so its mean AUROC, which selects the checkpoint, is undefined: carve a "
            "larger one (dataset option validation_fraction) or give more validation patients in a split column"
        )


def patient_subset(split, fraction: float, seed: int):
    """The images of round(fraction x patients) patients (at least one), drawn by `seed` from the sorted patient ids,
    so that the subset depends on the corpus and the seed only, and a patient's images stay together (no patient
    is half-labelled)."""
    patients = np.array(sorted(set(split["patient_id"])))
    kept = max(1, round(fraction * len(patients)))
    chosen = set(np.random.default_rng(seed).permutation(patients)[:kept].tolist())
    return split.select([i for i, patient in enumerate(split["patient_id"]) if patient in chosen])


def global_batch_size(args: RecipeArguments, accelerator: Accelerator) -> int:
    return args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps


def plan_schedule(args: RecipeArguments, batches_per_epoch: int) -> Schedule:
    """The run's optimiser steps and warmup from `--num_train_epochs` / `--max_train_steps` / `--warmup_epochs`.

    Raises:
        InputError: the training split is smaller than one batch, so an epoch would hold no step (the loader drops
            the last, incomplete batch) and the run would never end.
    """
    if batches_per_epoch == 0:
        raise InputError(
            f"the training split holds fewer images than one batch of --per_device_train_batch_size "
            f"{args.per_device_train_batch_size} per process: lower it, or train on more images"
        )
    return Schedule.plan(
        batches_per_epoch,
        args.gradient_accumulation_steps,
        args.num_train_epochs,
        args.max_train_steps,
        args.warmup_epochs,
    )


def make_optimizer(
    model: torch.nn.Module,
    args: RecipeArguments,
    accelerator: Accelerator,
    schedule: Schedule,
    layer_decay: float | None = None,
):
    """AdamW over `parameter_groups` (no decay on biases and norms, and in fine-tuning on the position table and CLS
    token; layer-wise lr decay when given) and the per-iteration warmup + half-cosine schedule. The schedule is not
    `prepare`d: it is stepped once per optimiser update here, and registered so that checkpoints carry it."""
    peak_lr = args.learning_rate or scaled_learning_rate(args.base_learning_rate, global_batch_size(args, accelerator))
    optimizer = torch.optim.AdamW(
        parameter_groups(model, weight_decay=args.weight_decay, layer_decay=layer_decay),
        lr=peak_lr,
        betas=(args.adam_beta1, args.adam_beta2),
    )
    scheduler = cosine_schedule_with_warmup(
        optimizer,
        warmup_steps=schedule.warmup_steps,
        total_steps=schedule.total_steps,
        base_lr=peak_lr,
        min_lr=min(args.min_learning_rate, peak_lr),
    )
    accelerator.register_for_checkpointing(scheduler)
    return optimizer, scheduler, peak_lr


def announce_run(
    accelerator: Accelerator,
    args: RecipeArguments,
    schedule: Schedule,
    peak_lr: float,
    *,
    recipe: str,
    title: str,
    n_train_images: int,
) -> None:
    """Record the run before its first step: `training_args.json` in output_dir (main process), one banner line
    (`title`, then the batch arithmetic, the schedule, precision and where the data is prepared), and the
    `--report_to` trackers, as project `cxr-vitmae-{recipe}`."""
    batch = global_batch_size(args, accelerator)
    if accelerator.is_main_process:
        facts = {"n_train_images": n_train_images, "global_batch_size": batch, "peak_learning_rate": peak_lr}
        write_training_args(args.output_dir, args, recipe=recipe, **facts)
    accelerator.print(
        f"{title}: {n_train_images} training images, {accelerator.num_processes} process(es) × "
        f"{args.per_device_train_batch_size} per device × {args.gradient_accumulation_steps} accumulation = global "
        f"batch {batch}; {schedule.total_steps} steps, warmup {schedule.warmup_steps}, peak lr {peak_lr:.3g}; "
        f"mixed precision {accelerator.mixed_precision}; augmentation on {args.augment_on}, "
        f"{args.dataloader_num_workers} loader worker(s)"
    )
    if args.report_to != "none":
        accelerator.init_trackers(f"cxr-vitmae-{recipe}", config=vars(args))
