"""MAE pre-training step: `CXRViTMAEForPreTraining` against stock transformers `ViTMAEForPreTraining`.

Both models get the same configuration and the same weights (ours converted from the stock one), the same batch and
the same optimiser (AdamW (0.9, 0.95), weight decay 0.05), and one step is forward + backward + optimiser step with
fresh random masking. Prints a table (median images/s of ours and of stock over alternating repetitions, the ratio,
model FLOPs per image and MFU against a matrix-product peak measured in the same run) and writes JSON.

    python benchmarks/mae_step.py                                  # CPU, ViT-S/16, 224 px, mask 0.9, batch 32
    python benchmarks/mae_step.py --device cuda --batch-size 256 --compile
    python benchmarks/mae_step.py --profile            # + where a step's time goes, ours and stock (torch.profiler)
"""

import argparse
import time

import torch
from harness import (
    autocast,
    machine_description,
    matmul_peak_flops,
    print_table,
    synchronize,
    time_alternating,
    write_json,
)
from torch.utils.flop_counter import FlopCounterMode
from transformers import ViTMAEConfig, ViTMAEForPreTraining

from cxr_vitmae import CXRViTMAEConfig
from cxr_vitmae.hub.convert import load_exactly
from cxr_vitmae.models.configuration_cxr_vitmae import VIT_PRESETS
from cxr_vitmae.models.conversion_cxr_vitmae import convert_hf_vitmae_state_dict


def stock_config(preset: str, mask_ratio: float) -> ViTMAEConfig:
    """Stock transformers' configuration of our preset: its architecture (the preset table's fields, which both
    configurations name alike) and our LayerNorm epsilon, image and patch size."""
    ours = CXRViTMAEConfig.from_preset(preset)
    geometry = {name: getattr(ours, name) for name in ("layer_norm_eps", "image_size", "patch_size")}
    return ViTMAEConfig(**VIT_PRESETS[preset], **geometry, mask_ratio=mask_ratio, attn_implementation="sdpa")


def analytic_forward_flops(config: ViTMAEConfig) -> int:
    """Matrix-multiply FLOPs of one image's MAE forward (2 per multiply-add; norms, softmax and GELU left out)."""
    patches = (config.image_size // config.patch_size) ** 2
    patch_pixels = config.patch_size**2 * config.num_channels

    def layer(tokens: int, width: int, hidden: int) -> int:
        projections = 2 * tokens * (4 * width * width + 2 * width * hidden)
        attention = 2 * 2 * tokens * tokens * width
        return projections + attention

    encoder_tokens = 1 + int(patches * (1 - config.mask_ratio))
    decoder_tokens = patches + 1
    return (
        2 * patches * patch_pixels * config.hidden_size
        + config.num_hidden_layers * layer(encoder_tokens, config.hidden_size, config.intermediate_size)
        + 2 * encoder_tokens * config.hidden_size * config.decoder_hidden_size
        + config.decoder_num_hidden_layers
        * layer(decoder_tokens, config.decoder_hidden_size, config.decoder_intermediate_size)
        + 2 * decoder_tokens * config.decoder_hidden_size * patch_pixels
    )


def counted_forward_flops(model: torch.nn.Module, pixels: torch.Tensor) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(pixels)
    return counter.get_total_flops() / pixels.shape[0]


def make_optimizer(model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=device.type == "cuda"
    )


def make_step(model: torch.nn.Module, pixels: torch.Tensor, precision: str, device: torch.device):
    optimizer = make_optimizer(model, device)

    def step() -> None:
        with autocast(device, precision):
            loss = model(pixel_values=pixels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


# torch.profiler op names (substrings) → what they are; the first match wins, unmatched ops are "other".
OP_CATEGORIES = (
    ("matrix products", ("aten::mm", "aten::addmm", "aten::bmm", "convolution")),
    ("attention (SDPA kernels)", ("attention",)),
    ("LayerNorm", ("layer_norm",)),
    ("GELU", ("gelu",)),
    ("copies, casts, gathers", ("copy", "_to_copy", "clone", "cat", "gather", "index", "scatter", "sort", "stack")),
    ("other elementwise and reductions", ("add", "mul", "sub", "div", "pow", "mean", "sum", "fill", "zero", "where")),
)


def profile_breakdown(
    model, pixels, precision: str, device: torch.device, steps: int = 3
) -> tuple[dict[str, float], float]:
    """Milliseconds per training step by op category (self time of each op, so nothing is counted twice), and the
    AdamW step's inclusive CPU milliseconds, from torch.profiler over `steps` steps after one warm-up step. The
    profiler adds a cost per op, so the model with more, smaller ops looks slower here than it is: read the shares,
    and the timed table for speed."""
    step = make_step(model, pixels, precision, device)
    step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        for _ in range(steps):
            step()
        synchronize(device)
    breakdown = dict.fromkeys([name for name, _ in OP_CATEGORIES] + ["other"], 0.0)
    events = profiler.key_averages()
    # AdamW's update is elementwise ops (single-tensor on CPU, foreach or fused on CUDA); its inclusive time is
    # reported beside the categories, not as one of them.
    optimizer_ms = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step#")) / 1e3 / steps
    for event in events:
        self_us = event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total
        category = next((name for name, keys in OP_CATEGORIES if any(key in event.key for key in keys)), "other")
        breakdown[category] += self_us / 1e3 / steps
    return breakdown, optimizer_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="vit-small")
    parser.add_argument("--mask-ratio", type=float, default=0.9)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps-per-repeat", type=int, default=None, help="default: 2 on CPU, 20 on GPU")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="also break a step down by op category (eager)")
    parser.add_argument("--output", default=None, help="JSON path (default: benchmarks/mae_step_<device>.json)")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    config = stock_config(args.preset, args.mask_ratio)
    stock = ViTMAEForPreTraining(config).to(device)
    converted = convert_hf_vitmae_state_dict(stock.state_dict(), config)
    ours = converted.model_class(converted.config)
    load_exactly(ours, converted.state_dict, "stock ViTMAEForPreTraining")
    ours.to(device)
    pixels = torch.randn(args.batch_size, 3, config.image_size, config.image_size, device=device)

    analytic = analytic_forward_flops(config)
    counted = counted_forward_flops(ours, pixels[:2])
    train_flops = 3 * analytic  # backward ≈ 2 × forward
    peaks = {"fp32": matmul_peak_flops(device, torch.float32), "bf16": matmul_peak_flops(device, torch.bfloat16)}
    steps = args.steps_per_repeat or (20 if device.type == "cuda" else 2)

    rows, results = [], []
    modes = [(precision, False) for precision in args.precisions.split(",")]
    if args.compile:
        modes += [(precision, True) for precision in args.precisions.split(",")]
    for precision, compiled in modes:
        runners, compile_seconds = {}, {}
        for name, model in (("ours", ours), ("stock", stock)):
            model.train()
            module = torch.compile(model) if compiled else model
            runners[name] = make_step(module, pixels, precision, device)
            start = time.perf_counter()
            runners[name]()  # the first call compiles
            torch.cuda.synchronize() if device.type == "cuda" else None
            compile_seconds[name] = time.perf_counter() - start
        timing = time_alternating(
            runners,
            items_per_call=args.batch_size,
            calls_per_repeat=steps,
            repeats=args.repeats,
            warmup=args.warmup,
            device=device,
        )
        ours_rate, stock_rate = timing["ours"]["median_items_per_s"], timing["stock"]["median_items_per_s"]
        mode = f"{precision}{' + compile' if compiled else ' eager'}"
        mfu = ours_rate * train_flops / peaks[precision]
        rows.append([mode, f"{ours_rate:.1f}", f"{stock_rate:.1f}", f"{ours_rate / stock_rate:.3f}", f"{mfu:.1%}"])
        results.append(
            {
                "mode": mode,
                "ours_images_per_s": ours_rate,
                "stock_images_per_s": stock_rate,
                "ratio": ours_rate / stock_rate,
                "ours_mfu": mfu,
                "first_call_seconds": compile_seconds,
                "samples": {name: timing[name]["samples"] for name in timing},
            }
        )

    profiles = {}
    if args.profile:
        for precision in args.precisions.split(","):
            profiles[precision] = {}
            for name, model in (("ours", ours), ("stock", stock)):
                breakdown, optimizer_ms = profile_breakdown(model, pixels, precision, device)
                profiles[precision][name] = {"ops_ms": breakdown, "adamw_step_ms": optimizer_ms}

    machine = machine_description(device)
    setting = f"{args.preset}/16 {config.image_size}px, mask {args.mask_ratio}, batch {args.batch_size}"
    print_table(
        f"MAE step, {setting} — {machine}",
        ["mode", "ours img/s", "stock img/s", "ours/stock", "ours MFU"],
        rows,
    )
    print(
        f"model FLOPs/image: forward {analytic / 1e9:.2f} G analytic, {counted / 1e9:.2f} G counted by "
        f"torch.utils.flop_counter (ratio {counted / analytic:.3f}); training step = 3 × forward; "
        f"matmul peak fp32 {peaks['fp32'] / 1e12:.2f} TFLOP/s, bf16 {peaks['bf16'] / 1e12:.2f} TFLOP/s"
    )
    for precision, by_model in profiles.items():
        ops = {name: by_model[name]["ops_ms"] for name in ("ours", "stock")}
        totals = {name: sum(breakdown.values()) for name, breakdown in ops.items()}
        rows = [
            [category]
            + [
                cell
                for name in ops
                for cell in (f"{ops[name][category]:.1f}", f"{ops[name][category] / totals[name]:.1%}")
            ]
            for category in ops["ours"]
        ]
        rows.append(["total", f"{totals['ours']:.1f}", "", f"{totals['stock']:.1f}", ""])
        rows.append(
            [
                "(AdamW step, inclusive)",
                f"{by_model['ours']['adamw_step_ms']:.1f}",
                "",
                f"{by_model['stock']['adamw_step_ms']:.1f}",
                "",
            ]
        )
        print_table(
            f"where a {precision} eager step goes (torch.profiler self time, ms per step)",
            ["op category", "ours ms", "ours %", "stock ms", "stock %"],
            rows,
        )
    write_json(
        args.output or f"benchmarks/mae_step_{device.type}.json",
        {
            "benchmark": "mae_step",
            "machine": machine,
            "preset": args.preset,
            "image_size": config.image_size,
            "mask_ratio": args.mask_ratio,
            "batch_size": args.batch_size,
            "forward_flops_per_image": {"analytic": analytic, "flop_counter": counted},
            "matmul_peak_flops": peaks,
            "results": results,
            "profile_ms_per_step": profiles,
        },
    )


if __name__ == "__main__":
    main()
