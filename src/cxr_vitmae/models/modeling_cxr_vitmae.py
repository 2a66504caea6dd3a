"""Masked-autoencoder ViT for chest X-rays: encoder, MAE pre-training model, and the multi-label classifier.

Layout and numerics follow facebookresearch/mae and the paper's code (timm ViT blocks: pre-norm, fused qkv with bias,
exact GELU, LayerNorm eps 1e-6; fixed 2-D sin-cos position tables; mean-pooled patch tokens -> `fc_norm` -> head).
Parameter names follow transformers' `ViTMAEForPreTraining` so a stock checkpoint loads with one documented rule:

    stock `vit.layers.N.attention.{q,k,v}_proj.*`  ->  `vit.layers.N.attention.qkv.*` (concatenated in q, k, v order)

Every other stock key (embeddings, `layernorm_before/after`, `attention.o_proj`, `mlp.fc1/fc2`, `vit.layernorm`, the
whole `decoder.*`) has the same name and shape here.
"""

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AttentionInterface, GradientCheckpointingLayer, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, ImageClassifierOutput
from transformers.utils import ModelOutput

from .classification_loss import chest_xray_classification_loss
from .configuration_cxr_vitmae import CXRViTMAEConfig
from .model_outputs import as_requested
from .saving import SavesImageProcessorMixin
from .vit_building_blocks import (
    ACTIVATIONS,
    DropPath,
    attention_needs_fp32,
    eager_attention,
    gather_tokens,
    random_masking,
    resize_position_table,
    sincos_position_table,
)

# A saved model directory carries this file forever (remote code), so it imports only torch and the documented API of
# transformers (`transformers.X`, `transformers.modeling_outputs`, `transformers.utils.ModelOutput`), never a module
# of another model or a private helper: those move between releases. tests/test_remote_code.py checks it.

# The attention kernels transformers dispatches to by `config._attn_implementation` ("sdpa", "flash_attention_2", ...).
ATTENTION_FUNCTIONS = AttentionInterface()


@dataclass
class CXRViTMAEModelOutput(BaseModelOutput):
    """Encoder output. `mask` (batch, num_patches) is 1 for patches hidden from the encoder; `ids_restore` undoes
    the shuffle that moved the kept patches to the front. Both are `None` when nothing was masked."""

    mask: torch.Tensor | None = None
    ids_restore: torch.LongTensor | None = None


@dataclass
class CXRViTMAEForPreTrainingOutput(ModelOutput):
    """MAE output: `loss` (MSE on masked patches), `logits` (batch, num_patches, patch_size**2 * num_channels)
    predicted pixels in patchify order (h, w, p, q, c), `mask` (1 = masked) and `ids_restore`."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    ids_restore: torch.LongTensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class CXRViTMAEPatchEmbeddings(nn.Module):
    """Non-overlapping patches embedded by a strided convolution (`projection`), as transformers' ViTMAE names it."""

    def __init__(self, config: CXRViTMAEConfig):
        super().__init__()
        self.num_patches = config.num_patches
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )

    def check_channels(self, pixel_values: torch.Tensor) -> None:
        if pixel_values.shape[1] != self.projection.in_channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels; the model expects {self.projection.in_channels}"
            )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self.check_channels(pixel_values)
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


class CXRViTMAEEmbeddings(nn.Module):
    """Patch embedding (a strided convolution), CLS token and position table, with optional MAE random masking."""

    def __init__(self, config: CXRViTMAEConfig):
        super().__init__()
        self.config = config
        self.patch_size = config.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.patch_embeddings = CXRViTMAEPatchEmbeddings(config)
        # Fixed during MAE pre-training (as in MAE); the classifier makes it trainable, as the paper's fine-tuning does.
        self.position_embeddings = nn.Parameter(
            torch.zeros(1, self.patch_embeddings.num_patches + 1, config.hidden_size), requires_grad=False
        )

    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: torch.Tensor | None = None,
        mask_ratio: float = 0.0,
        interpolate_pos_encoding: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.LongTensor | None]:
        height, width = pixel_values.shape[-2:]
        if not interpolate_pos_encoding and (height, width) != (self.config.image_size, self.config.image_size):
            raise ValueError(
                f"Input image size ({height}*{width}) doesn't match model ({self.config.image_size}*"
                f"{self.config.image_size}); pass interpolate_pos_encoding=True to run at another resolution."
            )
        position_table = resize_position_table(
            self.position_embeddings, height // self.patch_size, width // self.patch_size
        )
        mask = ids_restore = None
        if mask_ratio > 0 or noise is not None:
            ids_keep, mask, ids_restore = random_masking(
                pixel_values.shape[0], position_table.shape[1] - 1, mask_ratio, noise, pixel_values.device
            )
            patches = self.embed_kept_patches(pixel_values, ids_keep)
            patches = patches + gather_tokens(position_table[:, 1:].expand(len(ids_keep), -1, -1), ids_keep)
        else:
            patches = self.patch_embeddings(pixel_values) + position_table[:, 1:]

        cls_tokens = (self.cls_token + position_table[:, :1]).expand(patches.shape[0], -1, -1)
        return torch.cat([cls_tokens, patches], dim=1), mask, ids_restore

    def embed_kept_patches(self, pixel_values: torch.Tensor, ids_keep: torch.LongTensor) -> torch.Tensor:
        """The patch embedding of the kept patches only, in `ids_keep` order: the convolution's weights applied as a
        matrix product to the gathered pixel patches. Equal to embedding every patch and gathering the kept ones,
        without embedding (forward and backward) the 90 % that MAE masks, which stock transformers does."""
        self.patch_embeddings.check_channels(pixel_values)
        projection = self.patch_embeddings.projection
        batch_size, channels, height, width = pixel_values.shape
        size = self.patch_size
        # (B, C, h, p, w, p) -> (B, h·w, C·p·p): the flattening order of the convolution's weight.
        patches = pixel_values.reshape(batch_size, channels, height // size, size, width // size, size)
        patches = patches.permute(0, 2, 4, 1, 3, 5).reshape(batch_size, -1, channels * size * size)
        weight = projection.weight.reshape(projection.out_channels, -1)
        return nn.functional.linear(gather_tokens(patches, ids_keep), weight, projection.bias)


class CXRViTMAEAttention(nn.Module):
    """Multi-head self-attention with a fused query/key/value projection (timm/MAE layout), dispatched through
    transformers' attention interface so `attn_implementation` ("sdpa", "eager", "flash_attention_2", …) applies.

    On a CPU without AMX, bf16 SDPA runs in fp32 (`attention_needs_fp32`): the MAE step under bf16 autocast was
    1.12 × as fast as with bf16 attention, which stock transformers uses."""

    def __init__(self, config: CXRViTMAEConfig, hidden_size: int, num_heads: int):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(hidden_size, hidden_size)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`output_attentions=True` computes this call's attention written out (`eager_attention`), the only way to
        get the weights: fused kernels never form them."""
        batch_size, seq_len, hidden_size = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch_size, seq_len, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention_interface = (
            eager_attention if implementation in (None, "eager") else ATTENTION_FUNCTIONS[implementation]
        )
        input_dtype = query.dtype
        in_fp32 = attention_needs_fp32(query, implementation)
        if in_fp32:
            query, key, value = query.float(), key.float(), value.float()
        # Autocast would cast the fp32 inputs straight back to bf16 inside SDPA.
        with torch.autocast("cpu", enabled=False) if in_fp32 else nullcontext():
            attn_output, attn_weights = attention_interface(
                self,
                query,
                key,
                value,
                None,
                dropout=self.config.attention_probs_dropout_prob if self.training else 0.0,
                scaling=self.scaling,
                **kwargs,
            )
        attn_output = attn_output.to(input_dtype)
        return self.o_proj(attn_output.reshape(batch_size, seq_len, hidden_size)), attn_weights


# The activations `hidden_act` names, by transformers' names: "gelu" is the exact (erf) GELU of timm and MAE.
class CXRViTMAEMLP(nn.Module):
    def __init__(self, config: CXRViTMAEConfig, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        if config.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act must be one of {sorted(ACTIVATIONS)}, got {config.hidden_act!r}")
        self.activation_fn = ACTIVATIONS[config.hidden_act]()
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class CXRViTMAELayer(GradientCheckpointingLayer):
    """A pre-norm transformer block with stochastic depth on both residual branches (timm's `Block`)."""

    def __init__(
        self, config: CXRViTMAEConfig, hidden_size: int, num_heads: int, intermediate_size: int, drop_path: float
    ):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.attention = CXRViTMAEAttention(config, hidden_size, num_heads)
        self.layernorm_after = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.mlp = CXRViTMAEMLP(config, hidden_size, intermediate_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The block's output and, with `output_attentions`, its attention weights (else None)."""
        attention_output, attention_weights = self.attention(
            self.layernorm_before(hidden_states), output_attentions=output_attentions, **kwargs
        )
        hidden_states = hidden_states + self.drop_path(self.dropout(attention_output))
        mlp_output = self.mlp(self.layernorm_after(hidden_states))
        return hidden_states + self.drop_path(self.dropout(mlp_output)), attention_weights


class CXRViTMAEDecoder(nn.Module):
    """MAE's lightweight decoder: re-inserts mask tokens, runs a few blocks and predicts every patch's pixels."""

    def __init__(self, config: CXRViTMAEConfig):
        super().__init__()
        self.config = config
        self.decoder_embed = nn.Linear(config.hidden_size, config.decoder_hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.decoder_hidden_size))
        self.decoder_pos_embed = nn.Parameter(
            torch.zeros(1, config.num_patches + 1, config.decoder_hidden_size), requires_grad=False
        )
        self.decoder_layers = nn.ModuleList(
            CXRViTMAELayer(
                config,
                config.decoder_hidden_size,
                config.decoder_num_attention_heads,
                config.decoder_intermediate_size,
                drop_path=0.0,
            )
            for _ in range(config.decoder_num_hidden_layers)
        )
        self.decoder_norm = nn.LayerNorm(config.decoder_hidden_size, eps=config.layer_norm_eps)
        self.decoder_pred = nn.Linear(config.decoder_hidden_size, config.patch_size**2 * config.num_channels)

    def forward(self, latent: torch.Tensor, ids_restore: torch.LongTensor, grid: tuple[int, int]) -> torch.Tensor:
        hidden_states = self.decoder_embed(latent)
        batch_size, num_visible, dim = hidden_states.shape
        num_patches = ids_restore.shape[1]
        mask_tokens = self.mask_token.expand(batch_size, num_patches + 1 - num_visible, -1)
        shuffled = torch.cat([hidden_states[:, 1:], mask_tokens], dim=1)
        unshuffled = torch.gather(shuffled, 1, ids_restore[:, :, None].expand(-1, -1, dim))
        hidden_states = torch.cat([hidden_states[:, :1], unshuffled], dim=1)
        hidden_states = hidden_states + resize_position_table(self.decoder_pos_embed, *grid)
        for layer in self.decoder_layers:
            hidden_states, _ = layer(hidden_states)
        return self.decoder_pred(self.decoder_norm(hidden_states))[:, 1:]


class CXRViTMAEPreTrainedModel(SavesImageProcessorMixin, PreTrainedModel):
    """Weight initialisation and loading glue shared by the cxr_vitmae models."""

    config: CXRViTMAEConfig
    config_class = CXRViTMAEConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["CXRViTMAEEmbeddings", "CXRViTMAELayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module):
        # MAE's initialisation (models_mae.py::initialize_weights / _init_weights).
        if isinstance(module, nn.Linear):
            if module is getattr(self, "classifier", None):
                init.trunc_normal_(module.weight, std=self.config.classifier_init_std)
            else:
                init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, CXRViTMAEEmbeddings):
            grid_size = module.config.image_size // module.config.patch_size
            init.copy_(module.position_embeddings, sincos_position_table(grid_size, module.config.hidden_size))
            # MAE initialises the patch projection like a Linear on the flattened kernel.
            weight = module.patch_embeddings.projection.weight
            init.xavier_uniform_(weight.view(weight.shape[0], -1))
            init.zeros_(module.patch_embeddings.projection.bias)
            init.normal_(module.cls_token, std=module.config.initializer_range)
        elif isinstance(module, CXRViTMAEDecoder):
            grid_size = module.config.image_size // module.config.patch_size
            init.copy_(module.decoder_pos_embed, sincos_position_table(grid_size, module.config.decoder_hidden_size))
            init.normal_(module.mask_token, std=module.config.initializer_range)


class CXRViTMAEModel(CXRViTMAEPreTrainedModel):
    """The ViT encoder. By default it sees every patch; MAE masking happens only when `mask_ratio` or `noise` is given.

    `add_final_layernorm=False` leaves out the encoder's last LayerNorm: the classifier replaces it by `fc_norm`
    after pooling, as the paper's fine-tuning does (its `norm` is deleted and `fc_norm` added).
    """

    def __init__(self, config: CXRViTMAEConfig, add_final_layernorm: bool = True):
        super().__init__(config)
        self.embeddings = CXRViTMAEEmbeddings(config)
        drop_path_rates = torch.linspace(0, config.drop_path_rate, config.num_hidden_layers).tolist()
        self.layers = nn.ModuleList(
            CXRViTMAELayer(
                config, config.hidden_size, config.num_attention_heads, config.intermediate_size, drop_path=rate
            )
            for rate in drop_path_rates
        )
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if add_final_layernorm else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CXRViTMAEModelOutput | tuple:
        r"""
        pixel_values (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`): normalised images.
        noise (`torch.Tensor` of shape `(batch_size, num_patches)`, *optional*): fixes MAE masking — patches are
            kept in ascending order of noise. Giving it without `mask_ratio` masks `config.mask_ratio` of the patches.
        mask_ratio (`float`, *optional*): fraction of patches to hide (default: none, or `config.mask_ratio` when
            `noise` is given).
        interpolate_pos_encoding (`bool`, *optional*): resample the position table to the input's patch grid.
        output_attentions, output_hidden_states, return_dict (`bool`, *optional*): as in transformers (defaults from
            the config); `hidden_states` holds the embeddings and each block's output, before the final LayerNorm.
        """
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if mask_ratio is None:
            mask_ratio = self.config.mask_ratio if noise is not None else 0.0
        hidden_states, mask, ids_restore = self.embeddings(
            pixel_values, noise=noise, mask_ratio=mask_ratio, interpolate_pos_encoding=bool(interpolate_pos_encoding)
        )
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, attention_weights = layer(hidden_states, output_attentions=output_attentions, **kwargs)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attention_weights,)
        if self.layernorm is not None:
            hidden_states = self.layernorm(hidden_states)
        output = CXRViTMAEModelOutput(
            last_hidden_state=hidden_states,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
            mask=mask,
            ids_restore=ids_restore,
        )
        return as_requested(output, return_dict, self.config)


class CXRViTMAEForPreTraining(CXRViTMAEPreTrainedModel):
    """The MAE: encoder on the visible `1 - mask_ratio` of the patches, decoder predicting all patches' pixels, loss
    = per-patch mean squared error averaged over the masked patches only (optionally on per-patch normalised pixels).
    """

    def __init__(self, config: CXRViTMAEConfig):
        super().__init__(config)
        self.vit = CXRViTMAEModel(config)
        self.decoder = CXRViTMAEDecoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.vit.embeddings.patch_embeddings

    def patchify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(batch, channels, H, W) -> (batch, num_patches, patch_size**2 * channels), patch order (h, w) and pixel
        order (p, q, c) within a patch, as MAE and transformers' ViTMAE."""
        patch = self.config.patch_size
        batch_size, channels, height, width = pixel_values.shape
        if height % patch or width % patch:
            raise ValueError(f"Image size {height}x{width} is not a multiple of the patch size {patch}")
        patches = pixel_values.reshape(batch_size, channels, height // patch, patch, width // patch, patch)
        return patches.permute(0, 2, 4, 3, 5, 1).reshape(batch_size, -1, patch * patch * channels)

    def unpatchify(self, patches: torch.Tensor, image_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Inverse of [`patchify`]; `image_size` defaults to the configured square size."""
        patch, channels = self.config.patch_size, self.config.num_channels
        height, width = image_size or (self.config.image_size, self.config.image_size)
        grid_h, grid_w = height // patch, width // patch
        if grid_h * grid_w != patches.shape[1]:
            raise ValueError(f"{patches.shape[1]} patches do not tile a {height}x{width} image with patch size {patch}")
        pixels = patches.reshape(patches.shape[0], grid_h, grid_w, patch, patch, channels)
        return pixels.permute(0, 5, 1, 3, 2, 4).reshape(patches.shape[0], channels, height, width)

    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CXRViTMAEForPreTrainingOutput | tuple:
        r"""
        noise (`torch.Tensor` of shape `(batch_size, num_patches)`, *optional*): fixes the masking (argsort order,
            lowest kept), as in transformers' `ViTMAEForPreTraining`.
        interpolate_pos_encoding (`bool`, *optional*): run at a resolution other than `config.image_size`.
        """
        outputs = self.vit(
            pixel_values,
            noise=noise,
            mask_ratio=self.config.mask_ratio,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
            **kwargs,
        )
        grid = (pixel_values.shape[-2] // self.config.patch_size, pixel_values.shape[-1] // self.config.patch_size)
        logits = self.decoder(outputs.last_hidden_state, outputs.ids_restore, grid)

        target = self.patchify(pixel_values)
        if self.config.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        per_patch = ((logits - target) ** 2).mean(dim=-1)
        loss = (per_patch * outputs.mask).sum() / outputs.mask.sum()

        output = CXRViTMAEForPreTrainingOutput(
            loss=loss,
            logits=logits,
            mask=outputs.mask,
            ids_restore=outputs.ids_restore,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return as_requested(output, return_dict, self.config)


class ViTMAEForChestXray(CXRViTMAEPreTrainedModel):
    """The paper's fine-tuning model: ViT encoder, mean of the patch tokens (or the CLS token when
    `config.use_mean_pooling` is False) -> LayerNorm (`fc_norm`) -> Linear head (init std `classifier_init_std`).

    The loss follows `config.problem_type`: multi-label BCE with logits where NaN targets are left out, or
    cross-entropy for single-label corpora (COVIDx).
    """

    def __init__(self, config: CXRViTMAEConfig):
        super().__init__(config)
        self.vit = CXRViTMAEModel(config, add_final_layernorm=False)
        # The paper fine-tunes the position table too (timm's pos_embed is a trainable parameter).
        self.vit.embeddings.position_embeddings.requires_grad_(True)
        self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.vit.embeddings.patch_embeddings

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        r"""
        labels (`torch.Tensor`, *optional*): float multi-hot (batch, num_labels) with NaN for unknown entries, or
            class indices (batch,) for `single_label_classification`.
        interpolate_pos_encoding (`bool`, *optional*): run at a resolution other than `config.image_size`.
        """
        outputs = self.vit(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **kwargs)
        tokens = outputs.last_hidden_state
        pooled = tokens[:, 1:].mean(dim=1) if self.config.use_mean_pooling else tokens[:, 0]
        logits = self.classifier(self.fc_norm(pooled))
        loss = None
        if labels is not None:
            loss = chest_xray_classification_loss(logits, labels.to(logits.device), self.config.problem_type)
        output = ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return as_requested(output, return_dict, self.config)


CXRViTMAEConfig.register_for_auto_class()
CXRViTMAEModel.register_for_auto_class("AutoModel")
CXRViTMAEForPreTraining.register_for_auto_class("AutoModelForPreTraining")
ViTMAEForChestXray.register_for_auto_class("AutoModelForImageClassification")

__all__ = [
    "CXRViTMAEForPreTraining",
    "CXRViTMAEForPreTrainingOutput",
    "CXRViTMAEModel",
    "CXRViTMAEModelOutput",
    "CXRViTMAEPreTrainedModel",
    "ViTMAEForChestXray",
]
