"""Recipe arguments: one dataclass per recipe, a YAML config file for the defaults, flags to override them.

`accelerate launch recipes/finetune.py --config recipes/configs/NAME.yaml --learning_rate 1e-3` reads the YAML (keys
are the field names below), then applies the flags; a YAML key that is no field is an error, not a silent no-op.
"""

import argparse
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml
from transformers import HfArgumentParser


@dataclass
class RecipeArguments:
    """Arguments shared by the pre-training and fine-tuning recipes (names follow transformers' examples)."""

    output_dir: str = field(metadata={"help": "final model, metrics.json, figures and checkpoints/ go here"})
    dataset: str = field(default="nih-chestxray14", metadata={"help": "a cxr_vitmae.data corpus name"})
    data_dir: str | None = field(
        default=None,
        metadata={"help": "the corpus as distributed, or a prepared copy (none for hf: its option path names it)"},
    )
    dataset_options: str = field(
        default="{}", metadata={"help": "corpus options as a YAML/JSON mapping, e.g. '{views: [PA]}'"}
    )
    model: str = field(
        default="vit-small",
        metadata={
            "help": "a preset (vit-tiny/small/base/large, densenet121/169/201, timm:ARCH for any timm network), a "
            "model directory or a Hub repository id (e.g. timm/resnet50.a1_in1k: its weights, a new head)"
        },
    )
    model_overrides: str = field(
        default="{}", metadata={"help": "config fields on top of the preset, YAML/JSON mapping (e.g. image_size)"}
    )
    image_size: int = field(default=224, metadata={"help": "input resolution"})
    num_train_epochs: float = field(default=1, metadata={"help": "epochs to train (fractions allowed)"})
    max_train_steps: int | None = field(default=None, metadata={"help": "stop after this many optimiser steps"})
    per_device_train_batch_size: int = field(default=32)
    per_device_eval_batch_size: int = field(default=64)
    gradient_accumulation_steps: int = field(default=1)
    learning_rate: float | None = field(
        default=None, metadata={"help": "absolute peak lr (default: base_learning_rate × global batch / 256)"}
    )
    base_learning_rate: float = field(default=1e-3, metadata={"help": "lr per 256 images of global batch"})
    min_learning_rate: float = field(default=0.0, metadata={"help": "end of the half-cosine"})
    weight_decay: float = field(default=0.05)
    adam_beta1: float = field(default=0.9)
    adam_beta2: float = field(default=0.999)
    warmup_epochs: float = field(default=0.0, metadata={"help": "linear warmup length, in epochs"})
    seed: int = field(default=0)
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "a checkpoints/step-N directory, or 'latest' for the newest in output_dir"}
    )
    checkpointing_steps: int | None = field(default=None, metadata={"help": "save a resumable checkpoint every N"})
    report_to: str = field(default="none", metadata={"help": "none, tensorboard, trackio, wandb (comma-separated)"})
    push_to_hub: bool = field(
        default=False,
        metadata={
            "help": "after training, upload output_dir (weights, processor, code, model card, metrics, figures) to "
            "the Hub repository --hub_model_id, as `cxr-vitmae push` does (HF_TOKEN / HF_ENDPOINT apply)"
        },
    )
    hub_model_id: str | None = field(
        default=None, metadata={"help": "the Hub repository ORG/NAME to push to (required by --push_to_hub)"}
    )
    hub_private_repo: bool = field(
        default=False, metadata={"help": "create the Hub repository as private (an existing one keeps its setting)"}
    )
    mixed_precision: str = field(
        default="auto",
        metadata={
            "help": "auto, no, bf16 or fp16. auto: what `accelerate launch --mixed_precision` asked for if not 'no', "
            "else bf16 where the device computes it natively (CUDA with bf16, a CPU with AVX512-BF16 or AMX), else "
            "fp32; pass no to force fp32"
        },
    )
    dataloader_num_workers: int | None = field(
        default=None,
        metadata={
            "help": "loader processes per training process, persistent across epochs (default: on a GPU this "
            "process's share of the cores less one, at most 8; on the CPU none, the model's threads use every core)"
        },
    )
    augment_on: str = field(
        default="auto",
        metadata={
            "help": "where the training crop and flip run: cpu (loader workers, per image), accelerator (the "
            "training device, batched: workers only decode and draw the crop), or auto (accelerator whenever the "
            "augmentation is crop + flip only: always in pre-training, and without RandAugment in fine-tuning on a "
            "GPU)",
            "choices": ["auto", "cpu", "accelerator"],
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "use the first N training images"})
    logging_steps: int = field(default=10)

    def options(self) -> dict:
        return _mapping(self.dataset_options, "dataset_options")

    def overrides(self) -> dict:
        return _mapping(self.model_overrides, "model_overrides")


@dataclass
class PretrainArguments(RecipeArguments):
    """MAE pre-training (paper §2.1 defaults: mask 0.9, crop scale 0.5-1, AdamW (0.9, 0.95), blr 1.5e-4)."""

    model: str = field(default="vit-small")
    base_learning_rate: float = field(default=1.5e-4)
    adam_beta2: float = field(default=0.95)
    mask_ratio: float = field(default=0.9)
    norm_pix_loss: bool = field(default=False)
    crop_scale_min: float = field(default=0.5, metadata={"help": "RandomResizedCrop lower scale"})
    reconstruction_every_epochs: float = field(default=1, metadata={"help": "reconstruction figure period"})
    snapshot_every_epochs: float | None = field(
        default=None,
        metadata={
            "help": "also save the model every N epochs as output_dir/snapshots/step-S (a model directory, for "
            "fine-tuning from intermediate pre-training); default: only the final model"
        },
    )
    diagnostic_images: int = field(
        default=256,
        metadata={
            "help": "held-out images on which every epoch end scores the masked-patch loss next to two trivial "
            "predictors (each image's visible-pixel mean, the training mean image): from the corpus's validation "
            "split, else the probe corpus's, never of a training patient; 0: none"
        },
    )
    probe_dataset: str | None = field(
        default=None,
        metadata={
            "help": "a labelled cxr_vitmae.data corpus on which every snapshot and the end probe the encoder's pooled "
            "features (k-NN or logistic regression fitted on its train split, mean AUROC on its validation split), "
            "next to the same probe of a random encoder and the paired difference; default: no probe"
        },
    )
    probe_data_dir: str | None = field(
        default=None, metadata={"help": "the probe corpus's data_dir (default: --data_dir when it is --dataset)"}
    )
    probe_dataset_options: str = field(
        default="{}", metadata={"help": "the probe corpus's options as a YAML/JSON mapping"}
    )
    probe_train_images: int = field(
        default=512, metadata={"help": "at most this many probe train images (whole patients, drawn by --seed)"}
    )
    probe_eval_images: int = field(
        default=512, metadata={"help": "at most this many probe validation images (whole patients, drawn by --seed)"}
    )
    probe_method: str = field(
        default="knn",
        metadata={
            "help": "knn (cosine distance, 20 neighbours) or logistic (L2, standardised features); one probe per "
            "label of a multi-label corpus",
            "choices": ["knn", "logistic"],
        },
    )

    def probe_options(self) -> dict:
        return _mapping(self.probe_dataset_options, "probe_dataset_options")

    def probe_data_dir_or_default(self) -> str | None:
        """`--probe_data_dir`, else `--data_dir` when the probe corpus is the pre-training corpus."""
        if self.probe_data_dir is not None or self.probe_dataset != self.dataset:
            return self.probe_data_dir
        return self.data_dir


@dataclass
class FinetuneArguments(RecipeArguments):
    """Fine-tuning (paper §2.2 defaults for ViT-S on NIH: layer decay 0.55, drop path 0.2, RandAugment m6)."""

    model: str = field(default="vit-small")
    base_learning_rate: float = field(default=2.5e-4)
    min_learning_rate: float = field(default=1e-5)
    layer_decay: float | None = field(default=0.55, metadata={"help": "ViT layer-wise lr decay (ignored for CNNs)"})
    drop_path: float = field(default=0.2)
    auto_augment: str | None = field(default="rand-m6-mstd0.5-inc1")
    crop_scale_min: float = field(default=0.08, metadata={"help": "RandomResizedCrop lower scale (timm's default)"})
    eval_every_epochs: float = field(default=1, metadata={"help": "validation period; the best checkpoint is kept"})
    n_bootstrap: int = field(default=1000, metadata={"help": "patient-level bootstrap resamples for the test CIs"})
    label_fraction: float = field(
        default=1.0,
        metadata={
            "help": "fine-tune on this fraction of the training patients (all their images; validation and test "
            "untouched), the same patients for every --seed: drawn with --label_fraction_seed"
        },
    )
    label_fraction_seed: int = field(default=0, metadata={"help": "which patients --label_fraction keeps"})

    def __post_init__(self):
        if not 0.0 < self.label_fraction <= 1.0:
            raise ValueError(f"--label_fraction must be in (0, 1], got {self.label_fraction}")


def _mapping(text: str | dict, name: str) -> dict:
    value = yaml.safe_load(text) if isinstance(text, str) else text
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a mapping, got {text!r}")
    return value


def parse_recipe_arguments(cls: type[RecipeArguments], argv: list[str] | None = None) -> RecipeArguments:
    """`--config FILE.yaml` gives the defaults, the other flags override them."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path, default=None)
    known, rest = pre.parse_known_args(argv)
    parser = HfArgumentParser(cls, description=cls.__doc__)
    parser.add_argument("--config", type=Path, default=None, help="YAML file with defaults for the flags below")
    if known.config is not None:
        if not known.config.is_file():
            parser.error(f"--config {known.config}: no such file")
        config = yaml.safe_load(known.config.read_text()) or {}
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - names)
        if unknown:
            parser.error(f"{known.config}: unknown keys {unknown}; the recipe's fields are {sorted(names)}")
        # Mappings stay mappings (argparse only type-converts string defaults).
        parser.set_defaults(**config)
        # A required field given by the YAML is no longer required on the command line.
        for action in parser._actions:
            if action.dest in config:
                action.required = False
    # `--config` was consumed above; what remains are the dataclass's own flags.
    args = parser.parse_args_into_dataclasses(args=rest)[0]
    if args.push_to_hub:
        from ..hub.push import check_repo_id

        # Checked before training rather than after it.
        try:
            check_repo_id(args.hub_model_id)
        except ValueError as error:
            raise SystemExit(f"--push_to_hub needs --hub_model_id: {error}") from None
    return args
