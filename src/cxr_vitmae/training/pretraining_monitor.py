"""What the pre-training recipe measures while it runs, and where the numbers go: at every epoch end the MAE's
masked-patch loss on held-out images next to two trivial predictors, and at every snapshot and at the end a probe of
the encoder's features on a labelled corpus next to the same probe on a random encoder, with the paired difference
of the two (the measurements are
`evaluation.pretraining_diagnostics`'; this module picks the images, keeps them between epochs and writes the
records into the trainer's history, the trackers and the log).

Which images (`PretrainingMonitor.prepare`):
- held-out reconstruction: `--diagnostic_images` images of the pre-training corpus's validation split, or, when it
  has none (the pre-training unions hold train images only), of the probe corpus's validation split. Images of any
  patient of the pre-training train split are left out, so they are never training images;
- the mean-image predictor: `MEAN_IMAGE_SAMPLE` training images;
- the probe: whole patients of the probe corpus's train split, at most `--probe_train_images` images, to fit it;
  whole patients of its validation split (none of the pre-training train patients), at most `--probe_eval_images`
  images, to score it.

Only the main process decodes images and measures; the others go on to the next epoch and wait for it at their first
gradient synchronisation, as they do for the reconstruction figures. Every record is appended to the trainer's
history at an epoch end, after any checkpoint of that step was written: a run resumed from that checkpoint replays
that epoch end (with the same masks and weights) and so records it once, neither lost nor duplicated.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import datasets
import numpy as np
import torch
from accelerate import Accelerator

from ..data import label_names, load_cxr_dataset
from ..evaluation.pretraining_diagnostics import (
    evaluation_pixels,
    mean_training_image,
    probe_difference,
    probe_encoder,
    random_encoder,
    reconstruction_baselines,
)
from .arguments import PretrainArguments
from .loop import TrainerState

# Training images averaged into the mean-image predictor: a sample, so that a 0.5M-image union costs seconds at the
# start. A mean of n images adds about 1/n of the pixel variance to the predictor's expected loss: 0.2 % at 512.
MEAN_IMAGE_SAMPLE = 512
# The k-NN probe's neighbours: DINO's k-NN evaluation of self-supervised ViTs uses 20.
PROBE_NEIGHBOURS = 20
# Patient-level bootstrap resamples of the probe's mean AUROC: 0.09 s for 512 images and 14 labels on one core here.
PROBE_BOOTSTRAP = 200
RECONSTRUCTION_KEYS = {
    "mae": "heldout_mae_loss",
    "visible_mean": "heldout_visible_mean_loss",
    "mean_image": "heldout_mean_image_loss",
}


class PretrainingMonitor:
    """The recipe's diagnostics: `prepare` once (every process), `start` with the model, then `at_epoch_end`."""

    def __init__(self, args: PretrainArguments, accelerator: Accelerator, description: str) -> None:
        self.args = args
        self.accelerator = accelerator
        # One line for the start banner: which images every measurement uses.
        self.description = description
        self.held_out: torch.Tensor | None = None
        self.mean_image: torch.Tensor | None = None
        self.noise: torch.Tensor | None = None
        self.probe_data: dict[str, Any] | None = None
        self.random_probe: dict | None = None
        self.batches_per_epoch = 1

    @classmethod
    def prepare(
        cls, args: PretrainArguments, accelerator: Accelerator, splits: datasets.DatasetDict
    ) -> PretrainingMonitor:
        """Load the probe corpus (every process, so that a bad `--probe_*` flag stops all of them before training),
        choose the images and, in the main process, decode them through the evaluation transform."""
        probe_splits = _load_probe_corpus(args, accelerator) if args.probe_dataset is not None else None
        training_patients = _patients_with_prefixes(_column(splits["train"], "patient_id"))
        monitor = cls(args, accelerator, "")
        held_out = monitor._choose_held_out(splits, probe_splits, training_patients)
        probe = "no probe (no --probe_dataset)"
        if probe_splits is not None:
            probe = monitor._choose_probe(probe_splits, training_patients)
        monitor.description = f"diagnostics: {held_out}; {probe}"
        return monitor

    def _choose_held_out(
        self, splits: datasets.DatasetDict, probe_splits: datasets.DatasetDict | None, training_patients: set[str]
    ) -> str:
        """Pick (and in the main process decode) the held-out images and the mean image; describe them."""
        args = self.args
        split, source = _held_out_split(args, splits, probe_splits)
        if split is None:
            return f"no held-out reconstruction loss ({source})"
        split, left_out = _outside(split, training_patients)
        split = patient_sample(split, args.diagnostic_images, args.seed)
        if not len(split):
            return f"no held-out reconstruction loss (no image of {source} outside the pre-training patients)"
        if self.accelerator.is_main_process:
            workers = args.dataloader_num_workers or 0
            self.held_out = evaluation_pixels(split, args.image_size, seed=args.seed, num_workers=workers)
            self.mean_image = mean_training_image(
                splits["train"], args.image_size, MEAN_IMAGE_SAMPLE, seed=args.seed, num_workers=workers
            )
        averaged = min(MEAN_IMAGE_SAMPLE, len(splits["train"]))
        return (
            f"held-out masked-patch loss at every epoch end on {len(split)} images of {source} (not training images"
            + (f"; {left_out} of pre-training patients left out" if left_out else "")
            + f"), against each image's visible-pixel mean and the mean of {averaged} training images"
        )

    def _choose_probe(self, probe_splits: datasets.DatasetDict, training_patients: set[str]) -> str:
        """Pick (and in the main process decode) the probe's train and eval images; describe them."""
        args = self.args
        train = patient_sample(probe_splits["train"], args.probe_train_images, args.seed)
        evaluation, left_out = _outside(probe_splits["validation"], training_patients)
        evaluation = patient_sample(evaluation, args.probe_eval_images, args.seed)
        for split, images in (("train", train), ("validation", evaluation)):
            if not len(images):
                raise SystemExit(
                    f"--probe_dataset {args.probe_dataset}: no {split} image to probe with (whole patients within "
                    f"--probe_{'train' if split == 'train' else 'eval'}_images, none of a pre-training patient)"
                )
        class_names = label_names(args.probe_dataset, args.probe_data_dir_or_default(), **args.probe_options())
        scored = scorable_labels(np.asarray(_column(evaluation, _label_key(evaluation)), dtype=np.float64), class_names)
        if not scored:
            raise SystemExit(
                f"--probe_dataset {args.probe_dataset}: no label has both a positive and a negative image among the "
                f"probe's {len(evaluation)} validation images, so no AUROC can be scored; raise --probe_eval_images "
                "or probe a corpus with more validation patients"
            )
        if self.accelerator.is_main_process:
            self.probe_data = probe_data(
                train,
                evaluation,
                args.image_size,
                seed=args.seed,
                num_workers=args.dataloader_num_workers or 0,
                class_names=class_names,
            )
        method = f"k-NN (k={PROBE_NEIGHBOURS}, cosine)" if args.probe_method == "knn" else "logistic-regression"
        return (
            f"{method} probe of the pooled encoder features at every snapshot and at the end, fitted on {len(train)} "
            f"{args.probe_dataset} train images, scored on {len(evaluation)} of its validation images"
            + (f" ({left_out} of pre-training patients left out)" if left_out else "")
            + f" (mean AUROC over the {len(scored)} of {len(class_names)} labels with both values there"
            + (
                ""
                if len(scored) == len(class_names)
                else f"; not scored: {', '.join(name for name in class_names if name not in scored)}"
            )
            + ")"
            + f", against a random encoder (seed {args.seed})"
        )

    def start(self, model: torch.nn.Module, batches_per_epoch: int) -> None:
        """Draw the held-out masks (a generator of their own: the same patches hidden at every epoch, the training
        stream left alone) and probe the random encoder once (main process). `batches_per_epoch` (the training
        loader's length) places the records on the loop's own epoch scale."""
        self.batches_per_epoch = max(1, batches_per_epoch)
        if not self.accelerator.is_main_process:
            return
        if self.held_out is not None:
            generator = torch.Generator().manual_seed(self.args.seed)
            self.noise = torch.rand(len(self.held_out), model.config.num_patches, generator=generator)
        if self.probe_data is not None:
            device = next(model.parameters()).device
            self.random_probe = self._probe(random_encoder(model.config, self.args.seed).to(device))

    def at_epoch_end(self, model: torch.nn.Module, state: TrainerState, *, probe: bool) -> None:
        """Append this epoch end's record to `state.history` (main process): the held-out losses and, with `probe`
        (a snapshot or the end of the run), the probe of `model`'s encoder and the random encoder's."""
        if not self.accelerator.is_main_process or (self.held_out is None and not (probe and self.probe_data)):
            return
        # As the loop's records count epochs: a run that ends mid-epoch (--max_train_steps), or resumes from its final
        # checkpoint (written before that epoch was counted), ends at the fraction it reached.
        epoch = round(state.epoch + state.batches_in_epoch / self.batches_per_epoch, 4)
        record: dict[str, Any] = {"epoch": epoch, "step": state.step}
        lines = []
        if self.held_out is not None:
            losses = reconstruction_baselines(model, self.held_out, self.noise, self.mean_image)
            record.update({RECONSTRUCTION_KEYS[name]: value for name, value in losses.items()})
            lines.append(
                f"held-out masked-patch loss {losses['mae']:.4f} (each image's visible-pixel mean "
                f"{losses['visible_mean']:.4f}, training mean image {losses['mean_image']:.4f})"
            )
        if probe and self.probe_data is not None:
            ours, baseline = self._probe(model), self.random_probe
            data = self.probe_data
            difference = probe_difference(
                ours, baseline, data["eval_labels"], data["eval_patients"], n_bootstrap=PROBE_BOOTSTRAP,
                seed=self.args.seed,
            )  # fmt: skip
            record.update(
                probe_mean_auroc=ours["mean_auroc"],
                probe_mean_auroc_ci95=ours["mean_auroc_ci95"],
                probe_random_mean_auroc=baseline["mean_auroc"],
                probe_random_mean_auroc_ci95=baseline["mean_auroc_ci95"],
                probe_minus_random=difference["difference"],
                probe_minus_random_ci95=difference["difference_ci95"],
                probe_minus_random_p_value=difference["p_value"],
                probe_method=ours["method"],
                n_probe_train_images=ours["n_train"],
                n_probe_eval_images=ours["n_eval"],
            )
            lines.append(
                f"{ours['method']} probe mean AUROC {estimate_text(ours['mean_auroc'], ours['mean_auroc_ci95'])} "
                f"(random encoder {estimate_text(baseline['mean_auroc'], baseline['mean_auroc_ci95'])}; paired "
                f"difference {estimate_text(difference['difference'], difference['difference_ci95'], signed=True)})"
            )
        state.history.append(record)
        self.accelerator.log({k: v for k, v in record.items() if _is_scalar(v) and k != "step"}, step=state.step)
        self.accelerator.print(f"epoch {epoch:g}: " + "; ".join(lines))

    def _probe(self, encoder: torch.nn.Module) -> dict:
        data = self.probe_data
        return probe_encoder(
            encoder,
            data["train_pixels"],
            data["train_labels"],
            data["eval_pixels"],
            data["eval_labels"],
            label_names=data["label_names"],
            eval_patient_ids=data["eval_patients"],
            method=self.args.probe_method,
            k=PROBE_NEIGHBOURS,
            n_bootstrap=PROBE_BOOTSTRAP,
            seed=self.args.seed,
            batch_size=self.args.per_device_eval_batch_size,
        )


def patient_sample(split: datasets.Dataset, max_images: int, seed: int) -> datasets.Dataset:
    """The images of whole patients, taken in an order drawn by `seed` while they fit in `max_images` (a patient
    with more images than are left is passed over), in the split's order. A patient's images stay together, so a
    patient-level bootstrap over the sample is one over its patients."""
    patients = _column(split, "patient_id")
    counts = Counter(patients)
    chosen, total = set(), 0
    for patient in np.random.default_rng(seed).permutation(sorted(counts)):
        if total + counts[patient] <= max_images:
            chosen.add(patient)
            total += counts[patient]
    return split.select([index for index, patient in enumerate(patients) if patient in chosen])


def _patients_with_prefixes(patients: list[str]) -> set[str]:
    """The pre-training patients, also without the source prefix the pre-training unions give them
    ("nih-chestxray14/00012" is patient "00012" of the NIH corpus)."""
    return set(patients) | {patient.rsplit("/", 1)[-1] for patient in patients}


def _outside(split: datasets.Dataset, training_patients: set[str]) -> tuple[datasets.Dataset, int]:
    """`split` less the images of pre-training patients, and how many those were."""
    keep = [index for index, patient in enumerate(_column(split, "patient_id")) if patient not in training_patients]
    return split.select(keep), len(split) - len(keep)


def _held_out_split(
    args: PretrainArguments, splits: datasets.DatasetDict, probe_splits: datasets.DatasetDict | None
) -> tuple[datasets.Dataset | None, str]:
    """The split the held-out reconstruction images come from and its name; (None, why) when there is none."""
    if args.diagnostic_images <= 0:
        return None, "--diagnostic_images 0"
    if "validation" in splits:
        return splits["validation"], f"{args.dataset}'s validation split"
    if probe_splits is not None:
        return probe_splits["validation"], f"the probe corpus {args.probe_dataset}'s validation split"
    return None, f"{args.dataset} has no validation split and no --probe_dataset was given"


def _load_probe_corpus(args: PretrainArguments, accelerator: Accelerator) -> datasets.DatasetDict:
    """The probe corpus's splits, built by each machine's main process first (as `load_corpus` builds the training
    corpus); refused unless it has labels and both a train and a validation split."""
    data_dir, options = args.probe_data_dir_or_default(), args.probe_options()
    with accelerator.local_main_process_first():
        probe_splits = load_cxr_dataset(args.probe_dataset, data_dir, **options)
    missing = [split for split in ("train", "validation") if split not in probe_splits]
    if missing:
        raise SystemExit(
            f"--probe_dataset {args.probe_dataset} in {data_dir} has no {' or '.join(missing)} split with options "
            f"{options} (only {', '.join(probe_splits)}): the probe is fitted on train and scored on validation"
        )
    features = probe_splits["train"].features
    if "label" not in features and "labels" not in features:
        raise SystemExit(f"--probe_dataset {args.probe_dataset} has no labels to probe: give a labelled corpus")
    return probe_splits


def probe_data(
    train: datasets.Dataset,
    evaluation: datasets.Dataset,
    image_size: int,
    *,
    seed: int,
    class_names: list[str],
    num_workers: int = 0,
) -> dict:
    """The probe's images through the evaluation transform, with their labels (NaN = unknown, or class indices), the
    eval images' patients and the corpus's `class_names` (as "label_names")."""
    label_key = _label_key(train)

    def pixels(split: datasets.Dataset) -> torch.Tensor:
        return evaluation_pixels(split, image_size, seed=seed, num_workers=num_workers)

    return {
        "train_pixels": pixels(train),
        "train_labels": np.asarray(_column(train, label_key), dtype=np.float64),
        "eval_pixels": pixels(evaluation),
        "eval_labels": np.asarray(_column(evaluation, label_key), dtype=np.float64),
        "eval_patients": _column(evaluation, "patient_id"),
        "label_names": class_names,
    }


def _label_key(split: datasets.Dataset) -> str:
    return "label" if "label" in split.features else "labels"


def scorable_labels(labels: np.ndarray, class_names: list[str]) -> list[str]:
    """The labels an AUROC can score on images with these `labels` ((N, C) with NaN = unknown, or (N,) class
    indices): those with both a positive and a negative image among the known values."""
    if labels.ndim == 1:
        labels = np.eye(len(class_names))[labels.astype(int)]
    scored = []
    for name, column in zip(class_names, labels.T, strict=True):
        known = column[~np.isnan(column)]
        if (known == 1).any() and (known == 0).any():
            scored.append(name)
    return scored


def _column(split: datasets.Dataset, name: str) -> list:
    """One column as a list, read in one query: iterating `split[name]` reads it row by row (300k patient ids, measured
    here: 6.4 s against 0.8 s)."""
    return split.select_columns([name])[:][name]


def estimate_text(value: float | None, interval: list[float] | None, *, signed: bool = False) -> str:
    """`0.612 [0.571, 0.650]` (or `+0.036 [-0.010, +0.077]` when `signed`); "undefined" where `value` is None."""
    if value is None:
        return "undefined"
    form = "+.3f" if signed else ".3f"
    return format(value, form) + (f" [{interval[0]:{form}}, {interval[1]:{form}}]" if interval else "")


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
