"""`cxr-vitmae evaluate`: a saved classifier on one split of a corpus, with the metrics.json of the contract."""

from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from transformers import AutoConfig

from ..data import label_names, load_cxr_dataset
from ..data.errors import CorpusError
from ..data.phantoms import phantom_record
from ..data.transforms import evaluation_transform
from ..predict import load_classifier
from ..training.data import TransformedCorpus, make_loader
from .metrics import classification_metrics
from .prediction import predict


def evaluate_model(
    model_dir: str | Path,
    dataset: str,
    data_dir: str | Path,
    *,
    split: str = "test",
    batch_size: int = 64,
    num_workers: int = 0,
    n_bootstrap: int = 1000,
    seed: int = 0,
    **options: Any,
) -> dict[str, Any]:
    """Per-class AUROC / AUPRC (accuracy for single-label corpora) with patient-level bootstrap CIs of the model in
    `model_dir` on `split` of `dataset`, preprocessed exactly as the model's image processor says."""
    if not (Path(model_dir) / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: not a model directory (no config.json)")
    # Checked from the config, before any weights or images are read.
    names = label_names(dataset, **options)
    config = AutoConfig.from_pretrained(model_dir)
    model_labels = [config.id2label[i] for i in range(config.num_labels)]
    if model_labels != names:
        raise ValueError(
            f"{model_dir} predicts {model_labels}, but {dataset} is labelled {names} (order matters); evaluate it on "
            "the corpus and options it was trained for"
        )
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    model, processor = load_classifier(model_dir, accelerator.device)
    splits = load_cxr_dataset(dataset, data_dir, **options)
    if split not in splits:
        raise CorpusError(f"{dataset} has no {split!r} split; it has {', '.join(splits)}")
    single_label = "label" in splits[split].features
    transform = evaluation_transform(
        processor.crop_size["height"],
        resize=processor.size["shortest_edge"],
        mean=float(processor.image_mean[0]),
        std=float(processor.image_std[0]),
    )
    corpus = TransformedCorpus(splits[split], transform, seed=seed, label_key="label" if single_label else "labels")
    loader = accelerator.prepare(make_loader(corpus, batch_size=batch_size, shuffle=False, num_workers=num_workers))
    prediction = predict(accelerator, model, loader)
    patients = splits[split].select_columns(["patient_id"])
    labels = prediction["labels"].astype(int) if single_label else prediction["labels"]
    metrics = classification_metrics(
        prediction["scores"],
        labels,
        label_names=names,
        patient_ids=[patients[int(i)]["patient_id"] for i in prediction["index"]],
        problem_type=model.config.problem_type,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    return {
        "dataset": dataset,
        "split": split,
        **metrics,
        "selected_by": None,
        "checkpoint": str(model_dir),
        "synthetic_corpus": phantom_record(data_dir),
    }
