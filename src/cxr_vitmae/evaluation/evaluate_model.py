"""A saved classifier on one split of a corpus, with the metrics.json of the contract: the one evaluation path that
both `cxr-vitmae evaluate` and the fine-tuning recipe's final test evaluation take, so that the two give the same
numbers for the same model directory.

The preprocessing is the model directory's own image processor (resize, crop, normalisation), the model is loaded
from that directory in float32 (whatever precision it was trained in), and the bootstrap is seeded by
`bootstrap_seed`, not by the training seed: the same directory and split always give the same metrics.json.

External validation: a model whose labels are not the corpus's (an NIH model on CheXpert) is scored on the findings
both name, as `match_labels` pairs them (exact equivalents only: NIH `Effusion` is CheXpert `Pleural Effusion`, NIH
`Mass` is no CheXpert label). metrics.json then names them as the corpus does, in its order, and records the pairing
under `label_mapping`; with the corpus's own labels in its order, metrics.json has no `label_mapping`.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from transformers import AutoConfig

from ..data import label_names, load_cxr_dataset, split_source, synthetic_corpus
from ..data.errors import CorpusError
from ..data.label_vocabulary import match_labels
from ..data.transforms import evaluation_transform
from ..errors import InputError
from ..model_directory import model_directory
from ..predict import load_classifier
from ..training.data import TransformedCorpus, make_loader
from .metrics import SINGLE_LABEL, classification_metrics
from .prediction import predict

EVALUATION_PRECISION = "float32"
DEFAULT_RESAMPLES = 1000


@dataclass(frozen=True)
class ScoredLabels:
    """The labels a model is scored on in a corpus: `names` (the corpus's spelling and order), the model's score
    column and the corpus's label column of each, whether the model is single-label (softmax), and `mapping`, the
    `label_mapping` of metrics.json (None when the model predicts exactly the corpus's labels, in its order)."""

    names: list[str]
    model_columns: list[int]
    corpus_columns: list[int]
    single_label_model: bool
    mapping: dict[str, Any] | None = None


def scored_labels(model_dir: str | Path, dataset: str, data_dir: str | Path, options: dict[str, Any]) -> ScoredLabels:
    """What the model in `model_dir` is scored on in corpus `dataset` read from `data_dir` with `options`, from its
    config, before any weights or images: every corpus label when it predicts exactly those, else the ones
    `match_labels` pairs.

    Raises:
        InputError: the two share no label, the model is single-label and its classes are not the corpus's, or two
            labels of one list name the same finding.
    """
    names = label_names(dataset, data_dir, **options)
    config = AutoConfig.from_pretrained(model_dir)
    model_labels = [config.id2label[i] for i in range(config.num_labels)]
    single_label = config.problem_type == SINGLE_LABEL
    if model_labels == names:
        columns = list(range(len(names)))
        return ScoredLabels(names, columns, columns, single_label)
    match = match_labels(model_labels, names)
    if not match.model_to_corpus:
        raise InputError(
            f"{model_dir} predicts {model_labels}, and {dataset} is labelled {names}: no finding in common (only "
            "exact equivalents are paired, e.g. Effusion = Pleural Effusion); evaluate it on a corpus with its labels"
        )
    if single_label and (match.model_only or match.corpus_only):
        # Softmax scores share out one unit over the model's classes: over other classes they are no probabilities.
        raise InputError(
            f"{model_dir} is a single-label classifier of {model_labels}, and {dataset} is labelled {names}: a "
            "single-label model is scored only on a corpus with the same classes"
        )
    mapping = {
        "model_to_dataset": match.model_to_corpus,
        "model_labels_left_out": match.model_only,
        "dataset_labels_left_out": match.corpus_only,
    }
    return ScoredLabels(
        names=list(match.model_to_corpus.values()),
        model_columns=[model_labels.index(label) for label in match.model_to_corpus],
        corpus_columns=[names.index(label) for label in match.model_to_corpus.values()],
        single_label_model=single_label,
        mapping=mapping,
    )


def describe_label_mapping(mapping: dict[str, Any], dataset: str) -> str:
    """One line for a `label_mapping` of metrics.json: which model label was scored as which `dataset` label, and
    which labels of each were left out."""
    pairs = ", ".join(
        model if model == corpus else f"{model} -> {corpus}" for model, corpus in mapping["model_to_dataset"].items()
    )
    model_left = ", ".join(mapping["model_labels_left_out"]) or "none"
    corpus_left = ", ".join(mapping["dataset_labels_left_out"]) or "none"
    left_out = f"model's {model_left}, {dataset}'s {corpus_left}"
    return f"scored on the labels shared with {dataset}: {pairs}; left out: {left_out}"


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
    """The metrics.json content and the gathered predictions (`scores`, `labels`, `index`; the columns of the labels
    scored, see `scored_labels`) of the classifier saved in `model_dir` on `examples`, split `split` of corpus
    `dataset` read from `data_dir` with `options`.

    Every process calls it (the split is shared out and gathered back, each image counted once); the metrics are
    the same on every process. `selected_by` and `checkpoint` are left for the caller to fill in.

    Raises:
        InputError: see `scored_labels`; or the model is single-label and the corpus multi-label, or the reverse.
    """
    scored = scored_labels(model_dir, dataset, data_dir, options)
    single_label = "label" in examples.features
    if scored.single_label_model != single_label:
        model_kind, corpus_kind = ("single", "multi") if scored.single_label_model else ("multi", "single")
        raise InputError(
            f"{model_dir} is a {model_kind}-label classifier and {dataset} is {corpus_kind}-label: one-of-N class "
            "probabilities (softmax) and per-finding probabilities (sigmoid) do not compare; evaluate it on a "
            f"{model_kind}-label corpus"
        )
    model, processor = load_classifier(model_dir, accelerator.device)
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
    scores = prediction["scores"][:, scored.model_columns]
    # A single-label model is scored only on the corpus's own classes (scored_labels), so class indices stay valid.
    labels = prediction["labels"].astype(int) if single_label else prediction["labels"][:, scored.corpus_columns]
    metrics = classification_metrics(
        scores,
        labels,
        label_names=scored.names,
        patient_ids=[patients[int(i)]["patient_id"] for i in prediction["index"]],
        problem_type=model.config.problem_type,
        n_bootstrap=n_bootstrap,
        seed=bootstrap_seed,
    )
    record = {
        "dataset": dataset,
        "split": split,
        "split_source": split_source(dataset, split, data_dir, **options),
        "dataset_options": options,
        **({"label_mapping": scored.mapping} if scored.mapping else {}),
        **metrics,
        "precision": EVALUATION_PRECISION,
        "selected_by": None,
        "checkpoint": None,
        "synthetic_corpus": synthetic_corpus(dataset, data_dir, **options),
    }
    return record, {**prediction, "scores": scores, "labels": labels}


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
    seed 0. A model with other labels than the corpus's is scored on the labels they share (module docstring)."""
    model = model_dir
    model_dir = model_directory(model_dir)
    recorded = recorded_bootstrap(model_dir, dataset, split)
    n_bootstrap = recorded.get("n_resamples", DEFAULT_RESAMPLES) if n_bootstrap is None else n_bootstrap
    bootstrap_seed = recorded.get("seed", 0) if bootstrap_seed is None else bootstrap_seed
    scored_labels(model_dir, dataset, data_dir, options)  # before the split is read: a refusal costs no corpus build
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
