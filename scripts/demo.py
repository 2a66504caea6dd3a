"""The main job, end to end on the synthetic phantom corpus, on a CPU: phantoms in NIH's format -> MAE pre-training
of a small ViT -> fine-tuning from it -> fine-tuning from scratch with the same budget -> a DenseNet-121 baseline ->
test evaluation of each, with patient-level bootstrap CIs -> Grad-CAM localisation of the phantom boxes (ViT vs
DenseNet), MAE anomaly maps of planted nodules, example figures -> the Hub upload set and model card (dry run). Every
step is the real command a user runs (`cxr-vitmae ...`, `accelerate launch recipes/...`), so the demo walks the same
code as a run on real corpora."""

import argparse
import json
import os
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
    # `accelerate launch` pins every process to OMP_NUM_THREADS=1 unless told otherwise: one process gets every core.
    return [
        str(BIN / "accelerate"), "launch", "--num_processes", "1", "--num_machines", "1",
        "--num_cpu_threads_per_process", str(os.cpu_count() or 1),
        "--mixed_precision", "bf16", "--dynamo_backend", "no",
        f"recipes/{recipe}.py", "--config", f"recipes/configs/{config}.yaml", *flags,
    ]  # fmt: skip


def cli(*args: str) -> list[str]:
    return [str(BIN / "cxr-vitmae"), *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("demo_output"))
    parser.add_argument("--num-images", type=int, default=3000)
    parser.add_argument("--size", type=int, default=128, help="phantom image side (the models see 64 px crops)")
    args = parser.parse_args()
    out = args.output
    phantoms, pretrained = out / "phantoms", out / "mae-pretrain"
    classifiers = {"finetune-mae": "ViT, MAE pre-trained", "finetune-scratch": "ViT from scratch"}
    classifiers["finetune-densenet121"] = "DenseNet-121 from scratch"
    common = ["--data_dir", str(phantoms)]
    seconds = {}

    seconds["phantoms"] = run(
        "synthetic corpus in NIH ChestX-ray14's format",
        cli("phantoms", "--output", str(phantoms), "--num-images", str(args.num_images), "--size", str(args.size),
            "--seed", "0", "--difficulty", "easy"),
    )  # fmt: skip
    seconds["pre-training"] = run(
        "MAE pre-training", accelerate("pretrain", "demo_pretrain", *common, "--output_dir", str(pretrained))
    )
    seconds["fine-tuning (MAE init)"] = run(
        "fine-tuning from the MAE",
        accelerate("finetune", "demo_finetune", *common, "--model", str(pretrained),
                   "--output_dir", str(out / "finetune-mae")),
    )  # fmt: skip
    seconds["fine-tuning (scratch)"] = run(
        "fine-tuning from scratch, same budget",
        accelerate("finetune", "demo_finetune", *common, "--model", "vit-tiny",
                   "--model_overrides", "{patch_size: 8, num_hidden_layers: 6, classifier_init_std: 0.02}",
                   "--output_dir", str(out / "finetune-scratch")),
    )  # fmt: skip
    seconds["fine-tuning (DenseNet-121)"] = run(
        "the CNN baseline: DenseNet-121 from scratch",
        accelerate("finetune", "demo_finetune_densenet", *common, "--output_dir", str(out / "finetune-densenet121")),
    )

    # The paper's discussion points, measured on these models: Grad-CAM localisation of the phantom boxes (ViT vs
    # DenseNet) and MAE anomaly maps of planted nodules.
    explain = out / "explain"
    explain.mkdir(parents=True, exist_ok=True)
    for name in ("finetune-mae", "finetune-densenet121"):
        seconds[f"localize ({name})"] = run(
            f"Grad-CAM localisation of the phantom boxes: {classifiers[name]}",
            cli("localize", str(out / name), "--dataset", "nih-chestxray14", "--data-dir", str(phantoms),
                "--output", str(explain / f"localization-{name}.json")),
        )  # fmt: skip
    seconds["anomaly-eval"] = run(
        "MAE anomaly maps of planted nodules",
        cli("anomaly-eval", str(pretrained), "--data-dir", str(phantoms), "--num-images", "64", "--num-maskings", "8",
            "--output", str(explain / "anomaly.json")),
    )  # fmt: skip
    example = str(sorted((phantoms / "images").glob("*.png"))[0])
    for name, kind in (("finetune-mae", "vit"), ("finetune-densenet121", "densenet")):
        seconds[f"gradcam ({name})"] = run(
            f"Grad-CAM overlay of one phantom: {classifiers[name]}",
            cli("gradcam", str(out / name), example, "--output", str(explain / f"gradcam-{kind}.png")),
        )
    seconds["reconstruct"] = run(
        "MAE reconstruction and anomaly map of one phantom",
        cli("reconstruct", str(pretrained), example, "--output", str(explain / "reconstruction.png"),
            "--anomaly-maskings", "8"),
    )  # fmt: skip
    seconds["model card (dry run)"] = run(
        "the Hub upload set and model card, without uploading",
        cli("push", str(out / "finetune-mae"), "--repo-id", "cxr-vitmae/demo-vit-tiny-phantoms",
            "--dry-run", str(out / "hub-dry-run" / "finetune-mae")),
    )  # fmt: skip

    print("\nphantom test split, mean AUROC with 95 % patient-level bootstrap CI")
    summary = {}
    for name, description in classifiers.items():
        metrics = json.loads((out / name / "metrics.json").read_text())
        low, high = metrics["mean_auroc_ci95"]
        summary[name] = {"mean_auroc": metrics["mean_auroc"], "mean_auroc_ci95": [low, high]}
        print(f"  {description:28s} {metrics['mean_auroc']:.3f}  [{low:.3f}, {high:.3f}]  "
              f"({metrics['n_images']} images)")  # fmt: skip
    print("\nGrad-CAM on the phantom test boxes (threshold chosen on a held-out half of the patients)")
    for name in ("finetune-mae", "finetune-densenet121"):
        result = json.loads((explain / f"localization-{name}.json").read_text())
        summary[name]["localization"] = {key: result[key] for key in ("pointing_game", "mean_iou", "n_boxes")}
        print(f"  {classifiers[name]:28s} pointing game {result['pointing_game']:.3f}, mean IoU "
              f"{result['mean_iou']:.3f} ({result['n_boxes']} boxes)")  # fmt: skip
    anomaly = json.loads((explain / "anomaly.json").read_text())
    summary["anomaly"] = {key: anomaly[key] for key in ("hit_rate", "control_hit_rate", "chance_hit_rate", "n_images")}
    print(f"\nMAE anomaly map, {anomaly['n_images']} planted nodules: hit rate {anomaly['hit_rate']:.3f} (untouched "
          f"images {anomaly['control_hit_rate']:.3f}, chance {anomaly['chance_hit_rate']:.3f})")  # fmt: skip
    summary["seconds"] = seconds
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\ntotal {sum(seconds.values()):.0f} s; models, metrics.json, figures and the model card are in {out}/")


if __name__ == "__main__":
    main()
