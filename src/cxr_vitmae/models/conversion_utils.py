"""Pieces shared by the checkpoint converters of the ViT and DenseNet models (not part of the saved model code)."""

from dataclasses import dataclass, field

import torch
from transformers import PreTrainedConfig, PreTrainedModel

from ..data.corpora import CLASSIFIER_LABEL_NAMES, CorpusError, corpus
from ..errors import InputError
from .chest_xray_labels import COVIDX_PAPER_CODE_LABELS

# Head sizes of the paper's released classifiers -> the corpus they were trained on.
PAPER_HEAD_CORPORA = {14: "nih-chestxray14", 5: "chexpert", 3: "covidx", 4: "covidx"}


class ConversionError(InputError):
    """A checkpoint does not match the architecture or the options it is converted with."""


# ImageNet-1k / -21k classifiers: starting points whose head is no chest X-ray head.
IMAGENET_HEAD_SIZES = (1000, 21841, 21843)


@dataclass
class ConvertedCheckpoint:
    """A state dict already renamed to one of our model classes, with the configuration that class needs.

    `fresh_prefixes` name parameters the checkpoint cannot provide and that keep their initialisation (the new head
    of an ImageNet model); `notes` say what the conversion changed, for the user.
    """

    model_class: type[PreTrainedModel]
    config: PreTrainedConfig
    state_dict: dict[str, torch.Tensor]
    fresh_prefixes: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)


def classifier_label_options(num_outputs: int | None, labels: str | None) -> dict:
    """`id2label` and `problem_type` for a head with `num_outputs` rows (None: a new head, sized by `labels`).

    `labels` names the corpus whose labels the head has (`nih-chestxray14` or `nih`, `chexpert`, `covidx`: the
    corpus registry's classifier labels); without it the corpus is inferred from the head size of the paper's
    released files (14 NIH, 5 CheXpert, 3 or 4 COVIDx). A 4-output COVIDx head gets the paper code's class list,
    whose index 1 ('positive') is unused.
    """
    if labels is None:
        labels = PAPER_HEAD_CORPORA.get(num_outputs)
        if labels is None:
            raise ConversionError(
                f"The classification head has {num_outputs} outputs, which matches none of the paper's label sets "
                f"({', '.join(f'{n} = {name}' for n, name in PAPER_HEAD_CORPORA.items())}); pass --labels"
            )
    try:
        entry = corpus(labels)
    except CorpusError:
        entry = None
    if entry is None or not entry.classifier_labels:
        raise ConversionError(f"Unknown label set {labels!r}; expected one of {', '.join(CLASSIFIER_LABEL_NAMES)}")
    names = entry.classifier_labels
    if entry.name == "covidx" and num_outputs == len(COVIDX_PAPER_CODE_LABELS):
        names = COVIDX_PAPER_CODE_LABELS
    if num_outputs is not None and len(names) != num_outputs:
        raise ConversionError(
            f"--labels {labels} has {len(names)} classes but the checkpoint's head has {num_outputs} outputs"
        )
    problem_type = "single_label_classification" if entry.single_label else "multi_label_classification"
    return {"id2label": dict(enumerate(names)), "problem_type": problem_type}


def strip_prefixes(state_dict: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Remove any of `prefixes` (tried in order, repeatedly) from the start of every key."""
    stripped = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in prefixes:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        stripped[key] = value
    return stripped
