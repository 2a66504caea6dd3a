"""The model-family registry: every fact about a family of models that is not in its model files, in one place.

Each `ModelFamily` says which `model_type` it owns, its preset names and how one becomes a configuration, its
classifier (and pre-training model, if it has one), what `--drop_path` sets and whether layer-wise lr decay applies,
where Grad-CAM looks, how a model card names and describes it, how `export-native` rebuilds it in stock transformers,
how a saved model is brought to another input size, and which checkpoint layouts `cxr-vitmae convert` reads for it.
The recipes' model builders, Grad-CAM, cards, provenance, export and the CLI read it from here, so a new family is one
entry (`register_family`) plus its model files.

The functions a family names are "module:function" paths inside cxr_vitmae, resolved when first used (as the corpus
registry names its builders), so that importing the registry imports no model, explainer or exporter.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from .errors import InputError
from .models.configuration_cxr_densenet import CXR_DENSENET_PRESETS, CXRDenseNetConfig
from .models.configuration_cxr_timm import TIMM_PREFIX, CXRTimmConfig
from .models.configuration_cxr_vitmae import VIT_PRESETS, CXRViTMAEConfig


@dataclass(frozen=True)
class ModelFamily:
    """One family of models as this package knows it."""

    name: str
    model_type: str  # the model_type of its configuration (config.json)
    display_name: str  # as a card's prose names it ("ViT", "DenseNet")
    config_class: type
    classifier: str  # "module:Class" of the image classifier
    presets: tuple[str, ...]  # `--model` names that build a randomly initialised model
    # "module:function" (model) -> (target layer, reshape or None) for Grad-CAM
    gradcam_target: str
    # "module:function" (card kind, config dict) -> the card's "shape", "family" and "features" of the network
    describe: str
    card_template: str  # the classifier's card template, in hub/model_cards
    card_tags: tuple[str, ...]
    paper_results: str  # the key of hub.model_card.PAPER_RESULTS its cards show
    pretraining_model: str | None = None  # "module:Class" of its MAE, if the family pre-trains
    drop_path_field: str | None = None  # the configuration field `--drop_path` sets, if any
    layer_decay: bool = False  # whether `--layer_decay` applies (transformer blocks)
    # "module:function" (model, image_size) -> the model at that input size
    resize: str = "training.models:record_image_size"
    # "module:function" (model, its image processor) -> (stock model, stock processor or None, the input size its
    # logits are checked at): the `export-native` route, if the family has one
    native_export: str | None = None
    checkpoint_sources: tuple[str, ...] = ()  # `cxr-vitmae convert --source` layouts that produce it
    # `--model PREFIXname` builds a new model for any name after the prefix (the timm family: `timm:resnet50`).
    preset_prefix: str | None = None
    # Stock transformers model types a `--model` directory or Hub id of which this family starts from (weights kept,
    # new head), and the "module:function" (model directory, **config fields) -> classifier that does it.
    adopts: tuple[str, ...] = ()
    adopt: str | None = None

    def owns(self, name: str) -> bool:
        """Whether `--model name` builds a new model of this family."""
        return name in self.presets or (self.preset_prefix is not None and name.startswith(self.preset_prefix))

    def preset_help(self) -> tuple[str, ...]:
        """Its `--model` names as help and error messages list them."""
        return self.presets + ((f"{self.preset_prefix}ARCH",) if self.preset_prefix else ())

    def new_config(self, name: str, **fields: Any):
        """The configuration of preset `name` with `fields` on top."""
        return self.config_class.from_preset(name, **fields)

    def classifier_class(self) -> type:
        return resolve(self.classifier)

    def pretraining_class(self) -> type | None:
        return None if self.pretraining_model is None else resolve(self.pretraining_model)


def resolve(path: str) -> Any:
    """The object a "module:name" path names: a module inside cxr_vitmae (the package's own families) or, failing
    that, an importable module of that name (a family registered from outside)."""
    module, name = path.split(":")
    try:
        found = importlib.import_module(f"cxr_vitmae.{module}")
    except ModuleNotFoundError as error:
        if error.name != f"cxr_vitmae.{module}":
            raise
        found = importlib.import_module(module)
    return getattr(found, name)


_FAMILIES: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Add `family` to the registry (replacing one of the same name); a model type or preset another family owns is
    refused."""
    for other in _FAMILIES.values():
        if other.name == family.name:
            continue
        if other.model_type == family.model_type:
            raise ValueError(f"model_type {family.model_type!r} already belongs to the {other.name!r} family")
        shared = set(other.presets) & set(family.presets)
        if shared:
            raise ValueError(f"preset(s) {sorted(shared)} already belong to the {other.name!r} family")
        if family.preset_prefix is not None and family.preset_prefix == other.preset_prefix:
            raise ValueError(f"preset prefix {family.preset_prefix!r} already belongs to the {other.name!r} family")
    _FAMILIES[family.name] = family
    return family


def families() -> tuple[ModelFamily, ...]:
    return tuple(_FAMILIES.values())


def preset_names() -> tuple[str, ...]:
    """Every preset name, family by family (a prefix family's as `PREFIXARCH`)."""
    return tuple(name for family in _FAMILIES.values() for name in family.preset_help())


def family_adopting(model_type: str) -> ModelFamily | None:
    """The family that starts from a stock transformers model of `model_type` (`ModelFamily.adopts`), if any."""
    return next((family for family in _FAMILIES.values() if model_type in family.adopts), None)


def family_for_preset(name: str) -> ModelFamily | None:
    """The family that builds `--model name` from scratch, or None when `name` is no preset (a directory)."""
    return next((family for family in _FAMILIES.values() if family.owns(name)), None)


def family_of(model_or_type: Any) -> ModelFamily:
    """The family of a model, a configuration, a config.json mapping or a model type."""
    if isinstance(model_or_type, str):
        model_type = model_or_type
    elif isinstance(model_or_type, dict):
        model_type = model_or_type.get("model_type")
    else:
        config = getattr(model_or_type, "config", model_or_type)
        model_type = getattr(config, "model_type", None)
    for family in _FAMILIES.values():
        if family.model_type == model_type:
            return family
    raise InputError(
        f"model_type {model_type!r} belongs to no cxr-vitmae model family (known: "
        f"{', '.join(family.model_type for family in _FAMILIES.values())})"
    )


register_family(
    ModelFamily(
        name="vit",
        model_type=CXRViTMAEConfig.model_type,
        display_name="ViT",
        config_class=CXRViTMAEConfig,
        classifier="models.modeling_cxr_vitmae:ViTMAEForChestXray",
        pretraining_model="models.modeling_cxr_vitmae:CXRViTMAEForPreTraining",
        presets=tuple(VIT_PRESETS),
        drop_path_field="drop_path_rate",
        layer_decay=True,
        gradcam_target="explain.gradcam:vit_gradcam_target",
        describe="hub.model_card:describe_vit",
        card_template="vit_classifier.md",
        card_tags=("vit", "masked-autoencoder"),
        paper_results="vit",
        resize="training.models:resize_vit",
        native_export="hub.export_native:vit_to_beit",
        checkpoint_sources=("medical-mae", "timm", "hf-vitmae"),
    )
)
register_family(
    ModelFamily(
        name="densenet",
        model_type=CXRDenseNetConfig.model_type,
        display_name="DenseNet",
        config_class=CXRDenseNetConfig,
        classifier="models.modeling_cxr_densenet:DenseNetForChestXray",
        presets=tuple(CXR_DENSENET_PRESETS),
        gradcam_target="explain.gradcam:densenet_gradcam_target",
        describe="hub.model_card:describe_densenet",
        card_template="densenet_classifier.md",
        card_tags=("densenet", "cnn"),
        paper_results="densenet",
        native_export="hub.export_native:densenet_to_timm",
        checkpoint_sources=("torchvision-densenet",),
    )
)
register_family(
    ModelFamily(
        name="timm",
        model_type=CXRTimmConfig.model_type,
        display_name="timm",
        config_class=CXRTimmConfig,
        classifier="models.modeling_cxr_timm:TimmForChestXray",
        presets=(),
        preset_prefix=TIMM_PREFIX,
        drop_path_field="drop_path_rate",
        gradcam_target="explain.gradcam:timm_gradcam_target",
        describe="hub.model_card:describe_timm",
        card_template="timm_classifier.md",
        card_tags=("timm",),
        paper_results="densenet",  # the paper has none for these networks: the card shows its CNN baseline's
        native_export="hub.export_native:timm_to_timm_wrapper",
        adopts=("timm_wrapper",),
        adopt="models.conversion_timm:from_timm_wrapper",
    )
)
