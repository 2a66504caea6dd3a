"""MAE reconstructions: what the masked autoencoder sees, what it paints back, and where it fails to (anomaly maps).

The CLI's `cxr-vitmae reconstruct` and the demo app draw [`reconstruction_views`] as [`reconstruction_panels`] (with
`evaluation.figures.plot_panels` and `panels_image`); the pre-training recipe's per-epoch figures use [`reconstruct`]
with `evaluation.figures.plot_reconstructions`.
"""

from os import PathLike

import numpy as np
import torch
from transformers import AutoConfig, AutoImageProcessor

from ..errors import InputError
from ..model_directory import model_directory
from ..models import CXRViTMAEConfig, CXRViTMAEForPreTraining

PRETRAINING_ARCHITECTURE = "CXRViTMAEForPreTraining"


def load_pretraining_model(model_dir: str | PathLike, device: str | torch.device = "cpu"):
    """The MAE pre-training model (encoder and decoder) and its image processor from `model_dir`, in eval mode.

    `model_dir` may also be a Hub repository id (see `model_directory`).

    Raises:
        InputError: `model_dir` is no model directory or Hub model, or holds a model without the MAE decoder (a
            fine-tuned classifier, a DenseNet): reconstruction needs an MAE pre-training directory.
    """
    model_dir = model_directory(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    # Loading a classifier into the pre-training class would "work" with a randomly initialised decoder, so the
    # saved architecture decides, before any weight is read.
    architectures = config.architectures or []
    if not isinstance(config, CXRViTMAEConfig) or PRETRAINING_ARCHITECTURE not in architectures:
        found = ", ".join(architectures) or f"a {config.model_type} model"
        raise InputError(
            f"'{model_dir}' holds {found}, which has no MAE decoder; reconstruction needs an MAE pre-training "
            f"directory ({PRETRAINING_ARCHITECTURE}, e.g. the output of recipes/pretrain.py)"
        )
    model = CXRViTMAEForPreTraining.from_pretrained(model_dir).to(device).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    return model, processor


def random_noise(batch_size: int, num_patches: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """MAE masking noise, `(batch_size, num_patches)` uniform in [0, 1) on the CPU: the patches with the lowest
    values stay visible. Drawn on the CPU so that a seeded `generator` gives the same masks on every device."""
    return torch.rand(batch_size, num_patches, generator=generator)


def _num_patches(model: CXRViTMAEForPreTraining, pixel_values: torch.Tensor) -> int:
    patch = model.config.patch_size
    return (pixel_values.shape[-2] // patch) * (pixel_values.shape[-1] // patch)


def _check_mask_ratio(mask_ratio: float, num_patches: int) -> None:
    if not 0.0 < mask_ratio < 1.0:
        raise InputError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
    if int(num_patches * (1 - mask_ratio)) < 1:
        raise InputError(f"mask_ratio {mask_ratio} hides all {num_patches} patches; the encoder must see at least one")


@torch.no_grad()
def reconstruct(
    model: CXRViTMAEForPreTraining,
    pixel_values: torch.Tensor,
    noise: torch.Tensor | None = None,
    mask_ratio: float | None = None,
) -> dict[str, torch.Tensor]:
    """`original`, `masked` (hidden patches set to 0, the normalised mean), `reconstruction` (the model's pixels in the
    hidden patches, the original in the visible ones, as in MAE's figures) and `mask` (1 = hidden, per pixel), all
    (N, C, H, W) in the input's normalised units. With `norm_pix_loss` the predictions are per-patch normalised, so
    they are mapped back with each original patch's mean and standard deviation.

    Args:
        model: the MAE.
        pixel_values: (N, C, H, W) normalised images.
        noise: (N, num_patches) masking noise (see [`random_noise`]); default: a fresh random masking.
        mask_ratio: fraction of patches to hide, in (0, 1) with at least one patch left visible; default
            `model.config.mask_ratio`. The config is left untouched.
    """
    model.eval()
    num_patches = _num_patches(model, pixel_values)
    mask_ratio = model.config.mask_ratio if mask_ratio is None else float(mask_ratio)
    _check_mask_ratio(mask_ratio, num_patches)
    # Encoder and decoder are called one by one because the pre-training forward always hides
    # `config.mask_ratio`: a per-call ratio then never has to be written into a config other callers share.
    encoded = model.vit(pixel_values, noise=noise, mask_ratio=mask_ratio)
    grid = (pixel_values.shape[-2] // model.config.patch_size, pixel_values.shape[-1] // model.config.patch_size)
    prediction = model.decoder(encoded.last_hidden_state, encoded.ids_restore, grid)
    target = model.patchify(pixel_values)
    if model.config.norm_pix_loss:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        prediction = prediction * (var + 1.0e-6) ** 0.5 + mean
    size = tuple(pixel_values.shape[-2:])
    mask = model.unpatchify(encoded.mask[..., None].expand_as(target).to(pixel_values.dtype), size)
    painted = model.unpatchify(prediction, size)
    return {
        "original": pixel_values,
        "masked": pixel_values * (1 - mask),
        "reconstruction": pixel_values * (1 - mask) + painted * mask,
        "mask": mask,
    }


@torch.no_grad()
def anomaly_map(
    model: CXRViTMAEForPreTraining,
    pixel_values: torch.Tensor,
    num_maskings: int = 8,
    seed: int = 0,
    *,
    mask_ratio: float | None = None,
) -> torch.Tensor:
    """Where the MAE cannot paint the image back: the reconstruction error of each pixel, averaged over the maskings
    in which that pixel was hidden, out of `num_maskings` random maskings.

    The error is the channel mean of |reconstruction − original| in the input's normalised units. A pixel visible in
    every masking has no estimate and is NaN (with K maskings at ratio r, a patch is never hidden with probability
    (1 − r)^K). The k-th masking is `random_noise(N, num_patches, generator)`'s k-th draw from a generator seeded with
    `seed`, so the same seed masks every same-sized batch alike.

    Args:
        model: the MAE.
        pixel_values: (N, C, H, W) normalised images.
        num_maskings: K, the number of random maskings.
        seed: seed of the maskings.
        mask_ratio: fraction hidden per masking; default `model.config.mask_ratio`.

    Returns:
        (N, H, W) float tensor on the input's device.
    """
    if num_maskings < 1:
        raise InputError(f"num_maskings must be at least 1, got {num_maskings}")
    generator = torch.Generator().manual_seed(seed)
    batch_size, _, height, width = pixel_values.shape
    num_patches = _num_patches(model, pixel_values)
    error_sum = pixel_values.new_zeros(batch_size, height, width)
    times_hidden = pixel_values.new_zeros(batch_size, height, width)
    for _ in range(num_maskings):
        noise = random_noise(batch_size, num_patches, generator).to(pixel_values.device)
        views = reconstruct(model, pixel_values, noise, mask_ratio)
        hidden = views["mask"][:, 0]
        error_sum += (views["reconstruction"] - views["original"]).abs().mean(dim=1) * hidden
        times_hidden += hidden
    return error_sum / times_hidden  # 0 / 0 = NaN where a pixel was never hidden


def reconstruction_views(
    model: CXRViTMAEForPreTraining,
    processor,
    image,
    mask_ratio: float = 0.9,
    seed: int = 0,
    *,
    anomaly_maskings: int = 0,
) -> dict[str, np.ndarray]:
    """One image's views at the model's resolution, as (H, W) float arrays: `original`, `masked` (hidden patches
    at the mean gray) and `reconstruction` as display intensities in [0, 1], `error` (|reconstruction - original|,
    channel mean, in normalised units) and, with `anomaly_maskings` K > 0, `anomaly` (`anomaly_map` over K
    maskings; NaN where no masking hid the pixel).

    Args:
        model: the MAE.
        processor: its image processor (see [`load_pretraining_model`]).
        image: one `PIL.Image`, numpy array or file path: anything the processor reads.
        mask_ratio: fraction of patches hidden.
        seed: seed of the masking (and of the anomaly maskings).
        anomaly_maskings: K for the anomaly map; 0 leaves it out.
    """
    if anomaly_maskings < 0:
        raise InputError(f"anomaly_maskings must be 0 (no anomaly map) or more, got {anomaly_maskings}")
    device = next(model.parameters()).device
    pixel_values = processor(image, return_tensors="pt")["pixel_values"].to(device)
    noise = random_noise(1, _num_patches(model, pixel_values), torch.Generator().manual_seed(seed))
    views = reconstruct(model, pixel_values, noise.to(device), mask_ratio)
    mean, std = float(processor.image_mean[0]), float(processor.image_std[0])

    def gray(normalised: torch.Tensor) -> np.ndarray:
        return np.clip(normalised[0, 0].float().cpu().numpy() * std + mean, 0.0, 1.0)

    result = {name: gray(views[name]) for name in ("original", "masked", "reconstruction")}
    # As `anomaly_map` measures it.
    result["error"] = (views["reconstruction"] - views["original"]).abs().mean(dim=1)[0].float().cpu().numpy()
    if anomaly_maskings:
        anomalies = anomaly_map(model, pixel_values, anomaly_maskings, seed, mask_ratio=mask_ratio)
        result["anomaly"] = anomalies[0].float().cpu().numpy()
    return result


def reconstruction_panels(
    views: dict[str, np.ndarray], model_name: str, mask_ratio: float, seed: int, anomaly_maskings: int = 0
) -> tuple[list, str]:
    """The reconstruction figure of `cxr-vitmae reconstruct` and the demo app, as `evaluation.figures.Panel`s and a
    title for `plot_panels` / `panels_image`: original, masked, reconstruction, the |error| map and, when `views`
    (from [`reconstruction_views`] with these arguments) has one, the anomaly map, each map with its colour bar."""
    from ..evaluation.figures import Panel

    panels = [
        Panel("original", views["original"]),
        Panel(f"masked ({mask_ratio:.0%} of patches hidden)", views["masked"]),
        Panel("reconstruction", views["reconstruction"]),
        Panel("|reconstruction - original|", heatmap=views["error"], heat_label="|error| (normalised units)"),
    ]
    if "anomaly" in views:
        panels.append(Panel(f"anomaly map, {anomaly_maskings} maskings", heatmap=views["anomaly"],
                            heat_label="mean |error| where hidden"))  # fmt: skip
    return panels, f"{model_name}: MAE reconstruction (seed {seed})"
