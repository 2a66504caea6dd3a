"""Saving behaviour shared by the cxr-vitmae models."""

import os
import sys
from pathlib import Path

from .image_processing_cxr import CXRImageProcessor
from .pipeline_cxr import custom_pipelines_entry

CLASSIFIER_AUTO_CLASS = "AutoModelForImageClassification"


def remote_code_auto_map(model_class: type) -> dict[str, str]:
    """{Auto class: "module.Class"} for every class defined in `model_class`'s modeling file and registered with
    `register_for_auto_class` (its own registration, not an inherited one; the config class imported there keeps
    the entry its own file gives it)."""
    module = sys.modules[model_class.__module__]
    file_name = module.__name__.rsplit(".", 1)[-1]
    return {
        vars(member)["_auto_class"]: f"{file_name}.{member.__name__}"
        for member in vars(module).values()
        if isinstance(member, type)
        and member.__module__ == module.__name__
        and vars(member).get("_auto_class") is not None
    }


class SavesImageProcessorMixin:
    """`save_pretrained` writes every Auto class of the model's family into `auto_map`, and also the model's image
    processor when the directory has none yet, so every saved model directory works with the Auto classes,
    `AutoImageProcessor` and `pipeline` on its own. A processor saved there before (e.g. with other resize settings)
    is kept as it is. A classifier's `config.json` also names our image-classification pipeline in
    `custom_pipelines` (its file is copied with the code: saving.py imports it), so `pipeline(...,
    trust_remote_code=True)` reads 16-bit PNG and DICOM with our loader instead of transformers' 8-bit conversion."""

    def save_pretrained(self, save_directory: str | os.PathLike, *args, is_main_process: bool = True, **kwargs):
        # transformers writes only the saved class's Auto entry into `auto_map`; a pre-training directory must also
        # load as AutoModel and AutoModelForImageClassification (fine-tuning from it) with trust_remote_code, so
        # every Auto class of this modeling file goes in (the file itself is copied whole).
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **remote_code_auto_map(type(self))}
        # Only classifiers: the pipeline loads AutoModelForImageClassification, which would give a pre-training
        # directory a random head.
        pipelines = dict(getattr(self.config, "custom_pipelines", None) or {})
        ours = custom_pipelines_entry()
        if getattr(self, "_auto_class", None) == CLASSIFIER_AUTO_CLASS:
            pipelines.update(ours)
        else:
            for task, entry in ours.items():
                if isinstance(pipelines.get(task), dict) and pipelines[task].get("impl") == entry["impl"]:
                    del pipelines[task]
        if pipelines:
            self.config.custom_pipelines = pipelines
        elif hasattr(self.config, "custom_pipelines"):
            del self.config.custom_pipelines
        super().save_pretrained(save_directory, *args, is_main_process=is_main_process, **kwargs)
        if is_main_process and not (Path(save_directory) / "preprocessor_config.json").exists():
            CXRImageProcessor.for_image_size(self.config.image_size).save_pretrained(save_directory)
