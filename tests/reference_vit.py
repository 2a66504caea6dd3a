"""Independent plain-torch ViT / MAE forwards in the timm + facebookresearch/mae checkpoint layout.

Written from the published architecture (pre-norm blocks, fused qkv with bias, exact GELU, LayerNorm eps 1e-6,
mean-pooled patch tokens -> fc_norm -> head; MAE masking by argsort of noise) without any cxr_vitmae code, so the
tests can hold the package's models against it. Weights are a flat dict with timm/MAE key names.
"""

import math

import torch
import torch.nn.functional as F

EPS = 1e-6


def _layer_norm(x, sd, prefix):
    return F.layer_norm(x, x.shape[-1:], sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], EPS)


def _block(x, sd, prefix, num_heads):
    batch, tokens, dim = x.shape
    head_dim = dim // num_heads
    h = _layer_norm(x, sd, f"{prefix}.norm1")
    qkv = h @ sd[f"{prefix}.attn.qkv.weight"].T + sd[f"{prefix}.attn.qkv.bias"]
    q, k, v = qkv.reshape(batch, tokens, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
    attn = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(head_dim), dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(batch, tokens, dim)
    x = x + out @ sd[f"{prefix}.attn.proj.weight"].T + sd[f"{prefix}.attn.proj.bias"]
    h = _layer_norm(x, sd, f"{prefix}.norm2")
    h = F.gelu(h @ sd[f"{prefix}.mlp.fc1.weight"].T + sd[f"{prefix}.mlp.fc1.bias"])
    return x + h @ sd[f"{prefix}.mlp.fc2.weight"].T + sd[f"{prefix}.mlp.fc2.bias"]


def _patch_tokens(sd, pixels, patch_size):
    tokens = F.conv2d(pixels, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch_size)
    return tokens.flatten(2).transpose(1, 2) + sd["pos_embed"][:, 1:]


def vit_classifier_logits(sd, pixels, *, patch_size, depth, num_heads):
    """timm VisionTransformer(global_pool='avg', fc_norm=True) in eval mode."""
    x = _patch_tokens(sd, pixels, patch_size)
    cls = (sd["cls_token"] + sd["pos_embed"][:, :1]).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1)
    for i in range(depth):
        x = _block(x, sd, f"blocks.{i}", num_heads)
    pooled = _layer_norm(x[:, 1:].mean(dim=1), sd, "fc_norm")
    return pooled @ sd["head.weight"].T + sd["head.bias"]


def patchify(pixels, patch_size):
    """Patches in row-major (h, w) order, each flattened as (p, q, c), built with explicit loops."""
    batch, channels, height, width = pixels.shape
    patches = []
    for i in range(height // patch_size):
        for j in range(width // patch_size):
            tile = pixels[:, :, i * patch_size : (i + 1) * patch_size, j * patch_size : (j + 1) * patch_size]
            patches.append(tile.permute(0, 2, 3, 1).reshape(batch, -1))
    return torch.stack(patches, dim=1)


def mae_forward(sd, pixels, noise, *, patch_size, mask_ratio, depth, num_heads, decoder_depth, decoder_heads):
    """facebookresearch/mae MaskedAutoencoderViT.forward: returns (loss, pred, mask)."""
    x = _patch_tokens(sd, pixels, patch_size)
    batch, num_patches, dim = x.shape
    num_keep = int(num_patches * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    x = torch.stack([x[b, ids_shuffle[b, :num_keep]] for b in range(batch)])
    mask = torch.ones(batch, num_patches)
    mask[:, :num_keep] = 0
    mask = torch.stack([mask[b, ids_restore[b]] for b in range(batch)])

    cls = (sd["cls_token"] + sd["pos_embed"][:, :1]).expand(batch, -1, -1)
    x = torch.cat([cls, x], dim=1)
    for i in range(depth):
        x = _block(x, sd, f"blocks.{i}", num_heads)
    x = _layer_norm(x, sd, "norm")

    x = x @ sd["decoder_embed.weight"].T + sd["decoder_embed.bias"]
    mask_tokens = sd["mask_token"].expand(batch, num_patches - num_keep, -1)
    seq = torch.cat([x[:, 1:], mask_tokens], dim=1)
    seq = torch.stack([seq[b, ids_restore[b]] for b in range(batch)])
    x = torch.cat([x[:, :1], seq], dim=1) + sd["decoder_pos_embed"]
    for i in range(decoder_depth):
        x = _block(x, sd, f"decoder_blocks.{i}", decoder_heads)
    x = _layer_norm(x, sd, "decoder_norm")
    pred = (x @ sd["decoder_pred.weight"].T + sd["decoder_pred.bias"])[:, 1:]

    target = patchify(pixels, patch_size)
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    loss = (per_patch * mask).sum() / mask.sum()
    return loss, pred, mask


def random_mae_state_dict(
    *, dim, depth, mlp, patch_size, grid, decoder_dim=None, decoder_depth=0, decoder_mlp=None, seed=0, channels=3
):
    """Random weights with the key names and shapes of facebookresearch/mae's MaskedAutoencoderViT (decoder only
    when `decoder_dim` is given), as the paper's pre-training checkpoints store them."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, around=0.0):
        return around + 0.05 * torch.randn(*shape, generator=generator)

    def blocks(prefix, width, hidden, count):
        weights = {}
        for i in range(count):
            p = f"{prefix}.{i}"
            weights.update(
                {
                    f"{p}.norm1.weight": rand(width, around=1.0),
                    f"{p}.norm1.bias": rand(width),
                    f"{p}.attn.qkv.weight": rand(3 * width, width),
                    f"{p}.attn.qkv.bias": rand(3 * width),
                    f"{p}.attn.proj.weight": rand(width, width),
                    f"{p}.attn.proj.bias": rand(width),
                    f"{p}.norm2.weight": rand(width, around=1.0),
                    f"{p}.norm2.bias": rand(width),
                    f"{p}.mlp.fc1.weight": rand(hidden, width),
                    f"{p}.mlp.fc1.bias": rand(hidden),
                    f"{p}.mlp.fc2.weight": rand(width, hidden),
                    f"{p}.mlp.fc2.bias": rand(width),
                }
            )
        return weights

    tokens = grid * grid + 1
    weights = {
        "cls_token": rand(1, 1, dim),
        "pos_embed": rand(1, tokens, dim),
        "patch_embed.proj.weight": rand(dim, channels, patch_size, patch_size),
        "patch_embed.proj.bias": rand(dim),
        **blocks("blocks", dim, mlp, depth),
        "norm.weight": rand(dim, around=1.0),
        "norm.bias": rand(dim),
    }
    if decoder_dim is not None:
        weights.update(
            {
                "mask_token": rand(1, 1, decoder_dim),
                "decoder_pos_embed": rand(1, tokens, decoder_dim),
                "decoder_embed.weight": rand(decoder_dim, dim),
                "decoder_embed.bias": rand(decoder_dim),
                **blocks("decoder_blocks", decoder_dim, decoder_mlp, decoder_depth),
                "decoder_norm.weight": rand(decoder_dim, around=1.0),
                "decoder_norm.bias": rand(decoder_dim),
                "decoder_pred.weight": rand(patch_size * patch_size * channels, decoder_dim),
                "decoder_pred.bias": rand(patch_size * patch_size * channels),
            }
        )
    return weights


def as_finetuned_classifier(weights, num_classes, seed=1):
    """The paper's fine-tuned layout (timm VisionTransformer, global_pool=True): `norm` replaced by `fc_norm`,
    a `head`, no decoder."""
    generator = torch.Generator().manual_seed(seed)
    dim = weights["pos_embed"].shape[-1]
    classifier = {k: v for k, v in weights.items() if not k.startswith(("norm.", "decoder", "mask_token"))}
    classifier.update(
        {
            "fc_norm.weight": 1 + 0.05 * torch.randn(dim, generator=generator),
            "fc_norm.bias": 0.05 * torch.randn(dim, generator=generator),
            "head.weight": 0.05 * torch.randn(num_classes, dim, generator=generator),
            "head.bias": 0.05 * torch.randn(num_classes, generator=generator),
        }
    )
    return classifier
