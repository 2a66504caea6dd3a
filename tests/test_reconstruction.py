"""MAE reconstructions, anomaly maps and the `reconstruct` figure, on a tiny random MAE (32 px, 16 patches of 8)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import one_error_line, randomize_
from PIL import Image

from cxr_vitmae import (
    CXRDenseNetConfig,
    CXRImageProcessor,
    CXRViTMAEConfig,
    CXRViTMAEForPreTraining,
    ViTMAEForChestXray,
)
from cxr_vitmae.errors import InputError
from cxr_vitmae.evaluation.figures import PANEL_PIXELS, panels_image
from cxr_vitmae.explain.reconstruction import (
    anomaly_map,
    load_pretraining_model,
    random_noise,
    reconstruct,
    reconstruction_panels,
    reconstruction_views,
)

SIZE, PATCH = 32, 8
NUM_PATCHES = (SIZE // PATCH) ** 2
CONSOLE_SCRIPT = Path(sys.executable).parent / "cxr-vitmae"


def tiny_config() -> CXRViTMAEConfig:
    return CXRViTMAEConfig.from_preset("vit-tiny", image_size=SIZE, patch_size=PATCH, num_hidden_layers=2)


@pytest.fixture(scope="module")
def mae() -> CXRViTMAEForPreTraining:
    return randomize_(CXRViTMAEForPreTraining(tiny_config())).eval()


@pytest.fixture(scope="module")
def mae_dir(tmp_path_factory, mae) -> Path:
    path = tmp_path_factory.mktemp("mae")
    mae.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def film(tmp_path_factory) -> Path:
    """A random 8-bit image: no 8x8 block of it is flat, so flat blocks in a panel are the masking's."""
    path = tmp_path_factory.mktemp("film") / "film.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)).save(path)
    return path


def pixels(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))


def hidden_patches(mask: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) per-pixel mask -> (N, num_patches) per-patch mask."""
    return mask[:, 0, ::PATCH, ::PATCH].flatten(1)


def test_reconstruct_paints_the_pretraining_forward_into_the_hidden_patches(mae):
    pixel_values = pixels()
    noise = random_noise(2, NUM_PATCHES, torch.Generator().manual_seed(0))
    views = reconstruct(mae, pixel_values, noise)
    with torch.no_grad():
        output = mae(pixel_values, noise=noise)
    mask = views["mask"]
    assert torch.equal(hidden_patches(mask), output.mask)
    painted = mae.unpatchify(output.logits)
    torch.testing.assert_close(views["reconstruction"], torch.where(mask.bool(), painted, pixel_values))
    assert torch.equal(views["masked"], pixel_values * (1 - mask))
    assert torch.equal(views["original"], pixel_values)


def test_mask_ratio_override_hides_that_share_and_leaves_the_config_alone(mae):
    pixel_values = pixels()
    noise = random_noise(2, NUM_PATCHES, torch.Generator().manual_seed(1))
    masks = {}
    for ratio in (0.25, 0.5, 0.75):
        masks[ratio] = hidden_patches(reconstruct(mae, pixel_values, noise, mask_ratio=ratio)["mask"])
        kept = int(NUM_PATCHES * (1 - ratio))
        assert masks[ratio].sum(dim=1).tolist() == [NUM_PATCHES - kept] * 2
    # Same noise: a higher ratio hides a superset, the highest-noise patches first.
    assert torch.all(masks[0.75] >= masks[0.5]) and torch.all(masks[0.5] >= masks[0.25])
    assert mae.config.mask_ratio == 0.9
    default = hidden_patches(reconstruct(mae, pixel_values, noise)["mask"])
    assert default.sum(dim=1).tolist() == [NUM_PATCHES - int(NUM_PATCHES * 0.1)] * 2


@pytest.mark.parametrize(
    ("ratio", "message"), [(0.0, r"in \(0, 1\)"), (1.0, r"in \(0, 1\)"), (0.97, "hides all 16 patches")]
)
def test_bad_mask_ratio_is_refused(mae, ratio, message):
    with pytest.raises(ValueError, match=message):
        reconstruct(mae, pixels(1), mask_ratio=ratio)


def test_anomaly_map_averages_each_pixel_over_the_maskings_that_hid_it(mae):
    pixel_values, maskings, seed = pixels(), 3, 7
    result = anomaly_map(mae, pixel_values, maskings, seed, mask_ratio=0.5)
    assert result.shape == (2, SIZE, SIZE)

    # The same maskings, one by one: the k-th draw of a generator seeded with `seed`.
    generator = torch.Generator().manual_seed(seed)
    errors, masks = [], []
    for _ in range(maskings):
        views = reconstruct(mae, pixel_values, random_noise(2, NUM_PATCHES, generator), mask_ratio=0.5)
        errors.append((views["reconstruction"] - pixel_values).abs().mean(dim=1))
        masks.append(views["mask"][:, 0])
    errors, masks = torch.stack(errors), torch.stack(masks)
    times_hidden = masks.sum(dim=0)
    # The seed gives pixels hidden 0, 1, 2 and 3 times, so every case of the rule is exercised.
    assert {0, 1, 2, 3} <= set(times_hidden.unique().int().tolist())

    expected = (errors * masks).sum(dim=0) / times_hidden
    torch.testing.assert_close(result, expected, equal_nan=True)
    assert torch.equal(torch.isnan(result), times_hidden == 0)
    # Not the plain mean over all maskings: visible pixels (error 0) do not dilute it.
    some = times_hidden == 1
    assert not torch.allclose(result[some], errors.mean(dim=0)[some])


@pytest.mark.slow
def test_anomaly_map_is_seeded(mae):
    pixel_values = pixels(1)
    first = anomaly_map(mae, pixel_values, 4, seed=3)
    torch.testing.assert_close(anomaly_map(mae, pixel_values, 4, seed=3), first, equal_nan=True)
    assert not torch.allclose(anomaly_map(mae, pixel_values, 4, seed=4), first, equal_nan=True)
    with pytest.raises(ValueError, match="num_maskings must be at least 1"):
        anomaly_map(mae, pixel_values, 0)


def test_reconstruction_views_show_original_masked_reconstruction_and_error(mae, film):
    processor = CXRImageProcessor.for_image_size(SIZE)
    mean, std = processor.image_mean[0], processor.image_std[0]
    views = reconstruction_views(mae, processor, Image.open(film), mask_ratio=0.75, seed=1)
    assert set(views) == {"original", "masked", "reconstruction", "error"}
    assert all(view.shape == (SIZE, SIZE) for view in views.values())

    pixel_values = processor(str(film), return_tensors="pt")["pixel_values"]
    np.testing.assert_allclose(views["original"], np.clip(pixel_values[0, 0].numpy() * std + mean, 0, 1), atol=1e-6)

    def blocks(view: np.ndarray) -> np.ndarray:  # (patches, PATCH**2)
        return view.reshape(SIZE // PATCH, PATCH, SIZE // PATCH, PATCH).swapaxes(1, 2).reshape(-1, PATCH**2)

    # Hidden patches are flat at the mean gray; 12 of 16 at ratio 0.75.
    hidden = np.all(np.isclose(blocks(views["masked"]), mean, atol=1e-6), axis=1)
    assert hidden.sum() == NUM_PATCHES - int(NUM_PATCHES * 0.25)
    # The reconstruction keeps the visible patches and paints the hidden ones; the error is 0 only where visible.
    np.testing.assert_array_equal(blocks(views["reconstruction"])[~hidden], blocks(views["original"])[~hidden])
    assert not np.allclose(blocks(views["reconstruction"])[hidden], blocks(views["original"])[hidden])
    assert np.all(blocks(views["error"])[~hidden] == 0) and np.all(blocks(views["error"])[hidden].max(axis=1) > 0)

    with_anomaly = reconstruction_views(mae, processor, Image.open(film), mask_ratio=0.75, seed=1, anomaly_maskings=2)
    assert with_anomaly["anomaly"].shape == (SIZE, SIZE)
    np.testing.assert_array_equal(with_anomaly["error"], views["error"])


def test_reconstruction_panels_name_each_view_and_the_masking(mae, film):
    processor = CXRImageProcessor.for_image_size(SIZE)
    views = reconstruction_views(mae, processor, Image.open(film), mask_ratio=0.75, seed=1, anomaly_maskings=2)
    panels, title = reconstruction_panels(views, "my-mae", 0.75, 1, 2)
    assert title == "my-mae: MAE reconstruction (seed 1)"
    assert [panel.title for panel in panels] == ["original", "masked (75% of patches hidden)", "reconstruction",
                                                 "|reconstruction - original|", "anomaly map, 2 maskings"]  # fmt: skip
    assert panels[0].image is views["original"] and panels[3].heatmap is views["error"]
    assert all(panel.heat_label for panel in panels[3:])  # the maps get colour bars
    del views["anomaly"]
    assert len(reconstruction_panels(views, "my-mae", 0.75, 1)[0]) == 4
    image = panels_image(panels, title=title)
    assert image.mode == "RGB" and image.width >= 5 * PANEL_PIXELS and image.height >= PANEL_PIXELS


def test_only_an_mae_pretraining_directory_loads(tmp_path, mae_dir):
    model, processor = load_pretraining_model(mae_dir)
    assert isinstance(model, CXRViTMAEForPreTraining) and not model.training
    assert processor.crop_size["height"] == SIZE

    classifier = tmp_path / "classifier"
    ViTMAEForChestXray(tiny_config()).save_pretrained(classifier)
    densenet = tmp_path / "densenet"
    CXRDenseNetConfig.from_preset("densenet121").save_pretrained(densenet)
    for directory, holds in ((classifier, "ViTMAEForChestXray"), (densenet, "cxr_densenet")):
        with pytest.raises(ValueError, match=f"holds .*{holds}.*needs an MAE pre-training directory"):
            load_pretraining_model(directory)
    with pytest.raises(InputError, match="no such model directory"):
        load_pretraining_model(tmp_path / "nowhere")


@pytest.mark.slow
def test_reconstruct_cli_writes_the_strip(tmp_path, mae_dir, film):
    output = tmp_path / "strip.png"
    args = [str(mae_dir), str(film), "--output", str(output), "--mask-ratio", "0.5", "--seed", "3"]
    result = subprocess.run(
        [str(CONSOLE_SCRIPT), "reconstruct", *args, "--anomaly-maskings", "2", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"reconstruction at {SIZE}x{SIZE}" in result.stdout
    with Image.open(output) as written:  # five panels (the anomaly map included), each >= 384 px
        assert written.width >= 5 * 384 and written.height >= 384
    # The figure is `reconstruction_panels` of `reconstruction_views`, pixel for pixel the one the demo app shows.
    model, processor = load_pretraining_model(mae_dir)
    views = reconstruction_views(model, processor, str(film), mask_ratio=0.5, seed=3, anomaly_maskings=2)
    panels, title = reconstruction_panels(views, mae_dir.name, 0.5, 3, 2)
    with Image.open(output) as written:
        np.testing.assert_array_equal(np.asarray(written.convert("RGB")), np.asarray(panels_image(panels, title=title)))


def test_reconstruct_cli_bad_input_gives_one_line(tmp_path, capsys, mae_dir, film):
    output = str(tmp_path / "out.png")
    classifier = tmp_path / "classifier"
    ViTMAEForChestXray(tiny_config()).save_pretrained(classifier)
    line = one_error_line(capsys, ["reconstruct", str(classifier), str(film), "--output", output])
    assert "needs an MAE pre-training directory" in line
    line = one_error_line(capsys, ["reconstruct", str(mae_dir), str(tmp_path / "absent.png"), "--output", output])
    assert "absent.png" in line and "does not exist" in line
    line = one_error_line(capsys, ["reconstruct", str(mae_dir), str(film), "--output", output, "--mask-ratio", "1.5"])
    assert "mask_ratio must be in (0, 1), got 1.5" in line
    assert not Path(output).exists()
