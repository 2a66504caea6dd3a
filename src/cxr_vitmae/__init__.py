"""cxr-vitmae: masked-autoencoder ViTs and DenseNet baselines for multi-label chest X-ray classification.

Importing the package registers every configuration, model and the image processor with the transformers Auto
classes, so `AutoModelForImageClassification.from_pretrained(dir)` works on any cxr-vitmae model directory.
"""

from . import models
from .models import *  # noqa: F403 (the public model API, listed once, in models/__init__.py)

__version__ = "0.1.0"

models.register_auto_classes()

__all__ = [*models.__all__, "__version__"]
