"""What a model directory was trained on: the `training_args.json` the recipes write, the corpora whose data-use
agreements forbid redistributing their images, and whether the user's own data (patient data) is anywhere in its
lineage.

The model card and the upload set both read this record (plus the `dataset` of `metrics.json`), so a directory
pushed long after training still knows which corpus its figures come from.
"""

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..data import CORPORA, split_sources, synthetic_corpus, uses_own_data
from ..data.corpora import OWN_DATA_RESTRICTION
from ..errors import InputError
from ..model_directory import is_repo_id
from ..model_families import family_for_preset

TRAINING_ARGS_NAME = "training_args.json"
TRAINER_HISTORY_NAME = "trainer_history.json"
# What a fine-tuning run copies from its starting run's record (`base_model_run`), so that the lineage survives when
# the starting directory does not travel with the model: the corpus, its size, and how the starting model was trained.
_STARTING_RUN_KEYS = (
    "recipe",
    "dataset",
    "dataset_options",
    "synthetic_corpus",
    "n_train_images",
    "model",
    "model_overrides",
    "image_size",
    "num_train_epochs",
    "max_train_steps",
    "total_steps",
    "global_batch_size",
    "peak_learning_rate",
    "mask_ratio",
    "norm_pix_loss",
    "crop_scale_min",
    "seed",
)


def write_training_args(output_dir: str | Path, args: Any, *, recipe: str, **facts: Any) -> Path:
    """Record a recipe run in `output_dir/training_args.json`: its arguments (a `RecipeArguments`) with the corpus
    options and model overrides parsed, what the run derived from them (`facts`, e.g. `n_train_images`,
    `global_batch_size`, `peak_learning_rate`), the Hub id of the starting model when that was published (the
    card's `base_model`), a summary of the starting model's own run when it is a recipe's output directory
    (`base_model_run`, see `starting_run`), the generator's record when the corpus is synthetic phantoms
    (`synthetic_corpus`), and what each split was read from (`split_sources`, see `split_sources`)."""
    record = {
        "recipe": recipe,
        **asdict(args),
        "dataset_options": args.options(),
        "model_overrides": args.overrides(),
        **facts,
        "base_model": published_id(args.model),
        "base_model_run": starting_run(args.model),
        "synthetic_corpus": synthetic_corpus(args.dataset, args.data_dir, **args.options()),
        "split_sources": split_sources(args.dataset, args.data_dir, **args.options()),
    }
    path = Path(output_dir) / TRAINING_ARGS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def published_id(model: str) -> str | None:
    """The Hub id a run started from: `model` itself when it names a Hub repository (e.g. `timm/resnet18.a1_in1k`),
    else the id a starting model directory was pushed to by its own recipe run, if any."""
    if not is_preset(model) and not Path(model).exists() and is_repo_id(model):
        return model
    return _pushed_to(_starting_record(model))


def _pushed_to(record: dict | None) -> str | None:
    """The Hub id a run's record says it pushed its model to, if any."""
    if record and record.get("push_to_hub") and record.get("hub_model_id"):
        return record["hub_model_id"]
    return None


def starting_run(model: str) -> dict | None:
    """What the run that produced the starting model `model` recorded, summarised for the record of a run started
    from it: `None` for a preset, or a directory without `training_args.json` (e.g. a converted checkpoint).

    The summary holds the starting run's recipe, corpus (with its `synthetic_corpus` record), image count, model and
    objective settings, `hub_model_id` when that run pushed the model, the optimiser steps and epochs it completed
    (`steps_completed`, `epochs_completed`: the last entry of its `trainer_history.json`) and, for a chain of runs,
    its own `base_model` and `base_model_run`. Copied at training time, the lineage stays with the model wherever
    its card is built."""
    record = _starting_record(model)
    if record is None:
        return None
    summary = {key: record[key] for key in _STARTING_RUN_KEYS if key in record}
    summary["hub_model_id"] = _pushed_to(record)
    history = _read_history(Path(model) / TRAINER_HISTORY_NAME)
    last = history[-1] if history else {}
    summary["steps_completed"] = last.get("step")
    summary["epochs_completed"] = last.get("epoch")
    summary["base_model"] = record.get("base_model")
    summary["base_model_run"] = record.get("base_model_run")
    return summary


def is_preset(model: str | None) -> bool:
    """Whether a recipe's `--model` names a preset (randomly initialised) rather than a model directory."""
    return model is not None and family_for_preset(model) is not None


def _starting_record(model: str) -> dict | None:
    # A preset name wins over a directory of the same name, as in the recipes' model builders.
    if is_preset(model):
        return None
    return read_json(Path(model) / TRAINING_ARGS_NAME)


def _read_history(path: Path) -> list[dict]:
    """The records of a `trainer_history.json` (a JSON list), empty when absent or not a list of records."""
    if not path.is_file():
        return []
    try:
        history = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from error
    return [entry for entry in history if isinstance(entry, dict)] if isinstance(history, list) else []


def read_json(path: Path) -> dict | None:
    """A JSON object file, `None` when absent; anything else is a `ValueError` naming the file."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(value, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def training_corpora(model_dir: str | Path) -> list[str]:
    """The corpus names a model directory records: the training corpus of `training_args.json` and the evaluation
    corpus of `metrics.json`, in that order, without repeats. Empty when neither file records one."""
    names = []
    for record in _corpus_records(Path(model_dir)):
        if record["dataset"] not in names:
            names.append(record["dataset"])
    return names


def _corpus_records(model_dir: Path) -> list[dict]:
    """The records of `training_args.json` and `metrics.json` that name a corpus, in that order."""
    records = [read_json(model_dir / name) or {} for name in (TRAINING_ARGS_NAME, "metrics.json")]
    return [record for record in records if record.get("dataset")]


def restricted_sources(corpora: list[str]) -> list[str]:
    """The agreements (as readable names) that forbid redistributing images of any corpus in `corpora`."""
    sources = image_sources(corpora)
    return [CORPORA[source].restricted_by for source in sources if source in CORPORA and CORPORA[source].restricted_by]


def is_own_data(name: str | None, options: dict[str, Any] | None) -> bool:
    """Whether corpus `name` with `options` holds the user's own images (patient data); False for a name this
    version does not know (a record from another version), which then names no own-data corpus."""
    return name in CORPORA and uses_own_data(name, options or {})


def data_restrictions(name: str, options: dict[str, Any]) -> list[str]:
    """What forbids publishing images of corpus `name` read with `options`: the agreements of the corpora it holds,
    and the user's own data when it holds any (an own-data corpus, or a pre-training union with the user's
    `folders`). One rule for the upload set's figures and for the pre-training recipe's `--push_to_hub`."""
    restrictions = restricted_sources([name])
    if is_own_data(name, options) and OWN_DATA_RESTRICTION not in restrictions:
        restrictions.append(OWN_DATA_RESTRICTION)
    return restrictions


def recorded_restrictions(model_dir: str | Path) -> list[str]:
    """`data_restrictions` of the corpora a model directory records (`training_corpora`), without repeats."""
    restrictions = []
    for record in _corpus_records(Path(model_dir)):
        for restriction in data_restrictions(record["dataset"], record.get("dataset_options") or {}):
            if restriction not in restrictions:
                restrictions.append(restriction)
    return restrictions


def holds_own_data(model_dir: str | Path) -> bool:
    """Whether the user's own data is anywhere in a model directory's lineage: the corpus it was trained or
    evaluated on, or that of any run it started from (an encoder pre-trained on the user's folder)."""
    model_dir = Path(model_dir)
    training = read_json(model_dir / TRAINING_ARGS_NAME) or {}
    runs = [*_corpus_records(model_dir), *lineage(training.get("base_model_run"))]
    return any(is_own_data(run.get("dataset"), run.get("dataset_options")) for run in runs)


def lineage(run: dict | None) -> list[dict]:
    """A starting run (`base_model_run`) and the runs it started from in turn."""
    runs = []
    while run and len(runs) < 4:  # as deep as a record nests them (`starting_run` copies one level per run)
        runs.append(run)
        run = run.get("base_model_run")
    return runs


def image_sources(corpora: list[str]) -> list[str]:
    """The corpora whose images `corpora` hold (a pre-training union holds several), sorted; names this package does
    not know stand for themselves."""
    return sorted(
        {source for name in corpora for source in (CORPORA[name].image_sources if name in CORPORA else (name,))}
    )


__all__ = [
    "TRAINER_HISTORY_NAME",
    "TRAINING_ARGS_NAME",
    "data_restrictions",
    "holds_own_data",
    "image_sources",
    "is_own_data",
    "is_preset",
    "lineage",
    "published_id",
    "read_json",
    "recorded_restrictions",
    "restricted_sources",
    "split_sources",
    "starting_run",
    "training_corpora",
    "write_training_args",
]
