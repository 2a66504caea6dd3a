"""CUDA / bf16 checks of the models on a GPU: numerics against stock transformers, flash SDPA, bf16 training steps.

Prints one PASS/FAIL line per check and exits non-zero if any fails.
"""

import sys

import torch
from mae_step import stock_config
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import ViTMAEForPreTraining

from cxr_vitmae import CXRDenseNetConfig, CXRViTMAEConfig, DenseNetForChestXray, ViTMAEForChestXray
from cxr_vitmae.hub.convert import load_exactly
from cxr_vitmae.models.conversion_cxr_vitmae import convert_hf_vitmae_state_dict

RESULTS: list[bool] = []


def check(name: str, passed: bool, detail: str) -> None:
    RESULTS.append(passed)
    print(f"{'PASS' if passed else 'FAIL'}  {name}: {detail}", flush=True)


def main() -> None:
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    torch.manual_seed(0)

    config = stock_config("vit-small", 0.9)
    stock = ViTMAEForPreTraining(config).to(device).eval()
    converted = convert_hf_vitmae_state_dict(stock.state_dict(), config)
    ours = converted.model_class(converted.config)
    load_exactly(ours, converted.state_dict, "stock")
    ours.to(device).eval()
    pixels = torch.randn(8, 3, 224, 224, device=device)
    noise = torch.rand(8, 196, device=device)
    with torch.no_grad():
        a, b = ours(pixels, noise=noise), stock(pixels, noise=noise)
        diff = (a.logits - b.logits).abs().max().item()
        check(
            "MAE fp32 (TF32 off) ours == stock",
            diff <= 1e-4 and torch.equal(a.mask, b.mask),
            f"max |Δ logits| {diff:.2e}",
        )
        with torch.autocast("cuda", dtype=torch.bfloat16):
            a16, b16 = ours(pixels, noise=noise), stock(pixels, noise=noise)
        rel = abs(a16.loss.item() - b.loss.item()) / b.loss.item()
        check("MAE bf16 autocast loss vs fp32", rel <= 2e-2, f"relative loss difference {rel:.2e}")
        rel16 = abs(a16.loss.item() - b16.loss.item()) / b16.loss.item()
        check("MAE bf16 ours vs stock bf16", rel16 <= 2e-2, f"relative loss difference {rel16:.2e}")

    classifier = ViTMAEForChestXray(CXRViTMAEConfig.from_preset("vit-small", drop_path_rate=0.2)).to(device).train()
    labels = torch.randint(0, 2, (8, 14), device=device).float()
    labels[0, 3] = float("nan")
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
            loss = classifier(pixels, labels=labels).loss
        loss.backward()
        grads_finite = all(torch.isfinite(p.grad).all() for p in classifier.parameters() if p.grad is not None)
        check(
            "ViT classifier bf16 + flash SDPA train step",
            bool(torch.isfinite(loss)) and grads_finite,
            f"loss {loss.item():.4f}",
        )
    except RuntimeError as error:
        check("ViT classifier bf16 + flash SDPA train step", False, str(error).splitlines()[0])

    densenet = DenseNetForChestXray(CXRDenseNetConfig.from_preset("densenet121")).to(device).train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = densenet(pixels, labels=labels).loss
    loss.backward()
    check("DenseNet-121 bf16 train step", bool(torch.isfinite(loss)), f"loss {loss.item():.4f}")

    sys.exit(0 if all(RESULTS) else 1)


if __name__ == "__main__":
    main()
