"""Model cards for cxr-vitmae model directories, rendered with huggingface_hub's `ModelCard.from_template`.

One Jinja template per kind of model, in `model_cards/` next to this module: the MAE-pre-trained ViT encoder, a
fine-tuned ViT classifier and a DenseNet classifier. The YAML header is a `ModelCardData` whose `model-index` is
built from the directory's `metrics.json` only (numbers measured on that checkpoint); the paper's numbers appear in
the text, labelled as the paper's.
"""

import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData, constants, hf_hub_url
from safetensors import safe_open

from ..data import CORPORA, CorpusError, config_options
from ..data.phantoms import generate_phantoms
from ..errors import InputError
from ..models import MODEL_CLASSES
from ..models.configuration_cxr_densenet import CXR_DENSENET_PRESETS, CXRDenseNetConfig
from ..models.configuration_cxr_vitmae import VIT_PRESETS
from .provenance import TRAINING_ARGS_NAME, image_sources, read_json, restricted_sources

TEMPLATES_DIR = Path(__file__).resolve().parent / "model_cards"
# kind -> (template file, pipeline tag). The encoder's classification head would be untrained, so it is published as
# a feature extractor; the classifiers are what the image-classification widget and pipeline are for.
CARD_KINDS = {
    "pretrained-encoder": ("pretrained_encoder.md", "image-feature-extraction"),
    "backbone": ("backbone.md", "image-feature-extraction"),
    "vit-classifier": ("vit_classifier.md", "image-classification"),
    "densenet-classifier": ("densenet_classifier.md", "image-classification"),
}
# Research-only, as the training corpora's terms are: non-commercial unless the publisher chooses otherwise.
DEFAULT_LICENSE = "cc-by-nc-4.0"

CITATION = """@inproceedings{xiao2023delving,
  title     = {Delving into Masked Autoencoders for Multi-Label Thorax Disease Classification},
  author    = {Xiao, Junfei and Bai, Yutong and Yuille, Alan and Zhou, Zongwei},
  booktitle = {Proceedings of the IEEE/CVF Winter Conference on Applications of Computer Vision (WACV)},
  year      = {2023}
}"""

# The numbers published with the paper's code (lambert-x/medical_mae README): NIH mean AUROC and CheXpert mean AUROC
# (5 competition findings, valid.csv) in percent, COVIDx V9A accuracy in percent; None where none was published.
PAPER_RESULTS = {
    "vit": [
        ("ViT-S/16", "ImageNet, supervised (DeiT-S)", 79.6, None, None),
        ("ViT-S/16", "ImageNet, MAE", 78.6, None, None),
        ("ViT-S/16", "266k chest X-rays (NIH + CheXpert), MAE", 82.3, 89.2, 95.2),
        ("ViT-B/16", "~0.5M chest X-rays (NIH + CheXpert + MIMIC-CXR), MAE", 83.0, 89.3, 95.3),
    ],
    "densenet": [
        ("DenseNet-121", "ImageNet, supervised (torchvision)", 82.2, None, None),
        ("DenseNet-121", "266k chest X-rays, MoCo v2", 80.6, None, None),
        ("DenseNet-121", "266k chest X-rays, MAE (U-Net)", 81.2, None, None),
    ],
}

# Recipe arguments that say how the model was trained (the others are paths, logging and publishing settings).
_HYPERPARAMETERS = (
    "image_size",
    "num_train_epochs",
    "max_train_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "global_batch_size",
    "peak_learning_rate",
    "learning_rate",
    "base_learning_rate",
    "min_learning_rate",
    "warmup_epochs",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "layer_decay",
    "drop_path",
    "auto_augment",
    "crop_scale_min",
    "mask_ratio",
    "norm_pix_loss",
    "mixed_precision",
    "seed",
)
# Corpus options that are locations on the training machine: their values mean nothing to a reader of the card.
_PATH_OPTION_SUFFIXES = ("_dir", "_file", "_folder")
# The model-index dataset type of results on `cxr-vitmae phantoms`, whatever corpus format they were written in.
PHANTOM_DATASET_TYPE = "cxr-vitmae-phantoms"
_PHANTOM_EXAMPLES = 3
_PHANTOM_SIZE = 256


@dataclass(frozen=True)
class WidgetExample:
    """An example image published with the model and shown in the Hub widget."""

    path_in_repo: str
    title: str
    png: bytes


def phantom_examples(count: int = _PHANTOM_EXAMPLES, seed: int = 0) -> list[WidgetExample]:
    """Widget examples drawn from the synthetic phantom corpus: no real patient's image is ever published.
    The same arguments give byte-identical PNGs."""
    with tempfile.TemporaryDirectory(prefix="cxr-vitmae-examples-") as scratch:
        corpus = generate_phantoms(scratch, count, size=_PHANTOM_SIZE, seed=seed, difficulty="easy")
        return [
            WidgetExample(
                path_in_repo=f"examples/phantom_{image.file_name}",
                title=f"Synthetic phantom: {image.finding_labels.replace('|', ', ')}",
                png=(corpus.output_dir / "images" / image.file_name).read_bytes(),
            )
            for image in corpus.images
        ]


def card_kind(config: dict) -> str:
    """`pretrained-encoder`, `backbone` (a ViT or DenseNet without head, as `convert` writes for encoder-only
    checkpoints), `vit-classifier` or `densenet-classifier`, from a model directory's config.json: the Auto class
    its saved architecture loads as decides."""
    model_type = config.get("model_type")
    model_types = sorted({model_class.config_class.model_type for model_class in MODEL_CLASSES})
    if model_type not in model_types:
        raise InputError(
            f"config.json has model_type {model_type!r}; model cards exist for cxr-vitmae models "
            f"(model_type {' or '.join(model_types)})"
        )
    classes = {model_class.__name__: model_class for model_class in MODEL_CLASSES}
    auto_classes = {classes[name]._auto_class for name in config.get("architectures") or [] if name in classes}
    if "AutoModel" in auto_classes:
        return "backbone"
    if "AutoModelForPreTraining" in auto_classes:
        return "pretrained-encoder"
    return "densenet-classifier" if model_type == CXRDenseNetConfig.model_type else "vit-classifier"


def eval_results(metrics: dict) -> list[EvalResult]:
    """The `model-index` entries of a `metrics.json`: mean and per-class AUROC and AUPRC, and accuracy when set.
    Undefined values (a class without both label values in the split) are left out, never written as 0."""
    synthetic = metrics.get("synthetic_corpus")
    common = {
        "task_type": "image-classification",
        "dataset_type": PHANTOM_DATASET_TYPE if synthetic else metrics["dataset"],
        "dataset_name": describe_corpus(metrics["dataset"], synthetic)[0],
        "dataset_split": metrics.get("split"),
    }
    entries = [
        ("roc_auc", "mean AUROC", None, metrics.get("mean_auroc")),
        ("average_precision", "mean AUPRC", None, metrics.get("mean_auprc")),
        ("accuracy", "accuracy", None, metrics.get("accuracy")),
    ]
    for name, values in metrics.get("per_class", {}).items():
        entries.append(("roc_auc", f"AUROC ({name})", name, values.get("auroc")))
        entries.append(("average_precision", f"AUPRC ({name})", name, values.get("auprc")))
    return [
        EvalResult(metric_type=kind, metric_name=label, metric_config=config, metric_value=value, **common)
        for kind, label, config, value in entries
        if value is not None
    ]


def describe_corpus(name: str, synthetic: dict | None = None) -> tuple[str, str]:
    """(display name, description) of corpus `name` (e.g. `NIH ChestX-ray14` for `nih-chestxray14`; unknown names as
    given). `synthetic`, the `phantom_record` a run recorded, means the data were phantoms in that corpus's format,
    and the card says so instead of naming the real corpus."""
    known = CORPORA.get(name)
    display_name, description = (known.display_name, known.description) if known else (name, "")
    if synthetic is None:
        return display_name, description
    if "parts" in synthetic:  # a pre-training union with phantom parts
        parts = ", ".join(
            f"{part}: {'phantoms' if record else 'real images'}" for part, record in synthetic["parts"].items()
        )
        return (
            f"synthetic phantoms in {display_name}'s format",
            f"{synthetic['num_images']:,} synthetic chest radiographs drawn by `cxr-vitmae phantoms` in the layouts "
            f"of the union's corpora ({parts}) and read with the `{name}` loader; no patient's image among the "
            "phantoms. Results on them show that the pipeline runs, not how the model does on real radiographs.",
        )
    return (
        f"synthetic phantoms in {display_name}'s format",
        f"{synthetic['num_images']:,} synthetic chest radiographs drawn by `cxr-vitmae phantoms` ({synthetic['size']} "
        f"px, seed {synthetic['seed']}, difficulty {synthetic['difficulty']}) and read with the `{name}` loader; no "
        "patient's image. Results on them show that the pipeline runs, not how the model does on real radiographs.",
    )


def build_model_card(
    model_dir: str | Path,
    repo_id: str,
    *,
    examples: Sequence[WidgetExample] = (),
    figures: Sequence[str] = (),
    license: str = DEFAULT_LICENSE,
    base_model: str | None = None,
    endpoint: str | None = None,
) -> ModelCard:
    """The model card (README.md) of the model directory `model_dir` published as `repo_id`.

    Reads `config.json`, `preprocessor_config.json`, the weights' shapes, and when present `metrics.json` (the
    evaluation table and `model-index`) and `training_args.json` (training data and settings). `figures` are the
    repository paths of the figures published with the model, shown in the card. `examples` become the YAML
    `widget:` (classifiers only), linked at `endpoint` (default: the configured Hub).
    `base_model` defaults to the Hub id the starting model was published under, when the recipe recorded one.

    Raises:
        InputError: `model_dir` holds no cxr-vitmae model, or one of its JSON files is malformed.
    """
    model_dir = Path(model_dir)
    config = read_json(model_dir / "config.json")
    if config is None:
        raise InputError(f"{model_dir}: not a model directory (no config.json)")
    kind = card_kind(config)
    template, pipeline_tag = CARD_KINDS[kind]
    training = read_json(model_dir / TRAINING_ARGS_NAME)
    metrics = read_json(model_dir / "metrics.json")
    if metrics is not None and "dataset" not in metrics:
        raise InputError(f"{model_dir / 'metrics.json'}: has no 'dataset' field (the metrics.json schema needs one)")
    base_model = base_model or (training or {}).get("base_model")
    # The Hub HfApi talks to (HF_ENDPOINT), so that widget links point where the files are uploaded.
    endpoint = endpoint or constants.ENDPOINT
    classifier = kind in ("vit-classifier", "densenet-classifier")
    examples = list(examples) if classifier else []

    # Phantoms borrow a corpus's format, not its images: they add no corpus to the card's `datasets`.
    corpora = [
        record["dataset"]
        for record in (training, metrics)
        if record and record.get("dataset") and not record.get("synthetic_corpus")
    ]
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        license=license,
        datasets=image_sources(corpora) or None,
        base_model=base_model,
        tags=_tags(kind, config),
        metrics=sorted({result.metric_type for result in eval_results(metrics)}) if metrics else None,
        eval_results=eval_results(metrics) if metrics else None,
        widget=[
            {"src": hf_hub_url(repo_id, example.path_in_repo, endpoint=endpoint), "example_title": example.title}
            for example in examples
        ]
        or None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATES_DIR / template),
        model_id=repo_id,
        architecture=_architecture(kind, config, model_dir),
        labels=[config["id2label"][str(i)] for i in range(len(config.get("id2label", {})))] if classifier else [],
        multi_label=config.get("problem_type") != "single_label_classification",
        preprocessing=_preprocessing(model_dir),
        training=_training(training),
        evaluation=_evaluation(metrics),
        figures=list(figures),
        examples=examples,
        restricted=restricted_sources(corpora),
        paper_results=PAPER_RESULTS["densenet" if config["model_type"] == "cxr_densenet" else "vit"],
        citation=CITATION,
    )


def _tags(kind: str, config: dict) -> list[str]:
    tags = ["medical-imaging", "chest-x-ray", "radiology", "cxr-vitmae"]
    if config["model_type"] == "cxr_densenet":
        tags += ["densenet", "cnn"]
    else:
        tags += ["vit", "masked-autoencoder"]
    if kind in ("vit-classifier", "densenet-classifier"):
        single = config.get("problem_type") == "single_label_classification"
        tags.append("single-label-classification" if single else "multi-label-classification")
    return tags


def _architecture(kind: str, config: dict, model_dir: Path) -> dict[str, Any]:
    """What the card says about the network: its shape and its parameter count read from the weights' headers."""
    densenet = config["model_type"] == "cxr_densenet"
    if densenet:
        shape = f"DenseNet, blocks {tuple(config['block_config'])}, growth rate {config['growth_rate']}"
    else:
        shape = (
            f"ViT, {config['num_hidden_layers']} layers, width {config['hidden_size']}, "
            f"{config['num_attention_heads']} heads, patch {config['patch_size']}"
        )
        if kind == "pretrained-encoder":
            shape += (
                f"; MAE decoder {config['decoder_num_hidden_layers']} layers, width {config['decoder_hidden_size']}, "
                f"mask ratio {config['mask_ratio']}"
            )
    return {
        "shape": shape,
        "pooling": "mean-pooled patch tokens" if config.get("use_mean_pooling", True) else "the CLS token",
        "family": "DenseNet" if densenet else "Vision Transformer",
        "features": (
            "`last_hidden_state`, the last dense block's feature map, and `pooler_output`, its global average"
            if densenet
            else "`last_hidden_state`, one vector per token (CLS first, then the patches)"
        ),
        "image_size": config["image_size"],
        "mask_ratio": config.get("mask_ratio"),
        "parameters": _parameter_count(model_dir),
    }


def _parameter_count(model_dir: Path) -> str:
    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(path, framework="numpy") as weights:
            # Shapes come from the header: no tensor is read. (safe_open handles are not iterable.)
            total += sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())  # noqa: SIM118
    if not total:
        raise InputError(f"{model_dir}: no *.safetensors weights")
    return f"{total / 1e6:.1f}M" if total >= 1e5 else f"{total / 1e3:.1f}k"


def _preprocessing(model_dir: Path) -> dict | None:
    processor = read_json(model_dir / "preprocessor_config.json")
    if processor is None:
        return None
    return {
        "resize": processor.get("size", {}).get("shortest_edge"),
        "crop": processor.get("crop_size", {}).get("height"),
        "mean": processor.get("image_mean", [None])[0],
        "std": processor.get("image_std", [None])[0],
    }


def _training(record: dict | None) -> dict | None:
    if record is None:
        return None
    dataset = record.get("dataset")
    name, description = describe_corpus(dataset, record.get("synthetic_corpus"))
    model = record.get("model")
    if record.get("base_model"):
        start = f"`{record['base_model']}`"
    elif model in VIT_PRESETS or model in CXR_DENSENET_PRESETS:
        start = f"the `{model}` preset, randomly initialised"
    else:
        # A directory on the training machine (a pre-training run or a converted checkpoint): its path means nothing
        # to a reader of the card.
        start = "a local model directory"
    return {
        "recipe": record.get("recipe"),
        "dataset": dataset,
        "dataset_name": name,
        "description": description,
        "options": _corpus_options(dataset, record.get("dataset_options") or {}),
        "n_train_images": record.get("n_train_images"),
        "start": start,
        "hyperparameters": [(key, record[key]) for key in _HYPERPARAMETERS if record.get(key) is not None],
    }


def _corpus_options(dataset: str, given: dict) -> list[tuple[str, str]]:
    """Every option of the corpus's builder with the value the run used (its default unless given), so the card
    states the split and label policies in full; machine-local paths are only said to be set."""
    try:
        options = config_options(dataset, given)
    except CorpusError:  # a corpus this version does not know: what the run recorded
        return [(key, json.dumps(value)) for key, value in sorted(given.items())]
    return [
        (key, "(set to a local path)" if key.endswith(_PATH_OPTION_SUFFIXES) else json.dumps(value))
        for key, value in options.items()
        if value is not None or not key.endswith(_PATH_OPTION_SUFFIXES)
    ]


def _evaluation(metrics: dict | None) -> dict | None:
    if metrics is None:
        return None
    bootstrap = metrics.get("bootstrap") or {}
    return {
        "dataset": metrics["dataset"],
        "dataset_name": describe_corpus(metrics["dataset"], metrics.get("synthetic_corpus"))[0],
        "split": metrics.get("split"),
        # What the split was read from (e.g. CheXpert's `test` is valid.csv), recorded by the evaluation.
        "split_source": metrics.get("split_source"),
        "n_images": metrics.get("n_images"),
        "mean_auroc": _number(metrics.get("mean_auroc")),
        "mean_auroc_ci": _interval(metrics.get("mean_auroc_ci95")),
        "mean_auprc": _number(metrics.get("mean_auprc")),
        "mean_auprc_ci": _interval(metrics.get("mean_auprc_ci95")),
        "accuracy": _number(metrics.get("accuracy")) if metrics.get("accuracy") is not None else None,
        "accuracy_ci": _interval(metrics.get("accuracy_ci95")),
        "selected_by": metrics.get("selected_by"),
        # A name, never a path: `cxr-vitmae evaluate` records the model directory it was given, a local path.
        "checkpoint": Path(metrics["checkpoint"]).name if metrics.get("checkpoint") else None,
        "bootstrap": bootstrap,
        "rows": [
            {
                "name": name,
                "auroc": _number(values.get("auroc")),
                "auroc_ci": _interval(values.get("auroc_ci95")),
                "auprc": _number(values.get("auprc")),
                "auprc_ci": _interval(values.get("auprc_ci95")),
                "n_pos": values.get("n_pos", "—"),
                "n_neg": values.get("n_neg", "—"),
            }
            for name, values in metrics.get("per_class", {}).items()
        ],
    }


def _number(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def _interval(bounds: Sequence[float] | None) -> str:
    return "—" if not bounds else f"[{bounds[0]:.3f}, {bounds[1]:.3f}]"


__all__ = [
    "CARD_KINDS",
    "CITATION",
    "DEFAULT_LICENSE",
    "PAPER_RESULTS",
    "TEMPLATES_DIR",
    "WidgetExample",
    "build_model_card",
    "card_kind",
    "eval_results",
    "phantom_examples",
]
