"""The functions and small modules the cxr_vitmae ViT is built from: MAE's fixed 2-D sin-cos position table and its
resampling, MAE's random masking, stochastic depth, the activations `hidden_act` names, and attention written out
(with the rule for when CPU attention runs in fp32).

Like modeling_cxr_vitmae.py, this file is copied into saved model directories (remote code), so it imports only torch.
"""

import math
from functools import cache

import torch
from torch import nn


def sincos_position_table(grid_size: int, dim: int) -> torch.Tensor:
    """The fixed (1, 1 + grid_size**2, dim) position table of MAE, with a zero row for the CLS token.

    Each row is [sin(w·ω) | cos(w·ω) | sin(h·ω) | cos(h·ω)] with ω_k = 10000^(-k / (dim/4)), w the patch's column and
    h its row, patches in row-major order: MAE's `get_2d_sincos_pos_embed` (its meshgrid puts w first), computed in
    float64 as MAE does, which released checkpoints carry."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, columns = torch.meshgrid(
        torch.arange(grid_size, dtype=torch.float64), torch.arange(grid_size, dtype=torch.float64), indexing="ij"
    )
    angles_w = columns.reshape(-1, 1) * omega
    angles_h = rows.reshape(-1, 1) * omega
    table = torch.cat([angles_w.sin(), angles_w.cos(), angles_h.sin(), angles_h.cos()], dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).float().unsqueeze(0)


def resize_position_table(table: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`table` (1, 1 + n, dim) of a square grid, resampled bicubically (antialiased, in float32) to a (height, width)
    patch grid, as timm's `resample_abs_pos_embed`; the CLS row is kept."""
    if table.shape[1] - 1 == height * width and height == width:
        return table
    side = math.isqrt(table.shape[1] - 1)
    grid = table[:, 1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = nn.functional.interpolate(grid, size=(height, width), mode="bicubic", antialias=True)
    resized = grid.permute(0, 2, 3, 1).reshape(1, height * width, -1).to(table.dtype)
    return torch.cat([table[:, :1], resized], dim=1)


def gather_tokens(tokens: torch.Tensor, ids: torch.LongTensor) -> torch.Tensor:
    """tokens[b, ids[b, i]] for every b, i: (B, L, D) -> (B, K, D)."""
    return torch.gather(tokens, 1, ids[:, :, None].expand(-1, -1, tokens.shape[-1]))


def random_masking(
    batch_size: int,
    num_patches: int,
    mask_ratio: float,
    noise: torch.Tensor | None,
    device: torch.device,
) -> tuple[torch.LongTensor, torch.Tensor, torch.LongTensor]:
    """MAE's per-sample random masking: keep the `int(L * (1 - mask_ratio))` patches with the lowest `noise`.

    Returns `ids_keep`, the indices of the kept patches (in ascending-noise order), the binary mask (1 = masked) in
    the original patch order, and `ids_restore`, the permutation that puts the shuffled sequence back in order.
    """
    num_keep = int(num_patches * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(batch_size, num_patches, device=device)
    elif noise.shape != (batch_size, num_patches):
        raise ValueError(
            f"noise must have shape (batch_size, num_patches) = {(batch_size, num_patches)}, got {tuple(noise.shape)}"
        )
    ids_shuffle = torch.argsort(noise.to(device), dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    # A patch is masked iff its rank in the shuffle is past the kept prefix.
    mask = (ids_restore >= num_keep).float()
    return ids_shuffle[:, :num_keep], mask, ids_restore


@cache
def cpu_bf16_attention_is_slow() -> bool:
    """Whether this CPU lacks AMX, so that PyTorch's CPU flash-attention kernel runs slower in bf16 than in fp32.

    Measured on a 2-core AVX512-BF16 EPYC without AMX (ViT-S MAE decoder shapes, forward + backward): 161 ms in bf16
    against 115 ms in fp32 for 197 tokens, 9.1 against 2.5 ms for 20. CPUs with AMX tiles multiply bf16 blocks in
    hardware and keep bf16."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return not (amx is not None and amx())


def attention_needs_fp32(query: torch.Tensor, attn_implementation: str) -> bool:
    """SDPA on a CPU without AMX, with bf16 inputs (bf16 autocast or a bf16 model): attention runs in fp32 there,
    which is faster (see `cpu_bf16_attention_is_slow`) and more precise."""
    return (
        attn_implementation == "sdpa"
        and query.device.type == "cpu"
        and query.dtype == torch.bfloat16
        and cpu_bf16_attention_is_slow()
    )


def eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out: softmax(q·kᵀ·scaling) in float32, then ·v. Returns the output as (batch, tokens, heads,
    head_dim), the layout of transformers' attention kernels, and the attention weights (batch, heads, tokens, tokens).
    """
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


ACTIVATIONS = {
    "gelu": nn.GELU,
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "quick_gelu": lambda: QuickGELU(),
    "relu": nn.ReLU,
    "silu": nn.SiLU,
}


class QuickGELU(nn.Module):
    """x·sigmoid(1.702·x), the GELU approximation of CLIP."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states * torch.sigmoid(1.702 * hidden_states)


class DropPath(nn.Module):
    """Stochastic depth: zeroes a sample's whole residual branch with probability `drop_prob` in training and scales
    the kept ones by 1 / (1 - drop_prob), as timm's `DropPath` (one Bernoulli draw per sample, in the same order)."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return hidden_states
        keep_prob = 1.0 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        keep = hidden_states.new_empty(shape).bernoulli_(keep_prob).div_(keep_prob)
        return hidden_states * keep
