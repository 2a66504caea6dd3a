"""Which files under a folder are radiographs: one rule for the `folder` corpus and `cxr-vitmae predict` (which so
lists a folder without loading `datasets`)."""

from pathlib import Path

from .models.image_processing_cxr import DICOM_SUFFIXES

# PNG (8/16-bit), JPEG and DICOM (by the suffixes `load_radiograph` reads DICOM by; it also sniffs the magic bytes).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", *DICOM_SUFFIXES)


def images_below(folder: Path) -> list[Path]:
    """Every image file in `folder` or below it, by suffix, hidden files and folders skipped, in sorted path order."""
    return [
        path
        for path in sorted(folder.rglob("*"))
        if path.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        and path.is_file()
    ]


__all__ = ["IMAGE_SUFFIXES", "images_below"]
