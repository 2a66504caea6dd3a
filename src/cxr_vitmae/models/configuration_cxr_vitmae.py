"""Configuration of the masked-autoencoder ViT for chest X-rays."""

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .chest_xray_labels import ChestXrayLabelsMixin

# Encoder sizes are the standard ViT ones (timm / DeiT); decoders are the paper's (Xiao et al., WACV 2023):
# ViT-S uses mae_vit_small_patch16_dec512d2b, ViT-B mae_vit_base_patch16_dec512d8b. ViT-Ti and ViT-L decoders
# are ours (the paper released neither): a 2-layer 128-wide decoder keeps vit-tiny cheap enough for CPU tests
# and the demo; ViT-L follows the ImageNet MAE (512 wide, depth 8).
VIT_PRESETS: dict[str, dict] = {
    "vit-tiny": {
        "hidden_size": 192,
        "num_hidden_layers": 12,
        "num_attention_heads": 3,
        "intermediate_size": 768,
        "decoder_hidden_size": 128,
        "decoder_num_hidden_layers": 2,
        "decoder_num_attention_heads": 4,
        "decoder_intermediate_size": 512,
    },
    "vit-small": {
        "hidden_size": 384,
        "num_hidden_layers": 12,
        "num_attention_heads": 6,
        "intermediate_size": 1536,
        "decoder_hidden_size": 512,
        "decoder_num_hidden_layers": 2,
        "decoder_num_attention_heads": 16,
        "decoder_intermediate_size": 2048,
    },
    "vit-base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "decoder_hidden_size": 512,
        "decoder_num_hidden_layers": 8,
        "decoder_num_attention_heads": 16,
        "decoder_intermediate_size": 2048,
    },
    "vit-large": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "decoder_hidden_size": 512,
        "decoder_num_hidden_layers": 8,
        "decoder_num_attention_heads": 16,
        "decoder_intermediate_size": 2048,
    },
}


@strict
class CXRViTMAEConfig(ChestXrayLabelsMixin, PreTrainedConfig):
    r"""
    Configuration of [`CXRViTMAEModel`], [`CXRViTMAEForPreTraining`] and [`ViTMAEForChestXray`].

    The defaults are the paper's ViT-B/16 (Xiao et al., *Delving into Masked Autoencoders for Multi-Label Thorax
    Disease Classification*, WACV 2023): patch 16 at 224 px, LayerNorm eps 1e-6, qkv bias, fixed 2-D sin-cos position
    embeddings, mask ratio 0.90, pixel (not normalised-pixel) targets, a 512-wide 16-head decoder of depth 8, and the
    14 NIH ChestX-ray14 findings as a multi-label problem. Use [`~CXRViTMAEConfig.from_preset`] for the other sizes.

    Args:
        hidden_size (`int`, defaults to 768): width of the encoder.
        num_hidden_layers (`int`, defaults to 12): encoder depth.
        num_attention_heads (`int`, defaults to 12): encoder attention heads.
        intermediate_size (`int`, defaults to 3072): hidden width of the encoder MLPs.
        hidden_act (`str`, defaults to `"gelu"`): MLP activation (exact erf GELU, as timm).
        hidden_dropout_prob (`float`, defaults to 0.0): dropout after attention and MLP outputs.
        attention_probs_dropout_prob (`float`, defaults to 0.0): dropout on attention probabilities.
        drop_path_rate (`float`, defaults to 0.0): stochastic-depth rate of the last encoder block; block `i` gets
            `drop_path_rate * i / (num_hidden_layers - 1)`. 0 is the MAE pre-training value; the paper fine-tunes
            ViT-S with 0.2 (set by the fine-tuning recipe). The decoder never drops paths.
        initializer_range (`float`, defaults to 0.02): std of the truncated-normal init of the CLS and mask tokens.
        classifier_init_std (`float`, defaults to 2e-5): std of the classification head's init (MAE fine-tuning).
        layer_norm_eps (`float`, defaults to 1e-6): LayerNorm epsilon everywhere.
        image_size (`int`, defaults to 224): input resolution.
        patch_size (`int`, defaults to 16): patch side in pixels.
        num_channels (`int`, defaults to 3): input channels (grayscale X-rays are repeated to 3).
        qkv_bias (`bool`, defaults to `True`): bias on the fused query/key/value projection.
        decoder_hidden_size (`int`, defaults to 512): decoder width.
        decoder_num_hidden_layers (`int`, defaults to 8): decoder depth (2 for the paper's ViT-S).
        decoder_num_attention_heads (`int`, defaults to 16): decoder attention heads.
        decoder_intermediate_size (`int`, defaults to 2048): hidden width of the decoder MLPs.
        mask_ratio (`float`, defaults to 0.9): fraction of patches hidden from the encoder during pre-training.
        norm_pix_loss (`bool`, defaults to `False`): regress per-patch normalised pixels instead of pixels.
        use_mean_pooling (`bool`, defaults to `True`): the classifier pools the mean of the patch tokens (the paper's
            `global_pool`); `False` takes the CLS token instead. Either way the pooled vector goes through `fc_norm`.
        problem_type (`str`, defaults to `"multi_label_classification"`): decides the classifier's loss.
    """

    model_type = "cxr_vitmae"

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    drop_path_rate: float | int = 0.0
    initializer_range: float = 0.02
    classifier_init_std: float = 2e-5
    layer_norm_eps: float = 1e-6
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    qkv_bias: bool = True
    decoder_hidden_size: int = 512
    decoder_num_hidden_layers: int = 8
    decoder_num_attention_heads: int = 16
    decoder_intermediate_size: int = 2048
    mask_ratio: float | int = 0.9
    norm_pix_loss: bool = False
    use_mean_pooling: bool = True
    problem_type: Literal["regression", "single_label_classification", "multi_label_classification"] | None = (
        "multi_label_classification"
    )

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "CXRViTMAEConfig":
        """A configuration of a named size (`vit-tiny`, `vit-small`, `vit-base`, `vit-large`), with `overrides`
        applied on top, e.g. `CXRViTMAEConfig.from_preset("vit-small", drop_path_rate=0.2, num_labels=5)`."""
        if name not in VIT_PRESETS:
            raise ValueError(f"Unknown ViT preset {name!r}; expected one of {sorted(VIT_PRESETS)}")
        return cls(**{**VIT_PRESETS[name], **overrides})

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def validate_architecture(self):
        super().validate_architecture()
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for prefix, width, heads in (
            ("", self.hidden_size, self.num_attention_heads),
            ("decoder_", self.decoder_hidden_size, self.decoder_num_attention_heads),
        ):
            if width % heads != 0:
                raise ValueError(
                    f"{prefix}hidden_size ({width}) must be divisible by {prefix}num_attention_heads ({heads})"
                )
            if width % 4 != 0:
                raise ValueError(
                    f"{prefix}hidden_size ({width}) must be divisible by 4 for 2-D sin-cos position embeddings"
                )
        if self.image_size % self.patch_size != 0:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in [0, 1), got {self.mask_ratio}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must lie in [0, 1), got {self.drop_path_rate}")


__all__ = ["CXRViTMAEConfig", "VIT_PRESETS"]
