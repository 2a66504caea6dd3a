"""Localisation metric: box mapping through the image processor, pointing game / IoU on maps with known boxes, the
patient-split threshold choice, and `cxr-vitmae localize` on a phantom corpus."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from model_helpers import randomize_

from cxr_vitmae import CXRImageProcessor, CXRViTMAEConfig, CXRViTMAEForPreTraining, ViTMAEForChestXray
from cxr_vitmae.cli import main
from cxr_vitmae.data.nih import BoundingBox, read_bounding_boxes
from cxr_vitmae.explain.localization import (
    DEFAULT_THRESHOLDS,
    box_ious,
    box_mask,
    box_to_model_input,
    localize,
    pointing_hit,
    score_box,
    summarize_localization,
    tuning_patients,
)


def processed_box(width: int, height: int, box: BoundingBox, processor) -> tuple[float, float, float, float]:
    """Centre (x, y) and size (w, h) of a white `box` on a black width x height image after `processor`, measured
    from the processed pixels (intensity moments, so the bicubic blur does not move them)."""
    image = np.zeros((height, width), dtype=np.uint8)
    image[int(box.y) : int(box.y + box.h), int(box.x) : int(box.x + box.w)] = 255
    pixels = processor(image, return_tensors="pt")["pixel_values"][0, 0].numpy()
    intensity = np.clip(pixels * processor.image_std[0] + processor.image_mean[0], 0, 1)
    rows, columns = np.indices(intensity.shape) + 0.5
    mass = intensity.sum()
    centre_x, centre_y = (columns * intensity).sum() / mass, (rows * intensity).sum() / mass
    extent_x = np.count_nonzero(intensity.max(axis=0) > 0.5)
    extent_y = np.count_nonzero(intensity.max(axis=1) > 0.5)
    return centre_x, centre_y, extent_x, extent_y


@pytest.mark.parametrize(
    ("width", "height", "box", "image_size"),
    [
        (90, 60, BoundingBox("Mass", 30, 12, 24, 30), 32),  # landscape: the crop trims the sides
        (60, 95, BoundingBox("Mass", 6, 40, 40, 20), 32),  # portrait: the crop trims top and bottom
        (256, 256, BoundingBox("Mass", 40, 100, 120, 64), 64),
    ],
)
def test_box_mapping_follows_the_image_processor(width, height, box, image_size):
    processor = CXRImageProcessor.for_image_size(image_size)
    mapped = box_to_model_input(box, (width, height), processor)
    centre_x, centre_y, extent_x, extent_y = processed_box(width, height, box, processor)
    assert mapped.label == "Mass"
    assert mapped.x + mapped.w / 2 == pytest.approx(centre_x, abs=0.1)
    assert mapped.y + mapped.h / 2 == pytest.approx(centre_y, abs=0.1)
    assert mapped.w == pytest.approx(extent_x, abs=1.0) and mapped.h == pytest.approx(extent_y, abs=1.0)


def test_box_mapping_of_an_nih_image_for_the_papers_preprocessing():
    # 1024 px -> 256 px (x 1/4) -> center crop 224 (16 px off each side).
    processor = CXRImageProcessor()
    mapped = box_to_model_input(BoundingBox("Nodule", 100, 200, 300, 400), (1024, 1024), processor)
    assert mapped == BoundingBox("Nodule", 100 / 4 - 16, 200 / 4 - 16, 300 / 4, 400 / 4)
    # Partly in the cropped margin: clipped to the crop. Wholly in it: gone.
    assert box_to_model_input(BoundingBox("Mass", 0, 0, 128, 128), (1024, 1024), processor) == BoundingBox(
        "Mass", 0.0, 0.0, 16.0, 16.0
    )
    assert box_to_model_input(BoundingBox("Mass", 1000, 10, 20, 500), (1024, 1024), processor) is None


def test_box_mapping_without_crop_scales_each_axis():
    processor = CXRImageProcessor(size={"height": 50, "width": 40}, do_center_crop=False)
    mapped = box_to_model_input(BoundingBox("Mass", 10, 20, 30, 40), (80, 200), processor)
    assert mapped == BoundingBox("Mass", 5.0, 5.0, 15.0, 10.0)


def test_box_mask_covers_every_pixel_the_box_overlaps():
    mask = box_mask(BoundingBox("Nodule", 2.5, 1.2, 0.1, 0.1), (4, 5))
    assert np.argwhere(mask).tolist() == [[1, 2]]
    mask = box_mask(BoundingBox("Mass", 1.0, 0.5, 2.0, 2.0), (4, 5))
    assert mask.sum() == 2 * 3 and mask[0:3, 1:3].all()


def block_map(shape, box: BoundingBox, shift_x: float = 0.0) -> np.ndarray:
    heatmap = np.zeros(shape, dtype=np.float32)
    heatmap[box_mask(BoundingBox(box.label, box.x + shift_x, box.y, box.w, box.h), shape)] = 1.0
    return heatmap


def test_a_perfect_map_scores_one_and_a_shifted_map_less():
    box = BoundingBox("Mass", 8, 10, 12, 6)
    perfect = block_map((32, 32), box)
    assert pointing_hit(perfect, box)
    np.testing.assert_allclose(box_ious(perfect, box), 1.0)

    # Shifted by half its width: overlap w/2 * h, union 3/2 * w * h.
    shifted = block_map((32, 32), box, shift_x=6)
    np.testing.assert_allclose(box_ious(shifted, box), 1 / 3)
    outside = block_map((32, 32), box, shift_x=14)
    assert not pointing_hit(outside, box)
    np.testing.assert_allclose(box_ious(outside, box), 0.0)


def test_thresholding_and_degenerate_maps():
    box = BoundingBox("Mass", 0, 0, 4, 4)
    # A ramp along x: at threshold t the region is the columns with value >= t * max.
    ramp = np.tile(np.arange(16, dtype=np.float32) / 15, (16, 1))
    ious = box_ious(ramp, box, thresholds=[0.5])
    assert ious[0] == 0.0  # the region is the right half, the box is in the left corner
    ious = box_ious(ramp[:, ::-1], box, thresholds=[0.8])  # columns 0-3 are >= 0.8: a 16x4 strip
    assert ious[0] == pytest.approx(16 / 64)
    # A constant map points nowhere and covers everything; an all-zero map covers nothing.
    assert not pointing_hit(np.ones((16, 16)), box)
    assert box_ious(np.ones((16, 16)), box, thresholds=[0.5])[0] == pytest.approx(16 / 256)
    assert box_ious(np.zeros((16, 16)), box, thresholds=[0.5])[0] == 0.0


def synthetic_scores(n_patients: int, shift_x: float = 0.0):
    """Two boxes of two classes per patient, each scored against a block map shifted by `shift_x`."""
    rng = np.random.default_rng(0)
    scores = []
    for patient in range(n_patients):
        for label in ("Effusion", "Nodule"):
            x, y = rng.integers(0, 16, size=2)
            box = BoundingBox(label, float(x), float(y), 8.0, 6.0)
            heatmap = block_map((32, 32), box, shift_x)
            scores.append(score_box(heatmap, box, image_id=f"{patient}.png", patient_id=f"{patient:08d}"))
    return scores


def test_summary_of_perfect_and_shifted_maps():
    perfect = summarize_localization(synthetic_scores(20), label_names=["Nodule", "Mass", "Effusion"])
    assert list(perfect["per_class"]) == ["Nodule", "Effusion"]
    for result in (perfect, *perfect["per_class"].values()):
        assert result["pointing_game"] == 1.0 and result["mean_iou"] == pytest.approx(1.0)
        assert result["ap25"] == 1.0 and result["ap50"] == 1.0
    assert perfect["n_boxes"] + perfect["tuning"]["n_boxes"] == 40
    assert perfect["n_patients"] + perfect["tuning"]["n_patients"] == 20
    # Every 8 x 6 box lies inside the 32 x 32 map: a uniformly random point hits it with probability 48 / 1024.
    assert perfect["chance_pointing_game"] == pytest.approx(48 / 1024)

    shifted = summarize_localization(synthetic_scores(20, shift_x=4.0))
    assert shifted["mean_iou"] == pytest.approx(1 / 3) and shifted["ap25"] == 1.0 and shifted["ap50"] == 0.0
    assert shifted["pointing_game"] == 1.0  # the first maximum is still inside the box


def test_threshold_is_chosen_on_the_tuning_patients_and_reported_on_the_others():
    thresholds = (0.2, 0.5, 0.8)
    patients = [f"{p:08d}" for p in range(10)]
    tuning = tuning_patients(patients, 0.5, seed=3)
    # Tuning boxes are best at 0.5, reported boxes at 0.8: the summary must use 0.5 and score the reported boxes.
    tuning_ious, reported_ious = np.array([0.1, 0.6, 0.3]), np.array([0.1, 0.2, 0.9])
    scores = [
        score_box(np.ones((4, 4)), BoundingBox("Mass", 0, 0, 1, 1), image_id=p, patient_id=p, thresholds=thresholds)
        for p in patients
    ]
    scores = [dataclasses.replace(s, ious=tuning_ious if s.patient_id in tuning else reported_ious) for s in scores]
    summary = summarize_localization(scores, thresholds, tune_fraction=0.5, seed=3)
    assert summary["threshold"]["fraction_of_max"] == 0.5
    assert summary["threshold"]["tuning_mean_iou"] == pytest.approx(0.6)
    assert summary["mean_iou"] == pytest.approx(0.2)
    assert summary["tuning"] == {"n_boxes": 5, "n_patients": 5} and summary["n_patients"] == 5


def test_tuning_patients_are_reproducible_and_depend_on_the_seed():
    patients = [f"{p:08d}" for p in range(40)]
    first = tuning_patients(patients, 0.5, seed=0)
    assert len(first) == 20 and first == tuning_patients(list(reversed(patients)), 0.5, seed=0)
    assert first != tuning_patients(patients, 0.5, seed=1)
    assert len(tuning_patients(patients[:2], 0.9, seed=0)) == 1  # at least one patient left to report on
    with pytest.raises(ValueError, match="needs at least 2"):
        tuning_patients(["00000001", "00000001"], 0.5, seed=0)
    with pytest.raises(ValueError, match="tune_fraction=1.0"):
        tuning_patients(patients, 1.0, seed=0)


@pytest.fixture(scope="module")
def phantoms(phantom_corpus) -> Path:
    # 60 phantoms (seed 0) hold 11 boxes on 8 test images of 4 patients.
    return phantom_corpus(60, size=48, seed=0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model")
    config = CXRViTMAEConfig.from_preset("vit-tiny", image_size=32, patch_size=8, num_hidden_layers=2)
    randomize_(ViTMAEForChestXray(config), std=0.2).save_pretrained(path)
    return path


def test_localize_cli_writes_the_json(phantoms, model_dir, tmp_path, capfd):
    output = tmp_path / "localization.json"
    arguments = ["localize", str(model_dir), "--dataset", "nih-chestxray14", "--data-dir", str(phantoms)]
    assert main([*arguments, "--output", str(output)]) == 0
    assert "pointing game" in capfd.readouterr().out
    result = json.loads(output.read_text())

    n_boxes = sum(len(boxes) for boxes in read_bounding_boxes(phantoms).values())
    skipped = result["skipped_boxes"]
    assert result["n_boxes"] + result["tuning"]["n_boxes"] + skipped["outside_crop"] == n_boxes
    assert skipped["class_not_predicted"] == 0
    assert result["target_layer"] == "vit.layers.1.layernorm_before" and result["map_size"] == [32, 32]
    assert result["threshold"]["fraction_of_max"] in DEFAULT_THRESHOLDS
    assert sum(entry["n_boxes"] for entry in result["per_class"].values()) == result["n_boxes"]
    for entry in (result, *result["per_class"].values()):
        assert all(0.0 <= entry[key] <= 1.0 for key in ("pointing_game", "mean_iou", "ap25", "ap50"))


def test_localize_is_reproducible_and_its_split_follows_the_seed(phantoms, model_dir):
    first = localize(model_dir, "nih-chestxray14", phantoms, seed=0)
    assert localize(model_dir, "nih-chestxray14", phantoms, seed=0, batch_size=3) == first
    other = localize(model_dir, "nih-chestxray14", phantoms, seed=5)
    assert (other["tuning"], other["n_boxes"]) != (first["tuning"], first["n_boxes"])


def test_localize_bad_inputs(phantoms, model_dir, tmp_path, capfd):
    pretraining = tmp_path / "pretraining"
    config = CXRViTMAEConfig.from_preset("vit-tiny", image_size=32, patch_size=8, num_hidden_layers=1)
    CXRViTMAEForPreTraining(config).save_pretrained(pretraining)
    capfd.readouterr()  # saving may print a progress bar; only the command's own output is checked
    arguments = ["localize", str(pretraining), "--dataset", "nih-chestxray14", "--data-dir", str(phantoms)]
    assert main([*arguments, "--output", str(tmp_path / "out.json")]) == 1
    lines = capfd.readouterr().err.strip().splitlines()
    assert lines == [
        f"cxr-vitmae localize: error: {pretraining} holds a CXRViTMAEForPreTraining model, not an image classifier "
        "(its classification head would be random): pass a fine-tuned classifier directory"
    ]
    assert not (tmp_path / "out.json").exists()

    with pytest.raises(ValueError, match="tune_fraction=0: expected a number strictly between 0 and 1"):
        localize(model_dir, "nih-chestxray14", phantoms, tune_fraction=0)
    with pytest.raises(ValueError, match="nih-chestxray14 train: no box of a class the model predicts"):
        localize(model_dir, "nih-chestxray14", phantoms, split="train")
    covidx = tmp_path / "covidx"
    config = CXRViTMAEConfig.from_preset(
        "vit-tiny", image_size=32, patch_size=8, num_hidden_layers=1, id2label={0: "normal", 1: "COVID-19"}
    )
    ViTMAEForChestXray(config).save_pretrained(covidx)
    with pytest.raises(ValueError, match=r"no box of a class the model predicts \(11 boxes; the model predicts normal"):
        localize(covidx, "nih-chestxray14", phantoms)
