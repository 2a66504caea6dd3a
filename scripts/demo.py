"""The main job, end to end on the synthetic phantom corpus, on a CPU: phantoms in NIH's format -> MAE pre-training
of a small ViT -> fine-tuning from it -> fine-tuning from scratch with the same budget -> test evaluation of both,
with patient-level bootstrap CIs. Every step is the real command a user runs (`cxr-vitmae phantoms`,
`accelerate launch recipes/...`), so the demo walks the same code as a run on real corpora."""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(step: str, command: list[str]) -> float:
    print(f"\n==> {step}\n$ {' '.join(command)}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    print(f"[{step}: {seconds:.0f} s]", flush=True)
    return seconds


def accelerate(recipe: str, config: str, *flags: str) -> list[str]:
    return [
        str(BIN / "accelerate"), "launch", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "bf16", "--dynamo_backend", "no",
        f"recipes/{recipe}.py", "--config", f"recipes/configs/{config}.yaml", *flags,
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("demo_output"))
    parser.add_argument("--num-images", type=int, default=3000)
    parser.add_argument("--size", type=int, default=128, help="phantom image side (the models see 64 px crops)")
    args = parser.parse_args()
    out = args.output
    phantoms, pretrained = out / "phantoms", out / "mae-pretrain"
    common = ["--data_dir", str(phantoms)]

    seconds = {
        "phantoms": run(
            "synthetic corpus in NIH ChestX-ray14's format",
            [
                str(BIN / "cxr-vitmae"),
                "phantoms",
                "--output",
                str(phantoms),
                "--num-images",
                str(args.num_images),
                "--size",
                str(args.size),
                "--seed",
                "0",
                "--difficulty",
                "easy",
            ],
        ),  # fmt: skip
        "pre-training": run(
            "MAE pre-training", accelerate("pretrain", "demo_pretrain", *common, "--output_dir", str(pretrained))
        ),
        "fine-tuning (MAE init)": run(
            "fine-tuning from the MAE",
            accelerate(
                "finetune",
                "demo_finetune",
                *common,
                "--model",
                str(pretrained),
                "--output_dir",
                str(out / "finetune-mae"),
            ),
        ),  # fmt: skip
        "fine-tuning (scratch)": run(
            "fine-tuning from scratch, same budget",
            accelerate(
                "finetune",
                "demo_finetune",
                *common,
                "--model",
                "vit-tiny",
                "--model_overrides",
                "{patch_size: 8, num_hidden_layers: 6}",
                "--output_dir",
                str(out / "finetune-scratch"),
            ),
        ),  # fmt: skip
    }

    print("\nphantom test split, mean AUROC with 95 % patient-level bootstrap CI")
    summary = {}
    for name in ("finetune-mae", "finetune-scratch"):
        metrics = json.loads((out / name / "metrics.json").read_text())
        low, high = metrics["mean_auroc_ci95"]
        summary[name] = {"mean_auroc": metrics["mean_auroc"], "mean_auroc_ci95": [low, high]}
        print(f"  {name:18s} {metrics['mean_auroc']:.3f}  [{low:.3f}, {high:.3f}]  ({metrics['n_images']} images)")
    summary["seconds"] = seconds
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\ntotal {sum(seconds.values()):.0f} s; models, metrics.json and figures are in {out}/")


if __name__ == "__main__":
    main()
