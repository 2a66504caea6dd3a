"""How a model card names and describes the data of a run: a public corpus by its registry entry, phantoms as
phantoms, and the user's own data (patient data) as the user's, by its table or dataset, label columns and split
policy, never as a public corpus.

The card's `datasets` metadata lists the public corpora whose images a model's lineage holds. Own data adds none,
with one exception: the `hf` corpus read from a Hub dataset repository adds that repository's id, which the card's text
names anyway. Its `path` counts as a Hub id when it has the `ORG/NAME` form and is no folder here (how `datasets`
tells the two apart); a local folder is named by its last component only.
"""

import json
from pathlib import Path
from typing import Any

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..data import CORPORA, CorpusError, config_options
from .provenance import image_sources, is_own_data, restricted_sources

# The model-index dataset type of results on the user's own data read from files (a Hub dataset gives its id).
OWN_DATA_DATASET_TYPE = "cxr-vitmae-own-data"
# Corpus options that are locations on the training machine: their values mean nothing to a reader of the card.
_PATH_OPTION_SUFFIXES = ("_dir", "_file", "_folder")
# What a label policy makes of an uncertain (-1) or blank cell.
_POLICY_MEANINGS = {"ignore": "unknown, left out of the loss and the metrics", "zeros": "negative", "ones": "positive"}
_OWN_DATA_PRIVACY = (
    "These are patient data of the user who trained this model, and they are not published: no image, no image "
    "derived from one, no patient or image identifier and no path of the training machine comes with the model, so "
    "nobody without the data can check what this card says about it."
)


def describe_corpus(name: str, synthetic: dict | None = None, options: dict[str, Any] | None = None) -> tuple[str, str]:
    """(display name, description) of corpus `name` read with `options` (e.g. `NIH ChestX-ray14` for
    `nih-chestxray14`; unknown names as given). `synthetic`, the `phantom_record` a run recorded, means the data were
    phantoms in that corpus's format, and the card says so instead of naming the real corpus. The user's own data is
    named as theirs (module docstring)."""
    options = options or {}
    known = CORPORA.get(name)
    display_name, description = (known.display_name, known.description) if known else (name, "")
    if synthetic is None and is_own_data(name, options):
        return _describe_own_data(name, options, display_name, description)
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
    variation = f", variation {synthetic['variation']}" if "variation" in synthetic else ""
    variation += f", test fraction {synthetic['test_fraction']}" if "test_fraction" in synthetic else ""
    return (
        f"synthetic phantoms in {display_name}'s format",
        f"{synthetic['num_images']:,} synthetic chest radiographs drawn by `cxr-vitmae phantoms` ({synthetic['size']} "
        f"px, seed {synthetic['seed']}, difficulty {synthetic['difficulty']}{variation}) and read with the `{name}` "
        "loader; no patient's image. Results on them show that the pipeline runs, not how the model does on real "
        "radiographs.",
    )


def _describe_own_data(name: str, options: dict, display_name: str, description: str) -> tuple[str, str]:
    if not CORPORA[name].own_data:  # a pre-training union with the user's folders added
        folders = options["folders"]
        count = 1 if isinstance(folders, str) else len(folders)
        return (
            f"{display_name} and the user's own images ({count} folder{'s' if count > 1 else ''})",
            f"{description} Added to it: the user's own radiographs. {_OWN_DATA_PRIVACY}",
        )
    if "path" in options:  # `hf`: the dataset is named, as its repository id or its folder's name
        display_name = f"own data (the Hugging Face dataset `{options['path']}`)"
    return f"the user's {display_name}", f"{description} {_OWN_DATA_PRIVACY}"


def own_data_source(name: str, options: dict[str, Any]) -> str:
    """What a split of the user's own data is a split of, in words: "the user's table", "the user's Hugging Face
    dataset `ORG/NAME`", or "the user's own data"."""
    if name == "csv":
        table = options.get("table")
        return f"the user's table `{Path(table).name}`" if table else "the user's table"
    if options.get("path"):
        return f"the user's Hugging Face dataset `{options['path']}`"
    return "the user's own data"


def label_source(name: str, options: dict[str, Any]) -> str | None:
    """Where the labels of the user's own data come from and how its cells were read (defaults filled in); None for
    unlabelled data (pre-training folders)."""
    values = _filled_options(name, options)
    if values.get("class_column"):
        classes = values.get("class_names")
        order = f", classes {', '.join(f'`{c}`' for c in classes)} in that order" if classes else ""
        return f"one class per image (single-label), from column `{values['class_column']}`{order}"
    if not values.get("label_columns"):
        return None
    columns = ", ".join(f"`{column}`" for column in values["label_columns"])
    return (
        f"one finding per column (multi-label): {columns}; an uncertain (-1) cell is "
        f"{_policy(values.get('uncertainty', 'ignore'))}, a blank cell {_policy(values.get('blank', 'zeros'))}"
    )


def _policy(policy: str | dict) -> str:
    if isinstance(policy, dict):
        return f"read per column as `{json.dumps(policy)}`"
    return f"`{policy}` ({_POLICY_MEANINGS.get(policy, 'as the corpus defines it')})"


def hub_dataset_id(name: str, options: dict[str, Any]) -> str | None:
    """The Hub dataset repository an `hf` run read (module docstring), else None."""
    path = options.get("path") if name == "hf" else None
    if not isinstance(path, str) or path.count("/") != 1 or path.startswith((".", "~")) or Path(path).exists():
        return None
    try:
        validate_repo_id(path)
    except HFValidationError:
        return None
    return path


def card_datasets(runs: list[dict]) -> list[str] | None:
    """The card's `datasets` metadata for the runs of a model's lineage (its own run, its evaluation, the runs it
    started from): the public corpora whose images they hold and the Hub datasets they read. Phantoms borrow a
    corpus's format, not its images: they add none."""
    names = set()
    for run in runs:
        if not run.get("dataset") or run.get("synthetic_corpus"):
            continue
        name, options = run["dataset"], run.get("dataset_options") or {}
        if name in CORPORA and CORPORA[name].own_data:
            names.update(filter(None, [hub_dataset_id(name, options)]))
        else:
            names.update(image_sources([name]))
    return sorted(names) or None


def card_restrictions(runs: list[dict]) -> list[str]:
    """The agreements of the public corpora in the runs that forbid redistributing their images (the user's own data
    is described, with what is withheld, where the card names it)."""
    names = [run["dataset"] for run in runs if run.get("dataset") and not run.get("synthetic_corpus")]
    return restricted_sources([name for name in names if not (name in CORPORA and CORPORA[name].own_data)])


def stated_options(dataset: str, given: dict) -> list[tuple[str, str]]:
    """Every option of the corpus's builder with the value the run used (its default unless given), so the card
    states the split and label policies in full; machine-local paths are only said to be set."""
    return [
        (key, "(set to a local path)" if key.endswith(_PATH_OPTION_SUFFIXES) else json.dumps(value))
        for key, value in _filled_options(dataset, given).items()
        if value is not None or not key.endswith(_PATH_OPTION_SUFFIXES)
    ]


def _filled_options(dataset: str, given: dict) -> dict[str, Any]:
    try:
        return config_options(dataset, given)
    except CorpusError:  # a corpus this version does not know: what the run recorded
        return dict(sorted(given.items()))


__all__ = [
    "OWN_DATA_DATASET_TYPE",
    "card_datasets",
    "card_restrictions",
    "describe_corpus",
    "hub_dataset_id",
    "label_source",
    "own_data_source",
    "stated_options",
]
