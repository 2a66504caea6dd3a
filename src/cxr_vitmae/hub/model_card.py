"""Model cards for cxr-vitmae model directories, rendered with huggingface_hub's `ModelCard.from_template`.

One Jinja template per kind of model, in `model_cards/` next to this module: the MAE-pre-trained ViT encoder, a
fine-tuned ViT classifier and a DenseNet classifier. The YAML header is a `ModelCardData` whose `model-index` is
built from the directory's `metrics.json` only (numbers measured on that checkpoint); the paper's numbers appear in
the text, labelled as the paper's. How the card names the data (a public corpus, phantoms, the user's own data) is
`corpus_description`'s.
"""

import math
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData, constants, hf_hub_url
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors import safe_open

from ..data import split_sources
from ..data.phantoms import generate_phantoms
from ..errors import InputError
from ..model_families import families, family_of, resolve
from ..models import MODEL_CLASSES
from .corpus_description import (
    OWN_DATA_DATASET_TYPE,
    card_datasets,
    card_restrictions,
    describe_corpus,
    hub_dataset_id,
    label_source,
    own_data_source,
    stated_options,
)
from .provenance import TRAINING_ARGS_NAME, is_own_data, is_preset, lineage, read_json
from .public_records import public_record

TEMPLATES_DIR = Path(__file__).resolve().parent / "model_cards"
# kind -> (template file, pipeline tag). The encoder's classification head would be untrained, so it is published as
# a feature extractor; the classifiers are what the image-classification widget and pipeline are for.
# A classifier's kind is "<family>-classifier", its template the family's (`ModelFamily.card_template`).
ENCODER_KINDS = {
    "pretrained-encoder": ("pretrained_encoder.md", "image-feature-extraction"),
    "backbone": ("backbone.md", "image-feature-extraction"),
}


def card_kinds() -> dict[str, tuple[str, str]]:
    """Every card kind: (template file, pipeline tag)."""
    classifiers = {f"{family.name}-classifier": (family.card_template, "image-classification") for family in families()}
    return {**ENCODER_KINDS, **classifiers}


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
    The same arguments give byte-identical PNGs.

    Each is named for what it is, never like a corpus file (NIH's `00000001_000.png`, CheXpert's `view1_frontal.jpg`):
    `examples/phantom_example_1_nodule.png`, titled "Synthetic phantom 1: drawn Nodule", the finding the generator drew
    into it ("no finding drawn" for a normal phantom)."""
    with tempfile.TemporaryDirectory(prefix="cxr-vitmae-examples-") as scratch:
        corpus = generate_phantoms(scratch, count, size=_PHANTOM_SIZE, seed=seed, difficulty="easy")
        examples = []
        for number, image in enumerate(corpus.images, start=1):
            findings = [name for name in image.finding_labels.split("|") if name and name != "No Finding"]
            slug = "_".join(re.sub(r"[^a-z]+", "_", name.lower()).strip("_") for name in findings) or "no_finding"
            names = ", ".join(name.replace("_", " ") for name in findings)
            drawn = f"drawn {names}" if findings else "no finding drawn"
            examples.append(
                WidgetExample(
                    path_in_repo=f"examples/phantom_example_{number}_{slug}.png",
                    title=f"Synthetic phantom {number}: {drawn}",
                    png=(corpus.output_dir / "images" / image.file_name).read_bytes(),
                )
            )
        return examples


def card_kind(config: dict) -> str:
    """`pretrained-encoder`, `backbone` (a ViT or DenseNet without head, as `convert` writes for encoder-only
    checkpoints) or `<family>-classifier` (`vit-classifier`, `densenet-classifier`), from a model directory's
    config.json: the Auto class its saved architecture loads as decides."""
    model_type = config.get("model_type")
    model_types = sorted(family.model_type for family in families())
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
    return f"{family_of(model_type).name}-classifier"


def eval_results(metrics: dict) -> list[EvalResult]:
    """The `model-index` entries of a `metrics.json`: mean and per-class AUROC and AUPRC, and accuracy when set.
    Undefined values (a class without both label values in the split) are left out, never written as 0."""
    synthetic = metrics.get("synthetic_corpus")
    dataset, options = metrics["dataset"], metrics.get("dataset_options") or {}
    if synthetic:
        dataset_type = PHANTOM_DATASET_TYPE
    elif is_own_data(dataset, options):
        dataset_type = hub_dataset_id(dataset, options) or OWN_DATA_DATASET_TYPE
    else:
        dataset_type = dataset
    common = {
        "task_type": "image-classification",
        "dataset_type": dataset_type,
        "dataset_name": describe_corpus(dataset, synthetic, options)[0],
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
    evaluation table and `model-index`) and `training_args.json` (training data and settings), both as
    `public_record` leaves them: no path of the training machine reaches the card. `figures` are the
    repository paths of the figures published with the model, shown in the card. `examples` become the YAML
    `widget:` (classifiers only), linked at `endpoint` (default: the configured Hub).
    `base_model` (a Hub model id: the Hub rejects anything else) defaults to the Hub id the starting model was
    published under, when the recipe recorded one. Whatever it is, the card says in prose what the training started
    from: the starting run's corpus, steps and objective when the recipe recorded them (`base_model_run`), also
    when the starting model was never published and `base_model` stays empty.

    Raises:
        InputError: `model_dir` holds no cxr-vitmae model, one of its JSON files is malformed, or `base_model` is
            not a Hub model id.
    """
    model_dir = Path(model_dir)
    config = read_json(model_dir / "config.json")
    if config is None:
        raise InputError(f"{model_dir}: not a model directory (no config.json)")
    kind = card_kind(config)
    template, pipeline_tag = card_kinds()[kind]
    training = public_record(read_json(model_dir / TRAINING_ARGS_NAME))
    metrics = public_record(read_json(model_dir / "metrics.json"))
    if metrics is not None and "dataset" not in metrics:
        raise InputError(f"{model_dir / 'metrics.json'}: has no 'dataset' field (the metrics.json schema needs one)")
    base_model = base_model or (training or {}).get("base_model")
    if base_model is not None:
        try:
            validate_repo_id(base_model)
        except HFValidationError as error:
            raise InputError(f"base model {base_model!r} is not a Hub model id ORG/NAME: {error}") from error
    base_run = (training or {}).get("base_model_run")
    # The Hub HfApi talks to (HF_ENDPOINT), so that widget links point where the files are uploaded.
    endpoint = endpoint or constants.ENDPOINT
    classifier = kind.endswith("-classifier")
    examples = list(examples) if classifier else []

    # The starting run's corpus is part of the model's training data (an MAE encoder's weights come from it).
    runs = [record for record in (training, metrics, *lineage(base_run)) if record]
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        license=license,
        datasets=card_datasets(runs),
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
        training=_training(training, base_model),
        limits=_limits(training, metrics),
        evaluation=_evaluation(metrics, training),
        figures=list(figures),
        examples=examples,
        restricted=card_restrictions(runs),
        paper_results=PAPER_RESULTS.get(family_of(config).paper_results, []),
        citation=CITATION,
    )


def _tags(kind: str, config: dict) -> list[str]:
    tags = ["medical-imaging", "chest-x-ray", "radiology", "cxr-vitmae", *family_of(config).card_tags]
    if kind.endswith("-classifier"):
        single = config.get("problem_type") == "single_label_classification"
        tags.append("single-label-classification" if single else "multi-label-classification")
    return tags


def _architecture(kind: str, config: dict, model_dir: Path) -> dict[str, Any]:
    """What the card says about the network (its family's description: shape, family name, features) and its
    parameter count read from the weights' headers."""
    return {
        **resolve(family_of(config).describe)(kind, config),
        "pooling": "mean-pooled patch tokens" if config.get("use_mean_pooling", True) else "the CLS token",
        "image_size": config["image_size"],
        "mask_ratio": config.get("mask_ratio"),
        "parameters": _parameter_count(model_dir),
    }


def describe_vit(kind: str, config: dict) -> dict[str, str]:
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
        "family": "Vision Transformer",
        "features": "`last_hidden_state`, one vector per token (CLS first, then the patches)",
    }


def describe_densenet(kind: str, config: dict) -> dict[str, str]:
    return {
        "shape": f"DenseNet, blocks {tuple(config['block_config'])}, growth rate {config['growth_rate']}",
        "family": "DenseNet",
        "features": "`last_hidden_state`, the last dense block's feature map, and `pooler_output`, its global average",
    }


def describe_timm(kind: str, config: dict) -> dict[str, str]:
    return {
        "shape": f"timm `{config['architecture']}`",
        "family": "timm",
        "features": "`hidden_states` (with `output_hidden_states=True`), the network's last feature map",
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


def _training(record: dict | None, base_model: str | None = None) -> dict | None:
    if record is None:
        return None
    dataset, options = record.get("dataset"), record.get("dataset_options") or {}
    synthetic = record.get("synthetic_corpus")
    name, description = describe_corpus(dataset, synthetic, options)
    base_run = record.get("base_model_run")
    start = _start(record.get("model"), base_model or record.get("base_model"), base_run)
    pretrained_on = None
    if base_run and base_run.get("recipe") == "pretrain" and base_run.get("dataset"):
        pretrained_on = describe_corpus(
            base_run["dataset"], base_run.get("synthetic_corpus"), base_run.get("dataset_options")
        )[0]
    own = not synthetic and is_own_data(dataset, options)
    return {
        "recipe": record.get("recipe"),
        "dataset": dataset,
        "dataset_name": name,
        "description": description,
        "options": stated_options(dataset, options),
        # The user's own data is described by its labels and splits: no registry entry describes them. A record
        # from before runs recorded their splits gets the policy without the table's file name.
        "labels": label_source(dataset, options) if own else None,
        "splits": list((record.get("split_sources") or split_sources(dataset, None, **options)).items()) if own else [],
        "n_train_images": record.get("n_train_images"),
        "start": start,
        "pretrained_on": pretrained_on,
        "hyperparameters": [(key, record[key]) for key in _HYPERPARAMETERS if record.get(key) is not None],
    }


def _start(model: str | None, base_model: str | None, run: dict | None, depth: int = 0) -> str:
    """What a run started from, in words: the Hub id when published, and the starting run's corpus, length and
    objective when recorded. The starting directory's local path is never shown: it means nothing to a reader."""
    if is_preset(model):
        return f"the `{model}` preset, randomly initialised"
    described = _describe_run(run, depth) if run else None
    if base_model and described:
        return f"`{base_model}`, {described}"
    if base_model:
        return f"`{base_model}`"
    if described:
        return f"a model directory not published on the Hub, {described}"
    # A directory without a recipe's record, e.g. a checkpoint converted with `cxr-vitmae convert`.
    return "a local model directory whose training is not recorded"


def _describe_run(run: dict, depth: int = 0) -> str:
    """One starting run, e.g. "an encoder MAE pre-trained by `recipes/pretrain.py` on synthetic phantoms in NIH
    ChestX-ray14's format (2,059 training images), 640 optimiser steps (20 epochs) at global batch 64, mask ratio 0.9,
    random resized crops of scale 0.5-1, at 64 px, from the `vit-tiny` preset, randomly initialised"."""
    recipe = run.get("recipe") or "an unrecorded recipe"
    what = "an encoder MAE pre-trained" if recipe == "pretrain" else "a model trained"
    parts = [f"{what} by `recipes/{recipe}.py`"]
    if run.get("dataset"):
        corpus = describe_corpus(run["dataset"], run.get("synthetic_corpus"), run.get("dataset_options"))[0]
        if run.get("n_train_images"):
            corpus += f" ({run['n_train_images']:,} training images)"
        parts[0] += f" on {corpus}"
    if run.get("steps_completed"):
        length = f"{run['steps_completed']:,} optimiser steps"
        if run.get("epochs_completed") is not None:
            length += f" ({run['epochs_completed']:g} epochs)"
    elif run.get("total_steps"):
        length = f"{run['total_steps']:,} optimiser steps planned"
    elif run.get("max_train_steps"):
        length = f"at most {run['max_train_steps']:,} optimiser steps"
    elif run.get("num_train_epochs"):
        length = f"{run['num_train_epochs']:g} epochs planned"
    else:
        length = None
    if length:
        parts.append(length + (f" at global batch {run['global_batch_size']}" if run.get("global_batch_size") else ""))
    if recipe == "pretrain":
        if run.get("mask_ratio") is not None:
            parts.append(f"mask ratio {run['mask_ratio']:g}")
        if run.get("norm_pix_loss"):
            parts.append("loss on per-patch normalised pixels")
        if run.get("crop_scale_min") is not None:
            parts.append(f"random resized crops of scale {run['crop_scale_min']:g}-1")
    if run.get("image_size"):
        parts.append(f"at {run['image_size']} px")
    if depth < 3:  # a chain of runs, each started from the previous one's directory
        parts.append("from " + _start(run.get("model"), run.get("base_model"), run.get("base_model_run"), depth + 1))
    return ", ".join(parts)


def _synthetic_share(record: dict) -> str | None:
    """How much of a run's corpus was phantoms: "all", "part" (a pre-training union with real parts) or None."""
    synthetic = record.get("synthetic_corpus")
    if not synthetic:
        return None
    if "parts" in synthetic and not all(synthetic["parts"].values()):
        return "part"
    return "all"


def _limits(record: dict | None, metrics: dict | None) -> dict:
    """What the Limitations section must say about the data the model learnt from: its own run's corpus
    (`phantoms`: "all", "part" or None; `own`: the user's own data), the corpus it was evaluated on (`evaluated_own`:
    the user's own data) and the runs it started from (`base_phantoms`: one of them drew on phantoms; `base_real`: one
    of them read real radiographs; `base_own`: one of them read the user's own data)."""
    record = record or {}
    runs = lineage(record.get("base_model_run"))
    return {
        "phantoms": _synthetic_share(record),
        "difficulty": (record.get("synthetic_corpus") or {}).get("difficulty"),
        "own": _own_data_run(record),
        "evaluated_own": _own_data_run(metrics or {}),
        "base_phantoms": any(_synthetic_share(run) for run in runs),
        "base_real": any(_synthetic_share(run) != "all" for run in runs if run.get("dataset")),
        "base_own": any(_own_data_run(run) for run in runs),
    }


def _own_data_run(record: dict) -> bool:
    return not record.get("synthetic_corpus") and is_own_data(record.get("dataset"), record.get("dataset_options"))


def _evaluation(metrics: dict | None, training: dict | None) -> dict | None:
    if metrics is None:
        return None
    bootstrap = metrics.get("bootstrap") or {}
    dataset, options = metrics["dataset"], metrics.get("dataset_options") or {}
    # What the split was read from (e.g. CheXpert's `test` is valid.csv), recorded by the evaluation; the training
    # run's record of the same corpus and options says it with the corpus's own files named (a `csv` table).
    split_source = metrics.get("split_source")
    training = training or {}
    if (training.get("dataset"), training.get("dataset_options") or {}) == (dataset, options):
        split_source = (training.get("split_sources") or {}).get(metrics.get("split"), split_source)
    return {
        "dataset": dataset,
        "dataset_name": describe_corpus(dataset, metrics.get("synthetic_corpus"), options)[0],
        # The user's own data: "the held-out split of the user's table", never the name of a public corpus.
        "own_data": own_data_source(dataset, options) if _own_data_run(metrics) else None,
        "split": metrics.get("split"),
        "split_source": split_source,
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
    "CITATION",
    "DEFAULT_LICENSE",
    "PAPER_RESULTS",
    "TEMPLATES_DIR",
    "ENCODER_KINDS",
    "WidgetExample",
    "build_model_card",
    "card_kind",
    "card_kinds",
    "eval_results",
    "phantom_examples",
]
