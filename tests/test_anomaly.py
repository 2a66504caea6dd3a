"""Planted nodules (`plant_nodule`, `plant_nodules`) and the `anomaly-eval` pointing-game driver, on a small phantom
corpus and a tiny random MAE."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import one_error_line, randomize_
from PIL import Image

from cxr_vitmae import CXRImageProcessor, CXRViTMAEConfig, CXRViTMAEForPreTraining, ViTMAEForChestXray
from cxr_vitmae.data.nih import BoundingBox
from cxr_vitmae.data.phantoms import generate_phantoms, plant_nodule
from cxr_vitmae.explain.anomaly import evaluate_planted_nodules, plant_nodules
from cxr_vitmae.explain.localization import box_mask
from cxr_vitmae.explain.reconstruction import load_pretraining_model
from cxr_vitmae.models import load_radiograph

FILM_SIZE, INPUT_SIZE, PATCH = 128, 32, 8
CONSOLE_SCRIPT = Path(sys.executable).parent / "cxr-vitmae"


def tiny_config() -> CXRViTMAEConfig:
    return CXRViTMAEConfig.from_preset("vit-tiny", image_size=INPUT_SIZE, patch_size=PATCH, num_hidden_layers=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return generate_phantoms(tmp_path_factory.mktemp("phantoms"), 60, size=FILM_SIZE, seed=0)


@pytest.fixture(scope="module")
def healthy_test_films(corpus) -> list[Path]:
    names = [image.file_name for image in corpus.images if image.split == "test" and not any(image.labels)]
    assert len(names) >= 4
    return [corpus.output_dir / "images" / name for name in names]


@pytest.fixture(scope="module")
def mae_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mae")
    randomize_(CXRViTMAEForPreTraining(tiny_config())).save_pretrained(path)
    return path


def test_plant_nodule_changes_only_the_pixels_in_its_box(healthy_test_films):
    film = load_radiograph(healthy_test_films[0])
    boxes = set()
    for seed in range(8):
        planted, box = plant_nodule(film, np.random.default_rng(seed))
        assert planted.dtype == film.dtype and planted.shape == film.shape
        assert box.label == "Nodule" and box.w >= 1 and box.h >= 1
        assert box.x >= 0 and box.y >= 0 and box.x + box.w <= FILM_SIZE and box.y + box.h <= FILM_SIZE
        inside = box_mask(box, film.shape)
        assert np.array_equal(planted[~inside], film[~inside])
        change = planted[inside] - film[inside]
        # A soft-tissue opacity: it brightens the film and never darkens it; the box is tight around it.
        assert change.min() >= 0 and change.max() > 0.02
        changed = np.argwhere(planted != film)
        assert changed[:, 0].min() == box.y and changed[:, 1].min() == box.x
        boxes.add((box.x, box.y))
        assert planted.min() >= 0.0 and planted.max() <= 1.0
    assert len(boxes) == 8  # positions are random
    # The same stream draws the same nodule; a stronger one is denser.
    again, box_again = plant_nodule(film, np.random.default_rng(0))
    assert np.array_equal(again, plant_nodule(film, np.random.default_rng(0))[0])
    faint, _ = plant_nodule(film, np.random.default_rng(0), strength=0.3)
    assert (faint - film).max() < (again - film).max()


def test_plant_nodule_lands_in_a_lung_of_the_film(corpus, healthy_test_films):
    """Lungs are the air-filled part of the chest: before planting, a nodule's box is darker than the mediastinum's
    column at the same height but brighter than the air around the body (the film's top corners), and it lies left
    or right of the spine."""
    for path in healthy_test_films:
        film = load_radiograph(path)
        outside_body = max(film[:6, :6].mean(), film[:6, -6:].mean())
        for seed in range(5):
            _, box = plant_nodule(film, np.random.default_rng(seed))
            row = int(box.y + box.h / 2)
            assert abs(box.x + box.w / 2 - FILM_SIZE / 2) > 0.05 * FILM_SIZE
            mediastinum = film[row, FILM_SIZE // 2 - 3 : FILM_SIZE // 2 + 3].mean()
            assert outside_body < film[box_mask(box, film.shape)].mean() < mediastinum


@pytest.mark.parametrize(
    ("image", "options", "message"),
    [
        (np.zeros((64, 48), np.float32), {}, r"shape \(64, 48\); expected a square"),
        (np.zeros((16, 16), np.float32), {}, "H >= 32"),
        (np.zeros((64, 64), np.uint8), {}, "dtype uint8; expected floats in"),
        (np.full((64, 64), 2.0, np.float32), {}, r"values span \[2.0, 2.0\]"),
        (np.full((64, 64), np.nan, np.float32), {}, "expected floats in"),
        (np.zeros((64, 64), np.float32), {"strength": 0.0}, r"strength must be in \(0, 1\]"),
        (np.zeros((64, 64), np.float32), {"radii": (0.05, 0.01)}, "radii must be"),
        (np.zeros((32, 32), np.float32), {"radii": (0.001, 0.001)}, "smaller than one pixel"),
    ],
)
def test_plant_nodule_bad_input(image, options, message):
    with pytest.raises(ValueError, match=message):
        plant_nodule(image, np.random.default_rng(0), **options)


def test_plant_nodules_gives_model_inputs_and_boxes_in_their_pixels(healthy_test_films):
    processor = CXRImageProcessor.for_image_size(INPUT_SIZE)
    # Mass-sized, so that the nodule is still several pixels wide after the 128 -> 37 -> 32 resize and crop.
    inputs = plant_nodules(healthy_test_films[:3], processor, np.random.default_rng(0), radii=(0.1, 0.12))
    assert inputs.planted.shape == inputs.control.shape == (3, 3, INPUT_SIZE, INPUT_SIZE)
    control = processor([str(path) for path in healthy_test_films[:3]], return_tensors="pt")["pixel_values"]
    assert torch.equal(inputs.control, control)
    rows, columns = np.mgrid[:INPUT_SIZE, :INPUT_SIZE] + 0.5  # pixel centres
    for planted, unplanted, box in zip(inputs.planted, inputs.control, inputs.boxes, strict=True):
        difference = (planted - unplanted)[0].numpy()
        assert difference.max() > 0.5  # normalised units: a plain opacity
        peak = np.unravel_index(np.argmax(difference), difference.shape)
        assert box_mask(box, difference.shape)[peak]
        # Resampling spreads the nodule but keeps its centre: the box went through the same resize and crop.
        weight = difference.clip(0) / difference.clip(0).sum()
        centre = ((weight * columns).sum(), (weight * rows).sum())
        assert centre == pytest.approx((box.x + box.w / 2, box.y + box.h / 2), abs=0.4)


def test_plant_nodules_names_the_image_it_cannot_plant_into(tmp_path, healthy_test_films):
    wide = tmp_path / "wide.png"
    Image.fromarray(np.zeros((64, 80), np.uint8)).save(wide)
    with pytest.raises(ValueError, match=r"wide.png: image has shape \(64, 80\); expected a square"):
        plant_nodules(
            [healthy_test_films[0], wide], CXRImageProcessor.for_image_size(INPUT_SIZE), np.random.default_rng(0)
        )


@pytest.mark.slow
def test_anomaly_eval_cli_scores_planted_nodules(tmp_path, corpus, mae_dir):
    output = tmp_path / "anomaly.json"
    arguments = ["--num-images", "4", "--num-maskings", "3", "--seed", "2", "--nodule-scale", "3"]
    result = subprocess.run(
        [str(CONSOLE_SCRIPT), "anomaly-eval", str(mae_dir), "--data-dir", str(corpus.output_dir), *arguments]
        + ["--output", str(output), "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "hit rate" in result.stdout
    report = json.loads(output.read_text())

    healthy_test = {image.file_name for image in corpus.images if image.split == "test" and not any(image.labels)}
    assert report["n_images"] == len(report["images"]) == 4
    assert {case["image_id"] for case in report["images"]} <= healthy_test
    assert report["num_maskings"] == 3 and report["mask_ratio"] == 0.9 and report["nodule_scale"] == 3.0
    assert report["input_size"] == [INPUT_SIZE, INPUT_SIZE]
    hits = [case["hit"] for case in report["images"]]
    assert report["hit_rate"] == pytest.approx(np.mean(hits))
    assert report["control_hit_rate"] == pytest.approx(np.mean([case["control_hit"] for case in report["images"]]))
    boxes = [BoundingBox("Nodule", *case["box"]) for case in report["images"]]
    shares = [box_mask(box, (INPUT_SIZE, INPUT_SIZE)).mean() for box in boxes]
    assert report["chance_hit_rate"] == pytest.approx(np.mean(shares), abs=1e-3)
    for case in report["images"]:
        x, y, w, h = case["box"]
        assert x >= 0 and y >= 0 and x + w <= INPUT_SIZE + 1e-3 and y + h <= INPUT_SIZE + 1e-3

    # The CLI is the library call: same seed, same report.
    model, processor = load_pretraining_model(mae_dir)
    again = evaluate_planted_nodules(
        model, processor, corpus.output_dir, num_images=4, num_maskings=3, seed=2, nodule_scale=3.0
    )
    assert again["images"] == report["images"]


def test_anomaly_eval_bad_input_gives_one_line(tmp_path, capsys, corpus, mae_dir):
    data = ["--data-dir", str(corpus.output_dir)]
    line = one_error_line(capsys, ["anomaly-eval", str(mae_dir), "--data-dir", str(tmp_path / "absent")])
    assert "absent" in line and "no such directory" in line
    line = one_error_line(capsys, ["anomaly-eval", str(mae_dir), *data, "--num-images", "500"])
    assert "'No Finding' image(s); 500 were asked for" in line
    line = one_error_line(capsys, ["anomaly-eval", str(mae_dir), *data, "--num-maskings", "0"])
    assert "num_maskings must be at least 1" in line
    line = one_error_line(capsys, ["anomaly-eval", str(mae_dir), *data, "--split", "holdout"])
    assert "split 'holdout'" in line
    classifier = tmp_path / "classifier"
    ViTMAEForChestXray(tiny_config()).save_pretrained(classifier)
    line = one_error_line(capsys, ["anomaly-eval", str(classifier), *data])
    assert "needs an MAE pre-training directory" in line
