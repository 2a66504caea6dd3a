"""Model code. The configuration, modeling and image-processing files, and what they import, are self-contained
apart from single-dot relative imports, because `save_pretrained` copies exactly these files into a model directory
for `trust_remote_code` loading where cxr_vitmae is absent (tests/test_remote_code.py checks their imports). The
checkpoint converters (`conversion_*`) sit next to the models they map to but are package code: they read the corpus
registry (`cxr_vitmae.data.corpora`) and are never copied."""

import transformers
from transformers import AutoConfig, AutoImageProcessor, AutoVideoProcessor

from .chest_xray_labels import NIH_CHESTXRAY14_LABELS
from .configuration_cxr_densenet import CXRDenseNetConfig
from .configuration_cxr_timm import CXRTimmConfig
from .configuration_cxr_vitmae import CXRViTMAEConfig
from .image_processing_cxr import CXRImageProcessor, RadiographReadError, load_radiograph
from .modeling_cxr_densenet import CXRDenseNetModel, CXRDenseNetPreTrainedModel, DenseNetForChestXray
from .modeling_cxr_timm import TimmForChestXray
from .modeling_cxr_vitmae import (
    CXRViTMAEForPreTraining,
    CXRViTMAEModel,
    CXRViTMAEPreTrainedModel,
    ViTMAEForChestXray,
)

# Every model class, each registered in its modeling file with the Auto class it loads as (`register_for_auto_class`,
# which saved directories' `auto_map` also records): the one place a new model class is added.
MODEL_CLASSES = (
    CXRViTMAEModel,
    CXRViTMAEForPreTraining,
    ViTMAEForChestXray,
    CXRDenseNetModel,
    DenseNetForChestXray,
    TimmForChestXray,
)


def register_auto_classes() -> None:
    """Make `AutoConfig`, `AutoModel*` and `AutoImageProcessor` resolve the cxr_vitmae model types in-process.
    Idempotent: registering the same class again is a no-op."""
    for config_class in dict.fromkeys(model_class.config_class for model_class in MODEL_CLASSES):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        # The processor is a torchvision-backend one (transformers 5 picks the class by backend).
        AutoImageProcessor.register(
            config_class, image_processor_classes={"torchvision": CXRImageProcessor}, exist_ok=True
        )
        # Declares "no video processor" locally. Without it, `pipeline()` probes AutoVideoProcessor, finds the image
        # processor's auto_map and stops at an interactive trust_remote_code prompt for a class that does not exist.
        AutoVideoProcessor.register(config_class, video_processor_classes={}, exist_ok=True)
    for model_class in MODEL_CLASSES:
        getattr(transformers, model_class._auto_class).register(model_class.config_class, model_class, exist_ok=True)


__all__ = [
    "NIH_CHESTXRAY14_LABELS",
    "CXRDenseNetConfig",
    "CXRDenseNetModel",
    "CXRDenseNetPreTrainedModel",
    "CXRImageProcessor",
    "CXRTimmConfig",
    "CXRViTMAEConfig",
    "CXRViTMAEForPreTraining",
    "CXRViTMAEModel",
    "CXRViTMAEPreTrainedModel",
    "DenseNetForChestXray",
    "MODEL_CLASSES",
    "RadiographReadError",
    "TimmForChestXray",
    "ViTMAEForChestXray",
    "load_radiograph",
    "register_auto_classes",
]
