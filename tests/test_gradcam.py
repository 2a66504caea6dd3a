"""Grad-CAM: target layers, maps against a hand-written Grad-CAM, overlays, `explain_image` and `cxr-vitmae gradcam`."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_helpers import randomize_, small_densenet_config, tiny_vit_config
from PIL import Image

from cxr_vitmae import CXRImageProcessor, CXRViTMAEForPreTraining, DenseNetForChestXray, ViTMAEForChestXray
from cxr_vitmae.cli import main
from cxr_vitmae.explain.gradcam import compute_gradcam, explain_image, gradcam_target, overlay_heatmap


def tiny_vit(image_size: int = 32, **overrides) -> ViTMAEForChestXray:
    config = tiny_vit_config(image_size=image_size, patch_size=8, num_hidden_layers=2, **overrides)
    return randomize_(ViTMAEForChestXray(config), std=0.2).eval()


def tiny_densenet(image_size: int = 48) -> DenseNetForChestXray:
    config = small_densenet_config(image_size=image_size)
    return randomize_(DenseNetForChestXray(config)).eval()


def processed(model, seed: int = 0, count: int = 1) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (70, 60), dtype=np.uint8) for _ in range(count)]
    return CXRImageProcessor.for_image_size(model.config.image_size)(images, return_tensors="pt")["pixel_values"]


def reference_gradcam(model, layer, pixel_values, label_index, to_grid=None) -> np.ndarray:
    """Grad-CAM written out: ReLU(sum_k mean(d logit / d A_k) A_k), bilinear upsampling, min-max scaled."""
    captured = {}
    handle = layer.register_forward_hook(lambda module, inputs, output: captured.update(activation=output))
    try:
        logit = model(pixel_values=pixel_values).logits[:, label_index]
    finally:
        handle.remove()
    activation = captured["activation"]
    (gradient,) = torch.autograd.grad(logit.sum(), activation)
    if to_grid is not None:
        activation, gradient = to_grid(activation), to_grid(gradient)
    cam = F.relu((gradient.mean(dim=(2, 3), keepdim=True) * activation).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)
    low = cam.amin(dim=(2, 3), keepdim=True)
    cam = (cam - low) / (cam.amax(dim=(2, 3), keepdim=True) - low + 1e-7)
    return cam[:, 0].detach().numpy()


def test_densenet_target_is_the_last_dense_block():
    model = tiny_densenet()
    layer, reshape = gradcam_target(model)
    assert layer is model.densenet.features.denseblock2 and reshape is None


def test_vit_target_is_the_last_blocks_first_layernorm_with_a_patch_grid_reshape():
    model = tiny_vit()
    layer, reshape = gradcam_target(model)
    assert layer is model.vit.layers[-1].layernorm_before
    # CLS + 4x4 patches, each token filled with its own index: the CLS token is dropped, patches go row-major.
    tokens = torch.arange(17, dtype=torch.float32)[None, :, None].expand(2, 17, 5)
    grid = reshape(tokens)
    assert grid.shape == (2, 5, 4, 4)
    assert torch.equal(grid[0, 0], torch.arange(1, 17, dtype=torch.float32).reshape(4, 4))


def test_gradcam_target_refuses_a_model_that_is_not_a_classifier():
    config = tiny_vit_config(patch_size=8)
    with pytest.raises(ValueError, match="CXRViTMAEForPreTraining"):
        gradcam_target(CXRViTMAEForPreTraining(config))


@pytest.mark.parametrize("architecture", ["vit", "densenet", "timm"])
def test_maps_match_a_hand_written_gradcam_of_the_class_logit(architecture, tiny_model):
    if architecture == "timm":  # resnet10t's last stage is 4 x 4 at 128 px
        model = randomize_(tiny_model("timm", image_size=128)).eval()
    else:
        model = tiny_vit() if architecture == "vit" else tiny_densenet()
    pixel_values = processed(model, count=2)
    layer, reshape = gradcam_target(model)
    label_index = 3
    heatmaps = compute_gradcam(model, pixel_values, label_index)
    size = model.config.image_size
    assert heatmaps.shape == (2, size, size) and heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1
    expected = reference_gradcam(model, layer, pixel_values, label_index, reshape)
    np.testing.assert_allclose(heatmaps, expected, atol=2e-3)
    # Another class gives another map, so the target really is the class.
    assert not np.allclose(compute_gradcam(model, pixel_values, 7), heatmaps, atol=1e-2)
    assert all(parameter.grad is None for parameter in model.parameters())


def test_vit_map_has_gradient_even_with_a_cls_token_head():
    """Why the target is `layernorm_before` of the last block: with a CLS-token head the patch tokens after the last
    attention never reach the logit, so a later target (`layernorm_after`) would give a zero map."""
    for use_mean_pooling in (True, False):
        model = tiny_vit(use_mean_pooling=use_mean_pooling)
        pixel_values = processed(model)
        heatmap = compute_gradcam(model, pixel_values, 0)[0]
        assert heatmap.max() == pytest.approx(1.0, abs=1e-5) and heatmap.std() > 0.05

    _, reshape = gradcam_target(model)
    late = model.vit.layers[-1].layernorm_after
    assert np.count_nonzero(reference_gradcam(model, late, pixel_values, 0, reshape)) == 0


def test_maps_are_computed_with_gradients_even_under_no_grad():
    model = tiny_densenet()
    with torch.no_grad():
        heatmap = compute_gradcam(model, processed(model), 0)
    assert heatmap.max() > 0


def test_compute_gradcam_rejects_a_label_index_out_of_range():
    model = tiny_densenet()
    with pytest.raises(ValueError, match="label_index 14 is out of range: the model has 14 labels"):
        compute_gradcam(model, processed(model), 14)


def test_overlay_puts_hot_regions_in_red_over_the_gray_image():
    image = np.full((20, 30), 0.5, dtype=np.float32)
    heatmap = np.zeros((20, 30), dtype=np.float32)
    heatmap[:, 15:] = 1.0
    overlay = overlay_heatmap(image, heatmap)
    assert overlay.size == (30, 20) and overlay.mode == "RGB"
    pixels = np.asarray(overlay).astype(int)
    hot, cold = pixels[10, 25], pixels[10, 5]
    assert hot[0] > hot[2] and cold[2] > cold[0]
    rgb = overlay_heatmap(np.repeat(image[..., None], 3, axis=-1), heatmap)
    assert np.array_equal(np.asarray(rgb), np.asarray(overlay))


@pytest.mark.parametrize(
    ("image", "heatmap", "message"),
    [
        (np.zeros((20, 30)), np.zeros((30, 20)), r"heatmap shape \(30, 20\) does not match the image's \(20, 30\)"),
        (np.zeros((20, 30, 2)), np.zeros((20, 30)), r"image must be \(H, W\) or \(H, W, 3\)"),
        (np.full((4, 4), 255.0), np.zeros((4, 4)), r"image values must be finite and in \[0, 1\]"),
    ],
)
def test_overlay_rejects_bad_input(image, heatmap, message):
    with pytest.raises(ValueError, match=message):
        overlay_heatmap(image, heatmap)


def test_explain_image_defaults_to_the_most_probable_label():
    model = tiny_vit()
    processor = CXRImageProcessor.for_image_size(32)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 40), dtype=np.uint8))
    with torch.no_grad():
        probabilities = torch.sigmoid(model(**processor(image, return_tensors="pt")).logits[0])
    result = explain_image(model, processor, image)
    top = int(probabilities.argmax())
    assert result.label == model.config.id2label[top]
    assert result.probability == pytest.approx(probabilities[top].item(), abs=1e-6)
    assert result.heatmap.shape == (32, 32) and result.overlay.size == (32, 32)

    other = model.config.id2label[(top + 1) % 14]
    chosen = explain_image(model, processor, image, label=other)
    assert chosen.label == other and chosen.probability == pytest.approx(probabilities[(top + 1) % 14].item(), abs=1e-6)
    with pytest.raises(ValueError, match="unknown label 'Pneumonitis'; this model predicts Atelectasis, Cardio"):
        explain_image(model, processor, image, label="Pneumonitis")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    tiny_vit(image_size=32).save_pretrained(root / "vit")
    tiny_densenet(image_size=48).save_pretrained(root / "densenet")
    CXRViTMAEForPreTraining(tiny_vit_config(patch_size=8)).save_pretrained(root / "pretraining")
    return {"vit": root / "vit", "densenet": root / "densenet", "pretraining": root / "pretraining"}


@pytest.fixture(scope="module")
def radiograph(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "chest.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 65536, (90, 80), dtype=np.uint16)).save(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(("architecture", "size"), [("vit", 32), ("densenet", 48)])
def test_cli_writes_a_readable_figure(model_dirs, radiograph, tmp_path, capfd, architecture, size):
    output = tmp_path / "overlay.png"
    assert main(["gradcam", str(model_dirs[architecture]), str(radiograph), "--output", str(output)]) == 0
    # The map is computed at the model's input size; the figure shows the input beside it, each panel >= 384 px.
    assert f"Grad-CAM at {size}x{size}" in capfd.readouterr().out
    with Image.open(output) as figure:
        assert figure.width >= 2 * 384 and figure.height >= 384

    arguments = ["gradcam", str(model_dirs[architecture]), str(radiograph), "--output", str(output), "--label", "Mass"]
    assert main(arguments) == 0
    assert capfd.readouterr().out.startswith("Mass (p=")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing image", "does not exist"),
        ("unknown label", "unknown label 'Pneumonitis'"),
        ("not a classifier", "holds a CXRViTMAEForPreTraining model, not an image classifier"),
    ],
)
def test_cli_bad_input_gives_one_clear_line(model_dirs, radiograph, tmp_path, capfd, case, message):
    model_dir = model_dirs["pretraining" if case == "not a classifier" else "vit"]
    image = tmp_path / "absent.png" if case == "missing image" else radiograph
    arguments = ["gradcam", str(model_dir), str(image), "--output", str(tmp_path / "overlay.png")]
    if case == "unknown label":
        arguments += ["--label", "Pneumonitis"]
    assert main(arguments) == 1
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cxr-vitmae gradcam: error:") and message in lines[0], lines
    assert not (tmp_path / "overlay.png").exists()
