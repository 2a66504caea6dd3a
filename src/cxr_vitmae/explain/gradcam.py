"""Grad-CAM (Selvaraju et al., ICCV 2017) for the chest X-ray classifiers, computed with pytorch-grad-cam.

Target layers (see §5 of the reference notes):

- DenseNet: the output of the last dense block (`densenet.features.denseblockN`), the last feature map before
  `norm5`, global pooling and the head; 7x7 at 224 px.
- ViT: the first LayerNorm of the last encoder block (`vit.layers[-1].layernorm_before`), whose tokens are reshaped
  to the patch grid after dropping the CLS token (14x14 for /16 at 224 px). This is the last LayerNorm whose patch
  tokens reach the logits whatever the pooling: with the paper's mean pooling every later layer would do too, but with
  a CLS-token head (`use_mean_pooling=False`) the patch tokens after the last attention never reach the logit, so
  their gradient, and the map, would be zero.
- timm (`timm:ARCH`): the module of the network's last stage as timm's own `feature_info` names it (`layer4` of a
  ResNet, `stages.3` of a ConvNeXt, the last block group of an EfficientNet): its last feature map.

The target of class c is its raw logit (pytorch-grad-cam's `ClassifierOutputTarget`), never a softmax: the labels of a
multi-label model are independent sigmoids, and a softmax would explain "c rather than the other findings".
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from PIL import Image

from ..errors import InputError, MissingExtraError
from ..model_families import family_of, resolve
from ..predict import scores_from_logits

try:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform
except ImportError as error:  # an optional dependency: say which extra brings it
    raise MissingExtraError(f'Grad-CAM needs pytorch-grad-cam ({error}): pip install "cxr-vitmae[explain]"') from error

__all__ = [
    "GradCamResult",
    "compute_gradcam",
    "explain_image",
    "gradcam_panels",
    "gradcam_target",
    "overlay_heatmap",
]


@dataclass
class GradCamResult:
    """One explained image.

    Attributes:
        label: the explained class.
        probability: the model's probability of that class (sigmoid for multi-label models, softmax otherwise).
        heatmap: (H, W) float32 Grad-CAM map in [0, 1] at the model's input resolution.
        overlay: the heatmap over the image the model saw (resized and center-cropped), an RGB image of the same size.
        image: (H, W, 3) float32 in [0, 1]: the image the model saw, normalisation undone.
    """

    label: str
    probability: float
    heatmap: np.ndarray
    overlay: Image.Image
    image: np.ndarray


class _Logits(torch.nn.Module):
    """The classifier with its `ImageClassifierOutput` reduced to the logits tensor that pytorch-grad-cam expects."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def gradcam_target(model: torch.nn.Module) -> tuple[torch.nn.Module, Callable | None]:
    """The layer whose activations and gradients Grad-CAM weighs, and the transform that turns its output into a
    (batch, channels, height, width) map (None when it already is one): the model family's choice
    (`ModelFamily.gradcam_target`; the module docstring says why)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    try:
        family = family_of(model_type)
    except InputError:
        family = None
    if family is None or not isinstance(model, family.classifier_class()):
        raise ValueError(
            f"Grad-CAM has no target layer for {type(model).__name__} (model_type {model_type!r}); expected the "
            "image classifier of a cxr-vitmae model family"
        )
    return resolve(family.gradcam_target)(model)


def densenet_gradcam_target(model: torch.nn.Module) -> tuple[torch.nn.Module, None]:
    """DenseNet: the last dense block (its output is already a feature map)."""
    blocks = [module for name, module in model.densenet.features.named_children() if name.startswith("denseblock")]
    return blocks[-1], None


def vit_gradcam_target(model: torch.nn.Module) -> tuple[torch.nn.Module, Callable]:
    """ViT: the last block's first LayerNorm, its patch tokens laid back on the patch grid."""
    grid = model.config.image_size // model.config.patch_size
    # The classifier runs at config.image_size (other sizes need interpolate_pos_encoding), so the grid is fixed.
    return model.vit.layers[-1].layernorm_before, partial(vit_reshape_transform, height=grid, width=grid)


def timm_gradcam_target(model: torch.nn.Module) -> tuple[torch.nn.Module, Callable]:
    """timm: the last stage in the network's `feature_info`; channels-last maps (`output_fmt` NHWC) are permuted."""
    network = model.timm_model
    stages = getattr(network, "feature_info", None)
    if not stages or hasattr(network, "patch_embed"):
        raise InputError(
            f"Grad-CAM on timm's {model.config.architecture} needs a convolutional network whose feature_info names "
            "its stages (a timm ViT, Swin or the like has no feature map there)"
        )
    layer = network.get_submodule(stages[-1]["module"])
    channels_last = getattr(network, "output_fmt", "NCHW") == "NHWC"
    return layer, partial(_timm_feature_map, model.config.architecture, channels_last)


def _timm_feature_map(architecture: str, channels_last: bool, activations: torch.Tensor) -> torch.Tensor:
    """The last stage's output as the (N, C, H, W) map Grad-CAM weighs. Some networks pass the check above and still
    end in tokens (LeViT's (N, tokens, C)): one clear error, from the forward pass's hook, instead of pytorch-grad-cam
    failing on the shape."""
    if activations.ndim != 4:
        raise InputError(
            f"Grad-CAM on timm's {architecture}: its last stage gives a {activations.ndim}-D output "
            f"{tuple(activations.shape)}, not a feature map (N, C, H, W)"
        )
    return activations.permute(0, 3, 1, 2) if channels_last else activations


def compute_gradcam(model: torch.nn.Module, pixel_values: torch.Tensor, label_index: int) -> np.ndarray:
    """Grad-CAM maps of class `label_index` (its logit) for a batch of processed images.

    Args:
        model: the classifier of a cxr-vitmae model family (ViT, DenseNet, timm); it is put in eval mode, and its
            parameter gradients are cleared afterwards.
        pixel_values: (N, 3, H, W) as the model's image processor makes them.
        label_index: the class to explain.

    Returns:
        (N, H, W) float32 maps in [0, 1], each min-max scaled and upsampled (bilinear) to the input resolution; a map
        whose class gets no positive evidence anywhere is all zeros.
    """
    num_labels = model.config.num_labels
    if not 0 <= int(label_index) < num_labels:
        raise ValueError(f"label_index {label_index} is out of range: the model has {num_labels} labels")
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be (N, C, H, W), got shape {tuple(pixel_values.shape)}")
    layer, reshape_transform = gradcam_target(model)
    cam = GradCAM(model=_Logits(model), target_layers=[layer], reshape_transform=reshape_transform)
    # Not `with GradCAM(...)`: its __exit__ prints and swallows IndexErrors, which would hide real failures.
    try:
        with torch.enable_grad():  # callers often run under no_grad; Grad-CAM needs the backward pass
            heatmaps = cam(
                input_tensor=pixel_values, targets=[ClassifierOutputTarget(int(label_index))] * len(pixel_values)
            )
    finally:
        cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)
    return heatmaps.astype(np.float32, copy=False)


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray) -> Image.Image:
    """`heatmap` (H, W, values in [0, 1]) drawn in the jet colormap over `image` ((H, W) gray or (H, W, 3) RGB in
    [0, 1]), half and half, as an RGB PIL image of the same size."""
    image = np.asarray(image, dtype=np.float32)
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be (H, W) or (H, W, 3), got shape {image.shape}")
    if heatmap.shape != image.shape[:2]:
        raise ValueError(f"heatmap shape {heatmap.shape} does not match the image's {image.shape[:2]}")
    for name, values in (("image", image), ("heatmap", heatmap)):
        if not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1):
            raise ValueError(f"{name} values must be finite and in [0, 1]")
    return Image.fromarray(show_cam_on_image(image, heatmap, use_rgb=True))


def _model_view(pixel_values: torch.Tensor, processor) -> np.ndarray:
    """The processed (1, 3, H, W) image back in [0, 1] as (H, W, 3): what the model saw, for the overlay."""
    image = pixel_values[0].detach().float().cpu().numpy().transpose(1, 2, 0)
    if processor.do_normalize:
        image = image * np.asarray(processor.image_std, dtype=np.float32) + np.asarray(processor.image_mean, np.float32)
    return np.clip(image, 0.0, 1.0)


def explain_image(model, processor, image, label: str | None = None) -> GradCamResult:
    """Grad-CAM of one image for `label` (default: the model's most probable label).

    Args:
        model: a loaded classifier (`cxr_vitmae.predict.load_classifier`).
        processor: its image processor, which decides the resize and crop the map and overlay are drawn at.
        image: a `PIL.Image.Image` (or anything the processor reads: a numpy array, a file path).
        label: a name from `model.config.id2label`.

    Raises:
        ValueError: `label` is not one of the model's labels.
    """
    if label is not None and label not in model.config.label2id:
        raise InputError(f"unknown label {label!r}; this model predicts {', '.join(model.config.id2label.values())}")
    device = next(model.parameters()).device
    pixel_values = processor(image, return_tensors="pt")["pixel_values"].to(device)
    model.eval()
    with torch.no_grad():
        logits = model(pixel_values=pixel_values).logits.float()
    probabilities = scores_from_logits(logits, model.config.problem_type)[0]
    index = int(probabilities.argmax()) if label is None else int(model.config.label2id[label])
    heatmap = compute_gradcam(model, pixel_values, index)[0]
    view = _model_view(pixel_values, processor)
    return GradCamResult(
        label=model.config.id2label[index],
        probability=float(probabilities[index]),
        heatmap=heatmap,
        overlay=overlay_heatmap(view, heatmap),
        image=view,
    )


def gradcam_panels(result: GradCamResult, model_name: str) -> tuple[list, str]:
    """The Grad-CAM figure of `cxr-vitmae gradcam` and the demo app, as `evaluation.figures.Panel`s and a title for
    `plot_panels` / `panels_image`: the input as the model sees it, beside the map over it (jet, 0-1, colour bar),
    under "MODEL_NAME: LABEL, p = P"."""
    from ..evaluation.figures import Panel

    gray = result.image[..., 0]
    panels = [
        Panel("input, as the model sees it", gray),
        Panel(f"Grad-CAM: {result.label}", gray, result.heatmap, "jet", "Grad-CAM (0-1)", (0.0, 1.0)),
    ]
    return panels, f"{model_name}: {result.label}, p = {result.probability:.3f}"
