"""Classifier throughput: training step and inference of `ViTMAEForChestXray` against stock transformers
`BeitForImageClassification` with mean pooling (the same network, see `cxr-vitmae export-native`), and of
`DenseNetForChestXray` against timm's `densenet121`.

    python benchmarks/classifier.py                       # CPU: ViT-S/16 and DenseNet-121, 224 px
    python benchmarks/classifier.py --device cuda --batch-size 128
"""

import argparse

import timm
import torch
from harness import autocast, machine_description, print_table, time_alternating, write_json
from transformers import BeitForImageClassification

from cxr_vitmae import CXRDenseNetConfig, CXRViTMAEConfig, DenseNetForChestXray, ViTMAEForChestXray
from cxr_vitmae.hub.export_native import beit_config


def vit_pair(preset: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    config = CXRViTMAEConfig.from_preset(preset, drop_path_rate=0.1)
    return ViTMAEForChestXray(config), BeitForImageClassification(beit_config(config))


def densenet_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    return DenseNetForChestXray(CXRDenseNetConfig.from_preset("densenet121")), timm.create_model(
        "densenet121", pretrained=False, num_classes=14
    )


def logits_of(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    output = model(pixels)
    return output if isinstance(output, torch.Tensor) else output.logits


def training_step(model, pixels, labels, precision, device):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=device.type == "cuda")

    def step() -> None:
        with autocast(device, precision):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits_of(model, pixels).float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def inference_call(model, pixels, precision, device):
    def infer() -> None:
        with torch.inference_mode(), autocast(device, precision):
            logits_of(model, pixels)

    return infer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--vit-preset", default="vit-small")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls-per-repeat", type=int, default=None, help="default: 2 on CPU, 20 on GPU")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    calls = args.calls_per_repeat or (20 if device.type == "cuda" else 2)
    pairs = {
        f"{args.vit_preset} (ours vs BEiT)": vit_pair(args.vit_preset),
        "densenet121 (ours vs timm)": densenet_pair(),
    }
    rows, results = [], []
    for pair_name, (ours, anchor) in pairs.items():
        ours.to(device)
        anchor.to(device)
        for precision in args.precisions.split(","):
            for task, batch in (("train step", args.batch_size), ("inference", 1), ("inference", args.batch_size)):
                pixels = torch.randn(batch, 3, 224, 224, device=device)
                labels = torch.randint(0, 2, (batch, 14), device=device).float()
                runners = {}
                for name, model in (("ours", ours), ("anchor", anchor)):
                    if task == "train step":
                        model.train()
                        runners[name] = training_step(model, pixels, labels, precision, device)
                    else:
                        model.eval()
                        runners[name] = inference_call(model, pixels, precision, device)
                timing = time_alternating(
                    runners, items_per_call=batch, calls_per_repeat=calls, repeats=args.repeats, warmup=2, device=device
                )
                ours_rate, anchor_rate = (timing[n]["median_items_per_s"] for n in ("ours", "anchor"))
                rows.append(
                    [
                        pair_name,
                        precision,
                        f"{task} b{batch}",
                        f"{ours_rate:.1f}",
                        f"{anchor_rate:.1f}",
                        f"{ours_rate / anchor_rate:.3f}",
                    ]
                )
                results.append(
                    {
                        "pair": pair_name,
                        "precision": precision,
                        "task": task,
                        "batch_size": batch,
                        "ours_images_per_s": ours_rate,
                        "anchor_images_per_s": anchor_rate,
                        "ratio": ours_rate / anchor_rate,
                    }
                )
        ours.cpu()
        anchor.cpu()

    machine = machine_description(device)
    print_table(
        f"Classifiers, 224 px — {machine}",
        ["model", "precision", "task", "ours img/s", "anchor img/s", "ours/anchor"],
        rows,
    )
    write_json(
        args.output or f"benchmarks/classifier_{device.type}.json",
        {"benchmark": "classifier", "machine": machine, "results": results},
    )


if __name__ == "__main__":
    main()
