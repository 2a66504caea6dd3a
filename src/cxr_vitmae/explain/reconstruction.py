"""MAE reconstructions: what the masked autoencoder sees, and what it paints back."""

import torch

from ..models import CXRViTMAEForPreTraining


@torch.no_grad()
def reconstruct(
    model: CXRViTMAEForPreTraining, pixel_values: torch.Tensor, noise: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """`original`, `masked` (hidden patches set to 0, the normalised mean), `reconstruction` (the model's pixels in the
    hidden patches, the original in the visible ones, as in MAE's figures) and `mask` (1 = hidden, per pixel), all
    (N, C, H, W) in the input's normalised units. With `norm_pix_loss` the predictions are per-patch normalised, so
    they are mapped back with each original patch's mean and standard deviation."""
    model.eval()
    output = model(pixel_values, noise=noise)
    target = model.patchify(pixel_values)
    prediction = output.logits
    if model.config.norm_pix_loss:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        prediction = prediction * (var + 1.0e-6) ** 0.5 + mean
    size = tuple(pixel_values.shape[-2:])
    mask = model.unpatchify(output.mask[..., None].expand_as(target).to(pixel_values.dtype), size)
    painted = model.unpatchify(prediction, size)
    return {
        "original": pixel_values,
        "masked": pixel_values * (1 - mask),
        "reconstruction": pixel_values * (1 - mask) + painted * mask,
        "mask": mask,
    }
