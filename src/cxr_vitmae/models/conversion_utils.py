"""Pieces shared by the checkpoint converters of the ViT and DenseNet models (not part of the saved model code)."""

from dataclasses import dataclass, field

import torch
from transformers import PreTrainedConfig, PreTrainedModel

from .chest_xray_labels import (
    CHEXPERT_COMPETITION_LABELS,
    COVIDX_LABELS,
    COVIDX_PAPER_CODE_LABELS,
    NIH_CHESTXRAY14_LABELS,
)

LABEL_SETS = {
    "nih": NIH_CHESTXRAY14_LABELS,
    "chexpert": CHEXPERT_COMPETITION_LABELS,
    "covidx": COVIDX_LABELS,
}
# Head sizes of the paper's released classifiers -> the label set they were trained on.
LABEL_SET_BY_HEAD_SIZE = {14: "nih", 5: "chexpert", 3: "covidx", 4: "covidx"}


class ConversionError(ValueError):
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


def classifier_label_options(num_outputs: int, labels: str | None) -> dict:
    """`id2label` and `problem_type` for a head with `num_outputs` rows.

    `labels` names the label set ("nih", "chexpert", "covidx"); without it the set is inferred from the head size of
    the paper's released files (14 NIH, 5 CheXpert, 3 or 4 COVIDx). COVIDx is single-label (softmax), the others
    multi-label. A 4-output COVIDx head gets the paper code's class list, whose index 1 ('positive') is unused.
    """
    if labels is None:
        labels = LABEL_SET_BY_HEAD_SIZE.get(num_outputs)
        if labels is None:
            raise ConversionError(
                f"The classification head has {num_outputs} outputs, which matches none of the paper's label sets "
                f"({', '.join(f'{n} = {name}' for n, name in LABEL_SET_BY_HEAD_SIZE.items())}); pass --labels"
            )
    if labels not in LABEL_SETS:
        raise ConversionError(f"Unknown label set {labels!r}; expected one of {sorted(LABEL_SETS)}")
    names = LABEL_SETS[labels]
    if labels == "covidx" and num_outputs == len(COVIDX_PAPER_CODE_LABELS):
        names = COVIDX_PAPER_CODE_LABELS
    if len(names) != num_outputs:
        raise ConversionError(
            f"--labels {labels} has {len(names)} classes but the checkpoint's head has {num_outputs} outputs"
        )
    problem_type = "single_label_classification" if labels == "covidx" else "multi_label_classification"
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
