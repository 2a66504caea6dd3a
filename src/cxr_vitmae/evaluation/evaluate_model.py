"""A saved classifier on one split of a corpus, with the metrics.json of the contract: the one evaluation path that
both `cxr-vitmae evaluate` and the fine-tuning recipe's final test evaluation take, so that the two give the same
numbers for the same model directory.

The preprocessing is the model directory's own image processor (resize, crop, normalisation), the model is loaded
from that directory in float32 (whatever precision it was trained in), and the bootstrap is seeded by
`bootstrap_seed`, not by the training seed: the same directory and split always give the same metrics.json.
"""

import json
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from transformers import AutoConfig

from ..data import label_names, load_cxr_dataset, split_source, synthetic_corpus
from ..data.errors import CorpusError
from ..data.transforms import evaluation_transform
from ..errors import InputError
from ..model_directory import model_directory
from ..predict import load_classifier
from ..training.data import TransformedCorpus, make_loader
from .metrics import classification_metrics
from .prediction import predict

EVALUATION_PRECISION = "float32"
DEFAULT_RESAMPLES = 1000


def check_model_labels(model_dir: str | Path, dataset: str, options: dict[str, Any]) -> list[str]:
    """The corpus's label names, after checking that the model in `model_dir` predicts exactly those, in that order
    (read from its config, before any weights or images)."""
    names = label_names(dataset, **options)
    config = AutoConfig.from_pretrained(model_dir)
    model_labels = [config.id2label[i] for i in range(config.num_labels)]
    if model_labels != names:
        raise InputError(
            f"{model_dir} predicts {model_labels}, but {dataset} is labelled {names} (order matters); evaluate it on "
            "the corpus and options it was trained for"
        )
    return names


def load_split(dataset: str, data_dir: str | Path, split: str, **options: Any) -> datasets.Dataset:
    """Split `split` of corpus `dataset` read from `data_dir` with `options`, for the commands that score a saved
    model on one split (`evaluate`, `localize`).

    Raises:
        CorpusError: the corpus has no such split (the message names the splits it has).
    """
    splits = load_cxr_dataset(dataset, data_dir, **options)
    if split not in splits:
        raise CorpusError(f"{dataset} has no {split!r} split; it has {', '.join(splits)}")
    return splits[split]


def evaluate_split(
    accelerator: Accelerator,
    model_dir: str | Path,
    examples: datasets.Dataset,
    *,
    dataset: str,
    split: str,
    data_dir: str | Path,
    options: dict[str, Any],
    batch_size: int = 64,
    num_workers: int = 0,
    n_bootstrap: int = 1000,
    bootstrap_seed: int = 0,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metrics.json content and the gathered predictions (`scores`, `labels`, `index`) of the classifier saved
    in `model_dir` on `examples`, split `split` of corpus `dataset` read from `data_dir` with `options`.

    Every process calls it (the split is shared out and gathered back, each image counted once); the metrics are
    the same on every process. `selected_by` and `checkpoint` are left for the caller to fill in."""
    names = check_model_labels(model_dir, dataset, options)
    model, processor = load_classifier(model_dir, accelerator.device)
    single_label = "label" in examples.features
    transform = evaluation_transform(
        processor.crop_size["height"],
        resize=processor.size["shortest_edge"],
        mean=float(processor.image_mean[0]),
        std=float(processor.image_std[0]),
    )
    # The transform is deterministic: the corpus seed only keys its (unused) random streams.
    corpus = TransformedCorpus(examples, transform, seed=0, label_key="label" if single_label else "labels")
    loader = accelerator.prepare(make_loader(corpus, batch_size=batch_size, shuffle=False, num_workers=num_workers))
    prediction = predict(accelerator, model, loader)
    patients = examples.select_columns(["patient_id"])
    labels = prediction["labels"].astype(int) if single_label else prediction["labels"]
    metrics = classification_metrics(
        prediction["scores"],
        labels,
        label_names=names,
        patient_ids=[patients[int(i)]["patient_id"] for i in prediction["index"]],
        problem_type=model.config.problem_type,
        n_bootstrap=n_bootstrap,
        seed=bootstrap_seed,
    )
    record = {
        "dataset": dataset,
        "split": split,
        "split_source": split_source(dataset, split, **options),
        "dataset_options": options,
        **metrics,
        "precision": EVALUATION_PRECISION,
        "selected_by": None,
        "checkpoint": None,
        "synthetic_corpus": synthetic_corpus(dataset, data_dir, **options),
    }
    return record, {**prediction, "labels": labels}


def evaluate_model(
    model_dir: str | Path,
    dataset: str,
    data_dir: str | Path,
    *,
    split: str = "test",
    batch_size: int = 64,
    num_workers: int = 0,
    n_bootstrap: int | None = None,
    bootstrap_seed: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """`cxr-vitmae evaluate`: per-class AUROC / AUPRC (accuracy for single-label corpora) with patient-level
    bootstrap CIs of the model in `model_dir` (or a Hub repo id) on `split` of `dataset`, preprocessed as its image
    processor says, in float32.

    The bootstrap settings default to those the model directory's own metrics.json records for the same corpus and
    split (a recipe's run), so that evaluating a recipe's output gives its metrics.json again; else 1000 resamples,
    seed 0."""
    model = model_dir
    model_dir = model_directory(model_dir)
    recorded = recorded_bootstrap(model_dir, dataset, split)
    n_bootstrap = recorded.get("n_resamples", DEFAULT_RESAMPLES) if n_bootstrap is None else n_bootstrap
    bootstrap_seed = recorded.get("seed", 0) if bootstrap_seed is None else bootstrap_seed
    check_model_labels(model_dir, dataset, options)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    metrics, _ = evaluate_split(
        accelerator,
        model_dir,
        load_split(dataset, data_dir, split, **options),
        dataset=dataset,
        split=split,
        data_dir=data_dir,
        options=options,
        batch_size=batch_size,
        num_workers=num_workers,
        n_bootstrap=n_bootstrap,
        bootstrap_seed=bootstrap_seed,
    )
    return {**metrics, "checkpoint": Path(model_dir).name if Path(model).exists() else str(model)}


def recorded_bootstrap(model_dir: Path, dataset: str, split: str) -> dict[str, Any]:
    """The bootstrap settings (`n_resamples`, `seed`) of `model_dir/metrics.json` when it evaluated `dataset`'s
    `split`, else {}."""
    path = model_dir / "metrics.json"
    if not path.is_file():
        return {}
    try:
        recorded = json.loads(path.read_text())
    except ValueError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(recorded, dict) or (recorded.get("dataset"), recorded.get("split")) != (dataset, split):
        return {}
    return {key: value for key, value in (recorded.get("bootstrap") or {}).items() if key in ("n_resamples", "seed")}
