"""End-to-end recipe throughput against the bare model step: what a user gets from `accelerate launch recipes/...`
compared with what the model alone runs at, for the demo's ViT at the demo's settings.

    python benchmarks/recipe_throughput.py                  # 5 alternating repetitions, 96 steps each
    python benchmarks/recipe_throughput.py --repeats 3 --steps 64 --paths default

On a prepared phantom corpus (NIH layout, the demo's 3,000 images at 128 px, `cxr-vitmae prepare`), each repetition
runs, in turn:
- `accelerate launch recipes/pretrain.py --config recipes/configs/demo_pretrain.yaml` and `recipes/finetune.py
  --config recipes/configs/demo_finetune.yaml` (from that pre-training) for `--steps` optimiser steps, with the
  launch flags of `scripts/demo.py`, once per loader path given by `--paths` (`default`: the recipes' defaults;
  `cpu-inline`: the CPU augmentation in the training process, the recipes' path before `--augment_on`;
  `cpu-1-worker`: the same in one loader worker; `accelerator`: the batched crop on the training device, which on a
  CPU is the training process's cores);
- the bare step of the same model, batch, precision (bf16 autocast) and optimiser (AdamW over the recipe's
  parameter groups) on a batch already in memory (forward, backward, optimiser step, zero_grad), in a process of
  its own started by `accelerate launch` as the recipes are (a step timed inside this longer-lived process ran
  10-15 % slower than the recipe's own step).
End-to-end images/s is the recipe's own log (`trainer_history.json`, `images_per_s` per logging window of
`--logging-steps` steps, everything in the window: loading, augmentation, the step, logging, epoch-end validation
or figures), over every window but the first (start-up: worker processes, first batches); the wall time of the whole
command is reported beside it. Medians over the repetitions; ratio = end-to-end / model-only per repetition, then
the median.

Also measured, in this process on one thread: CPU cost per pre-training image of each loader path (getrusage
user + system time over whole batches, `num_workers=0`, so every cost lands in this process), and the batched
device-side crop's cost on this CPU, at the demo's size (128 px → 64) and the paper's (prepared 256 → 224).

Writes benchmarks/results/recipe_throughput_cpu.json (or _cuda) and prints the tables for RESULTS.md.
"""

import argparse
import itertools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from harness import autocast, machine_description, print_table, write_json

from cxr_vitmae.data import load_cxr_dataset
from cxr_vitmae.data.device_augmentation import split_for_device
from cxr_vitmae.data.transforms import pretraining_transform
from cxr_vitmae.training.data import TransformedCorpus, make_loader
from cxr_vitmae.training.models import build_classifier, build_pretraining_model
from cxr_vitmae.training.optim import parameter_groups

HERE = Path(__file__).parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
PATHS = {
    "default": [],
    "cpu-inline": ["--augment_on", "cpu", "--dataloader_num_workers", "0"],
    "cpu-1-worker": ["--augment_on", "cpu", "--dataloader_num_workers", "1"],
    "accelerator": ["--augment_on", "accelerator"],
}
TARGET = 0.90


def config(name: str) -> dict:
    return yaml.safe_load((ROOT / "recipes" / "configs" / f"{name}.yaml").read_text())


def launch(script: Path, flags: list[str], threads: int) -> list[str]:
    # As scripts/demo.py launches the recipes: one process with every core, bf16.
    return [
        str(BIN / "accelerate"), "launch", "--num_processes", "1", "--num_machines", "1",
        "--num_cpu_threads_per_process", str(threads), "--mixed_precision", "bf16", "--dynamo_backend", "no",
        str(script), *flags,
    ]  # fmt: skip


def recipe(name: str, config_name: str, flags: list[str], threads: int) -> list[str]:
    return launch(
        ROOT / "recipes" / f"{name}.py",
        ["--config", str(ROOT / "recipes" / "configs" / f"{config_name}.yaml"), *flags],
        threads,
    )


def run_bare_step(recipe_name: str, pretrained: Path, steps: int, threads: int) -> float:
    """Steps/s of the bare step, in a process started as the recipes are (same launcher, threads, environment)."""
    command = launch(Path(__file__), ["--bare-step", recipe_name, "--pretrained", str(pretrained), "--steps"], threads)
    result = subprocess.run([*command, str(steps)], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
    return float(result.stdout.strip().splitlines()[-1])


def run_recipe(command: list[str], output_dir: Path) -> dict:
    shutil.rmtree(output_dir, ignore_errors=True)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
    history = json.loads((output_dir / "trainer_history.json").read_text())
    windows = [record for record in history if "images_per_s" in record]
    steps = [record["step"] for record in windows]
    # Equal windows of `logging_steps` steps; the last may be shorter. Images / seconds over windows 2..n.
    sizes = [step - previous for previous, step in zip([0, *steps], steps, strict=False)]
    later = list(zip(sizes, windows, strict=True))[1:]
    seconds = sum(size / window["images_per_s"] for size, window in later)  # per image of a step, summed
    steady = sum(size for size, _ in later) / seconds if seconds else float("nan")
    return {"steady_images_per_s": steady, "wall_s": wall, "steps": steps[-1] if steps else 0}


def bare_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, inputs: dict, device: torch.device):
    def step() -> None:
        with autocast(device, "bf16"):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def time_steps(step, steps: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def bare_models(pretrained_dir: Path, device: torch.device) -> dict:
    """The demo's two models with the recipes' optimiser groups, and a batch of each in memory: the MAE as the
    pre-training recipe builds it, the classifier from `pretrained_dir` as the fine-tuning recipe does."""
    pre, fine = config("demo_pretrain"), config("demo_finetune")
    size = pre["image_size"]
    mae = build_pretraining_model(
        pre["model"],
        image_size=size,
        mask_ratio=pre["mask_ratio"],
        norm_pix_loss=pre["norm_pix_loss"],
        overrides=pre["model_overrides"],
    ).to(device)
    classifier = build_classifier(
        str(pretrained_dir),
        label_names=[f"finding{i}" for i in range(14)],
        single_label=False,
        image_size=fine["image_size"],
        drop_path=fine["drop_path"],
        overrides=fine["model_overrides"],
    ).to(device)
    mae.train(), classifier.train()
    batch = pre["per_device_train_batch_size"], 3, size, size
    pixels = torch.randn(batch, device=device)
    labels = (torch.rand(batch[0], 14, device=device) < 0.1).float()
    return {
        "pretrain": bare_step(
            mae,
            torch.optim.AdamW(parameter_groups(mae, weight_decay=pre["weight_decay"]), lr=1e-4, betas=(0.9, 0.95)),
            {"pixel_values": pixels},
            device,
        ),
        "finetune": bare_step(
            classifier,
            torch.optim.AdamW(
                parameter_groups(classifier, weight_decay=fine["weight_decay"], layer_decay=fine["layer_decay"]),
                lr=1e-4,
            ),
            {"pixel_values": pixels, "labels": labels},
            device,
        ),
    }


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def loader_costs(settings: list[tuple[str, Path, int]], batches: int) -> list[dict]:
    """CPU seconds per pre-training image, one thread, of: the CPU transform in the loader; the device path's
    loader half (decode + draws + padding collate); the device half run on this CPU. `settings`: (label, prepared
    corpus, crop size)."""
    torch.set_num_threads(1)
    rows = []
    for label, prepared, image_size in settings:
        splits = load_cxr_dataset("nih-chestxray14", prepared)
        transform = pretraining_transform(image_size)
        draws, on_device = split_for_device(transform)
        measured = {}
        for path, corpus_transform in (("cpu", transform), ("accelerator", draws)):
            corpus = TransformedCorpus(splits["train"], corpus_transform, seed=0, label_key=None)
            loader = make_loader(corpus, batch_size=64, shuffle=True, num_workers=0, drop_last=True)
            iterator = itertools.chain.from_iterable(loader for _ in itertools.count())  # epochs, as needed
            next(iterator)  # first-batch effects (file mapping, allocator)
            before, images, device_seconds = cpu_seconds(), 0, 0.0
            for _ in range(batches):
                batch = next(iterator)
                images += len(batch["index"])
                if path == "accelerator":
                    start = cpu_seconds()
                    on_device(batch)
                    device_seconds += cpu_seconds() - start
            loader_seconds = cpu_seconds() - before - device_seconds
            measured[path] = {"loader_ms": 1000 * loader_seconds / images, "device_ms": 1000 * device_seconds / images}
        rows.append(
            {
                "setting": label,
                "image_size": image_size,
                "cpu_path_loader_ms": measured["cpu"]["loader_ms"],
                "accelerator_path_loader_ms": measured["accelerator"]["loader_ms"],
                "accelerator_path_device_half_on_this_cpu_ms": measured["accelerator"]["device_ms"],
                "loader_cost_ratio": measured["accelerator"]["loader_ms"] / measured["cpu"]["loader_ms"],
            }
        )
    torch.set_num_threads(os.cpu_count() or 1)
    return rows


CORES = (2, 8, 16, 32, 64)


def markdown(results: dict) -> str:
    """The RESULTS.md section for a JSON this script wrote."""
    lines = [
        "## Recipe throughput: end to end against the bare model step",
        "",
        f"- Date: {results['date']}",
        f"- Machine: {results['machine']}; load average at the end "
        + ", ".join(f"{value:.1f}" for value in results["load_average"]),
        f"- Command: `{results['command']}` (JSON in benchmarks/results/{results['json_name']})",
        "- Settings: the demo's configs (`demo_pretrain.yaml`, `demo_finetune.yaml`: the 6-layer ViT with 8-px "
        f"patches at 64 px, batch 64, bf16) on the demo's 3,000 phantoms at 128 px, prepared; {results['steps']} steps "
        "per run, "
        f"windows of {results['logging_steps']} steps, the first window left out; median of {results['repeats']} "
        "alternating repetitions (ratio: median of the per-repetition ratios)",
        "",
        "| recipe / loader path | end-to-end img/s | model-only img/s | ratio | ≥ 0.90 | command wall s |",
        "|---|---|---|---|---|---|",
    ]
    for key, values in results["recipes"].items():
        median = values["median"]
        lines.append(
            f"| {key} | {median['end_to_end_images_per_s']:.0f} | {median['model_only_images_per_s']:.0f} | "
            f"{median['ratio']:.3f} | {'yes' if median['ratio'] >= results['target_ratio'] else 'NO'} | "
            f"{median['wall_s']:.1f} |"
        )
    lines += [
        "",
        "CPU cost per pre-training image, one thread, `getrusage` over whole batches of 64 (`num_workers=0`):",
        "",
        "| setting | CPU path: loader | accelerator path: loader | ratio | accelerator path: device half on this CPU |",
        "|---|---|---|---|---|",
    ]
    for cost in results["loader_cpu_ms_per_pretraining_image"]:
        lines.append(
            f"| {cost['setting']} | {cost['cpu_path_loader_ms']:.3f} ms | {cost['accelerator_path_loader_ms']:.3f} "
            f"ms | {cost['loader_cost_ratio']:.2f} | {cost['accelerator_path_device_half_on_this_cpu_ms']:.3f} ms |"
        )
    lines += [
        "",
        "What N cores can feed (pre-training images/s = N / CPU cost per image, every core a loader; on a GPU node "
        "one core per training process runs the loop instead), at the paper's setting (prepared 256 → 224):",
        "",
        "| cores | " + " | ".join(str(n) for n in CORES) + " |",
        "|---|" + "---|" * len(CORES),
    ]
    paper = results["loader_cpu_ms_per_pretraining_image"][-1]
    for label, key in (("CPU path", "cpu_path_loader_ms"), ("accelerator path", "accelerator_path_loader_ms")):
        lines.append(f"| {label} | " + " | ".join(f"{n * 1000 / paper[key]:,.0f}" for n in CORES) + " |")
    return "\n".join(lines) + "\n"


def prepare_phantoms(directory: Path, num_images: int, size: int) -> Path:
    """`cxr-vitmae phantoms` (NIH layout, the demo's arguments) at `size` px, then `cxr-vitmae prepare`."""
    phantoms, prepared = directory / "phantoms", directory / "prepared"
    if not prepared.is_dir():
        subprocess.run(
            [str(BIN / "cxr-vitmae"), "phantoms", "--output", str(phantoms), "--num-images", str(num_images),
             "--size", str(size), "--seed", "0", "--difficulty", "easy"],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            [str(BIN / "cxr-vitmae"), "prepare", "nih-chestxray14", "--data-dir", str(phantoms), "--output",
             str(prepared)],
            check=True, capture_output=True,
        )  # fmt: skip
    return prepared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=96, help="optimiser steps per recipe run (3 demo epochs)")
    parser.add_argument("--logging-steps", type=int, default=8)
    parser.add_argument("--num-images", type=int, default=3000, help="phantoms, as scripts/demo.py writes them")
    parser.add_argument("--paths", nargs="+", default=["default", "cpu-inline", "cpu-1-worker"], choices=list(PATHS))
    parser.add_argument("--loader-batches", type=int, default=20, help="batches of 64 per loader-cost measurement")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the corpus and runs here")
    parser.add_argument("--markdown", type=Path, default=None, help="print the RESULTS.md section of this JSON, exit")
    parser.add_argument("--bare-step", choices=["pretrain", "finetune"], help=argparse.SUPPRESS)
    parser.add_argument("--pretrained", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.markdown is not None:
        print(markdown({**json.loads(args.markdown.read_text()), "json_name": args.markdown.name}))
        return
    if args.bare_step is not None:  # the child process of `run_bare_step`
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        print(time_steps(bare_models(args.pretrained, device)[args.bare_step], args.steps))
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="recipe_throughput_"))
    prepared = prepare_phantoms(workdir / "demo", args.num_images, 128)
    # The paper's loader setting: images prepared at 256 (`cxr-vitmae prepare`'s default), cropped to 224.
    prepared_256 = prepare_phantoms(workdir / "paper", 400, 256)
    common = ["--data_dir", str(prepared), "--max_train_steps", str(args.steps), "--logging_steps"]
    common.append(str(args.logging_steps))
    pretrained = workdir / "runs" / "pretrain-reference"
    run_recipe(recipe("pretrain", "demo_pretrain", [*common, "--output_dir", str(pretrained)], threads), pretrained)
    per_image = config("demo_pretrain")["per_device_train_batch_size"]

    samples: dict[str, list[dict]] = {}
    for repeat in range(args.repeats):
        for name, config_name in (("pretrain", "demo_pretrain"), ("finetune", "demo_finetune")):
            for path in args.paths:
                output = workdir / "runs" / f"{name}-{path}"
                flags = [*common, *PATHS[path], "--output_dir", str(output)]
                if name == "finetune":
                    flags += ["--model", str(pretrained), "--n_bootstrap", "0"]
                end_to_end = run_recipe(recipe(name, config_name, flags, threads), output)
                model_only = run_bare_step(name, pretrained, args.steps, threads)
                samples.setdefault(f"{name}/{path}", []).append(
                    {
                        "end_to_end_images_per_s": end_to_end["steady_images_per_s"],
                        "model_only_images_per_s": model_only * per_image,
                        "ratio": end_to_end["steady_images_per_s"] / (model_only * per_image),
                        "wall_s": end_to_end["wall_s"],
                    }
                )
                print(f"repeat {repeat + 1} {name}/{path}: {samples[f'{name}/{path}'][-1]}", flush=True)

    rows, summary = [], {}
    for key, values in samples.items():
        median = {name: statistics.median(v[name] for v in values) for name in values[0]}
        summary[key] = {"median": median, "samples": values}
        rows.append(
            [key, f"{median['end_to_end_images_per_s']:.0f}", f"{median['model_only_images_per_s']:.0f}",
             f"{median['ratio']:.3f}", "yes" if median["ratio"] >= TARGET else "NO", f"{median['wall_s']:.1f}"]
        )  # fmt: skip
    print_table(
        f"Recipe vs bare step, {machine_description(device)}, median of {args.repeats} alternating repetitions",
        ["recipe/loader path", "end-to-end img/s", "model-only img/s", "ratio", f">= {TARGET}", "command wall s"],
        rows,
    )
    costs = loader_costs(
        [("demo: 128 px phantoms -> 64", prepared, 64), ("paper: prepared 256 -> 224", prepared_256, 224)],
        args.loader_batches,
    )
    print_table(
        "CPU ms per pre-training image (one thread, getrusage)",
        ["setting", "CPU path loader", "device path loader", "ratio", "device half on this CPU"],
        [
            [c["setting"], f"{c['cpu_path_loader_ms']:.3f}", f"{c['accelerator_path_loader_ms']:.3f}",
             f"{c['loader_cost_ratio']:.2f}", f"{c['accelerator_path_device_half_on_this_cpu_ms']:.3f}"]
            for c in costs
        ],
    )  # fmt: skip
    write_json(
        HERE / "results" / f"recipe_throughput_{device.type}.json",
        {
            "machine": machine_description(device),
            "load_average": os.getloadavg(),
            "command": "python benchmarks/recipe_throughput.py " + " ".join(sys.argv[1:]),
            "steps": args.steps,
            "logging_steps": args.logging_steps,
            "repeats": args.repeats,
            "target_ratio": TARGET,
            "recipes": summary,
            "loader_cpu_ms_per_pretraining_image": costs,
        },
    )
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
