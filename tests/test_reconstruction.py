"""MAE reconstructions, anomaly maps and the `reconstruct` strip, on a tiny random MAE (32 px, 16 patches of 8)."""

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
from cxr_vitmae.explain.reconstruction import (
    anomaly_map,
    load_pretraining_model,
    random_noise,
    reconstruct,
    reconstruction_panel,
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


def test_anomaly_map_is_seeded(mae):
    pixel_values = pixels(1)
    first = anomaly_map(mae, pixel_values, 4, seed=3)
    torch.testing.assert_close(anomaly_map(mae, pixel_values, 4, seed=3), first, equal_nan=True)
    assert not torch.allclose(anomaly_map(mae, pixel_values, 4, seed=4), first, equal_nan=True)
    with pytest.raises(ValueError, match="num_maskings must be at least 1"):
        anomaly_map(mae, pixel_values, 0)


def test_reconstruction_panel_shows_original_masked_reconstruction_and_error(mae, film):
    processor = CXRImageProcessor.for_image_size(SIZE)
    mean, std = processor.image_mean[0], processor.image_std[0]
    panel = np.asarray(reconstruction_panel(mae, processor, Image.open(film), mask_ratio=0.75, seed=1))
    assert panel.shape == (SIZE, 4 * SIZE, 3)
    original, masked, reconstruction, error = (panel[:, i * SIZE : (i + 1) * SIZE] for i in range(4))

    pixel_values = processor(str(film), return_tensors="pt")["pixel_values"]
    expected = np.round(np.clip(pixel_values[0, 0].numpy() * std + mean, 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(original[..., 0], expected)
    # Hidden patches are flat at the mean gray; 12 of 16 at ratio 0.75.
    blocks = masked[..., 0].reshape(SIZE // PATCH, PATCH, SIZE // PATCH, PATCH).swapaxes(1, 2).reshape(-1, PATCH**2)
    flat = np.all(blocks == round(mean * 255), axis=1)
    assert flat.sum() == NUM_PATCHES - int(NUM_PATCHES * 0.25)
    # The reconstruction keeps the visible patches; the error map is the colormap's zero there.
    recon_blocks = reconstruction[..., 0].reshape(SIZE // PATCH, PATCH, SIZE // PATCH, PATCH).swapaxes(1, 2)
    original_blocks = original[..., 0].reshape(SIZE // PATCH, PATCH, SIZE // PATCH, PATCH).swapaxes(1, 2)
    visible = ~flat.reshape(SIZE // PATCH, SIZE // PATCH)
    assert np.array_equal(recon_blocks[visible], original_blocks[visible])
    assert not np.array_equal(recon_blocks[~visible], original_blocks[~visible])
    error_blocks = error.reshape(SIZE // PATCH, PATCH, SIZE // PATCH, PATCH, 3).swapaxes(1, 2)
    assert len(np.unique(error_blocks[visible].reshape(-1, 3), axis=0)) == 1

    with_anomaly = reconstruction_panel(mae, processor, Image.open(film), mask_ratio=0.75, seed=1, anomaly_maskings=2)
    assert with_anomaly.size == (5 * SIZE, SIZE)
    assert np.array_equal(np.asarray(with_anomaly)[:, : 4 * SIZE], panel)


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
    # The figure draws `reconstruction_views`, the arrays the app's strip is made of.
    model, processor = load_pretraining_model(mae_dir)
    views = reconstruction_views(model, processor, str(film), mask_ratio=0.5, seed=3, anomaly_maskings=2)
    strip = np.asarray(reconstruction_panel(model, processor, str(film), mask_ratio=0.5, seed=3, anomaly_maskings=2))
    assert set(views) == {"original", "masked", "reconstruction", "error", "anomaly"}
    np.testing.assert_array_equal(strip[:, :SIZE, 0], np.round(views["original"] * 255).astype(np.uint8))


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
