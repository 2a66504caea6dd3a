"""The phantom corpus read back through the real NIH ChestX-ray14 builder, and the `phantoms` command."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cxr_vitmae.data import load_cxr_dataset
from cxr_vitmae.data.phantoms import generate_phantoms


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return generate_phantoms(tmp_path_factory.mktemp("phantoms"), 150, size=64, seed=11)


def test_builder_returns_exactly_what_the_generator_recorded(phantoms):
    dataset = load_cxr_dataset("nih-chestxray14", phantoms.output_dir)
    recorded = phantoms.by_file_name()
    seen = set()
    for split, rows in dataset.items():
        for row in rows:
            image = recorded[row["image_id"]]
            seen.add(row["image_id"])
            assert (row["patient_id"], row["view"]) == (image.patient_id, image.view)
            assert np.array_equal(np.asarray(row["labels"], dtype=np.float32), np.asarray(image.labels, np.float32))
            assert (split == "test") == (image.split == "test")
            boxes = [(box["label"], box["x"], box["y"], box["w"], box["h"]) for box in row["boxes"]]
            assert boxes == [(box.label, box.x, box.y, box.w, box.h) for box in image.boxes]
            for _, x, y, w, h in boxes:
                assert min(x, y) >= 0 and max(x + w, y + h) <= phantoms.size
    assert seen == set(recorded)
    assert sum(len(image.boxes) for image in phantoms.images) > 0


@pytest.mark.slow
def test_phantoms_command(tmp_path):
    script = Path(sys.executable).parent / "cxr-vitmae"
    done = subprocess.run(
        [str(script), "phantoms", "--output", str(tmp_path / "a"), "--num-images", "12", "--size", "64", "--seed", "5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "a" / "images").glob("*.png"))) == 12
    refused = subprocess.run(
        [str(script), "phantoms", "--output", str(tmp_path / "b"), "--num-images", "3", "--difficulty", "2.5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "difficulty 2.5" in lines[0], refused.stderr
