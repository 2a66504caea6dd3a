"""cxr-vitmae: masked-autoencoder ViTs and DenseNet baselines for multi-label chest X-ray classification.

Importing the package registers every configuration, model and the image processor with the transformers Auto
classes, so `AutoModelForImageClassification.from_pretrained(dir)` works on any cxr-vitmae model directory.
"""

from .models import (
    NIH_CHESTXRAY14_LABELS,
    CXRDenseNetConfig,
    CXRDenseNetModel,
    CXRDenseNetPreTrainedModel,
    CXRImageProcessor,
    CXRViTMAEConfig,
    CXRViTMAEForPreTraining,
    CXRViTMAEModel,
    CXRViTMAEPreTrainedModel,
    DenseNetForChestXray,
    RadiographReadError,
    ViTMAEForChestXray,
    load_radiograph,
    register_auto_classes,
)

__version__ = "0.1.0"

register_auto_classes()

__all__ = [
    "NIH_CHESTXRAY14_LABELS",
    "CXRDenseNetConfig",
    "CXRDenseNetModel",
    "CXRDenseNetPreTrainedModel",
    "CXRImageProcessor",
    "CXRViTMAEConfig",
    "CXRViTMAEForPreTraining",
    "CXRViTMAEModel",
    "CXRViTMAEPreTrainedModel",
    "DenseNetForChestXray",
    "RadiographReadError",
    "ViTMAEForChestXray",
    "__version__",
    "load_radiograph",
    "register_auto_classes",
]
