"""Saving behaviour shared by the cxr-vitmae models."""

import os
from pathlib import Path

from .image_processing_cxr import CXRImageProcessor


class SavesImageProcessorMixin:
    """`save_pretrained` also writes the model's image processor when the directory has none yet, so every saved
    model directory works with `AutoImageProcessor` and `pipeline` on its own. A processor saved there before (e.g.
    with other resize settings) is kept as it is."""

    def save_pretrained(self, save_directory: str | os.PathLike, *args, is_main_process: bool = True, **kwargs):
        super().save_pretrained(save_directory, *args, is_main_process=is_main_process, **kwargs)
        if is_main_process and not (Path(save_directory) / "preprocessor_config.json").exists():
            CXRImageProcessor.for_image_size(self.config.image_size).save_pretrained(save_directory)
