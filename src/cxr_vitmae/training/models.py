"""The model a recipe starts from: a preset (from scratch), a pre-training directory or a converted checkpoint.

The input resolution has one source, the recipe's `--image_size`, which also sizes the data transforms: a
`--model_overrides` image_size that disagrees with it is refused, and a model directory saved at another resolution
is brought to it (ViT position tables resampled bicubically, as the paper's fine-tuning code does; a DenseNet has no
table and only records the new size).
"""

from pathlib import Path
from typing import Any

from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, AutoModelForImageClassification, PreTrainedModel

from ..errors import InputError
from ..model_directory import model_directory
from ..model_families import families, family_adopting, family_for_preset, family_of, preset_names, resolve
from ..models.vit_building_blocks import resize_position_table

# The position tables a cxr_vitmae state dict may hold (the decoder's in pre-training models only).
_POSITION_TABLES = ("vit.embeddings.position_embeddings", "decoder.decoder_pos_embed")


def _without_image_size(overrides: dict[str, Any], image_size: int) -> dict[str, Any]:
    """`overrides` less an `image_size` equal to the recipe's; a different one is refused."""
    if "image_size" in overrides and overrides["image_size"] != image_size:
        raise ValueError(
            f"--model_overrides image_size={overrides['image_size']} disagrees with --image_size {image_size}, which "
            "also sizes the data transforms: give the resolution once, with --image_size"
        )
    return {key: value for key, value in overrides.items() if key != "image_size"}


def at_image_size(model: PreTrainedModel, image_size: int) -> PreTrainedModel:
    """`model` at input resolution `image_size`, as its family resizes (`ModelFamily.resize`); unchanged when the size
    already matches."""
    if model.config.image_size == image_size:
        return model
    return resolve(family_of(model).resize)(model, image_size)


def record_image_size(model: PreTrainedModel, image_size: int) -> PreTrainedModel:
    """A convolutional network takes any size: only the size is recorded (its processor's crop)."""
    model.config.image_size = image_size
    return model


def resize_vit(model: PreTrainedModel, image_size: int) -> PreTrainedModel:
    """A ViT with its position tables resampled bicubically (CLS row kept), rebuilt at the new size."""
    config = model.config
    if image_size % config.patch_size:
        raise ValueError(f"--image_size {image_size} is not a multiple of the model's patch size {config.patch_size}")
    grid = image_size // config.patch_size
    state = model.state_dict()
    for key in _POSITION_TABLES:
        if key in state:
            state[key] = resize_position_table(state[key], grid, grid)
    config.image_size = image_size
    resized = type(model)(config)
    resized.load_state_dict(state)
    return resized


def build_classifier(
    model: str,
    *,
    label_names: list[str],
    single_label: bool,
    image_size: int,
    drop_path: float,
    overrides: dict[str, Any],
) -> PreTrainedModel:
    """A classifier for `label_names` at `image_size`: a new one from a preset name, or one loaded from a model
    directory (a pre-training directory keeps its encoder and gets a new head; a classifier with other labels gets
    a new head)."""
    overrides = _without_image_size(overrides, image_size)
    labels = {
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: index for index, name in enumerate(label_names)},
        "problem_type": "single_label_classification" if single_label else "multi_label_classification",
    }
    family = family_for_preset(model)
    if family is not None:
        drop = {family.drop_path_field: drop_path} if family.drop_path_field else {}
        try:
            config = family.new_config(model, image_size=image_size, **drop, **labels, **overrides)
        except (ValueError, StrictDataclassError) as error:  # e.g. a timm name timm does not know
            raise InputError(f"--model {model}: {error.__cause__ or error}") from error
        try:
            return family.classifier_class()(config)
        except TypeError as error:  # a network without stochastic depth given --drop_path > 0
            if "drop_path_rate" not in str(error):
                raise
            raise InputError(f"--model {model} has no stochastic depth ({error}): run it with --drop_path 0") from error
    model = _model_directory(model)
    config = AutoConfig.from_pretrained(model)
    adopting = family_adopting(config.model_type)
    if adopting is not None:
        # A stock model (e.g. timm's ImageNet weights): its network with a new head, in the family's class.
        drop = {adopting.drop_path_field: drop_path} if adopting.drop_path_field else {}
        return resolve(adopting.adopt)(model, image_size=image_size, **drop, **labels, **overrides)
    field = family_of(config).drop_path_field
    extra = {field: drop_path} if field else {}
    # Loaded at its own size (ignore_mismatched_sizes is for a new head, never for a position table), then resized.
    loaded = AutoModelForImageClassification.from_pretrained(
        model, ignore_mismatched_sizes=True, **labels, **extra, **overrides
    )
    return at_image_size(loaded, image_size)


def _model_directory(model: str) -> Path:
    """The local directory of a `--model` that names no preset: a directory, or a Hub repository id (downloaded, or
    read from the Hub cache when offline)."""
    try:
        return model_directory(model)
    except InputError as error:
        raise InputError(f"--model {model}: neither a preset ({', '.join(preset_names())}) nor {error}") from error


def build_pretraining_model(
    model: str, *, image_size: int, mask_ratio: float, norm_pix_loss: bool, overrides: dict[str, Any]
) -> PreTrainedModel:
    """An MAE from a preset of a family that pre-trains, or continued from a pre-training directory (e.g. a converted
    ImageNet MAE), at `image_size`."""
    overrides = _without_image_size(overrides, image_size)
    objective = {"mask_ratio": mask_ratio, "norm_pix_loss": norm_pix_loss}
    family = family_for_preset(model)
    if family is not None and family.pretraining_model is not None:
        return family.pretraining_class()(family.new_config(model, image_size=image_size, **objective, **overrides))
    if family is not None or not (Path(model) / "config.json").is_file():
        pretraining = [name for family in families() if family.pretraining_model for name in family.presets]
        raise InputError(f"--model {model}: neither an MAE preset ({', '.join(pretraining)}) nor a directory")
    family = family_of(AutoConfig.from_pretrained(model))
    if family.pretraining_model is None:
        raise InputError(f"--model {model}: a {family.display_name}, which has no MAE to pre-train")
    return at_image_size(family.pretraining_class().from_pretrained(model, **objective, **overrides), image_size)
