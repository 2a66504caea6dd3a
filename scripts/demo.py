"""The main job, end to end on the synthetic phantom corpus, on a CPU: phantoms in NIH's format -> MAE pre-training
of a small ViT -> fine-tuning from it -> fine-tuning from scratch with the same budget -> a DenseNet-121 baseline ->
test evaluation of each, with patient-level bootstrap CIs -> Grad-CAM localisation of the phantom boxes (ViT vs
DenseNet), MAE anomaly maps of planted nodules, example figures -> the Hub upload set and model card (dry run). Every
step is the real command a user runs (`cxr-vitmae ...`, `accelerate launch recipes/...`), so the demo walks the same
code as a run on real corpora."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml
from reproduce import PROFILES, budget_flags, cnn_arms
from results_section import add_update_results_flag, machine, update_results_section

from cxr_vitmae.evaluation.comparison import paired_auroc_difference
from cxr_vitmae.evaluation.prediction import PREDICTIONS_FILE, load_predictions

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
    # Precision as the study's (`reproduce.CPU_LAUNCH`): the recipe's `auto`, bf16 only where it is native.
    return [
        str(BIN / "accelerate"), "launch", "--num_processes", "1", "--num_machines", "1",
        "--num_cpu_threads_per_process", str(os.cpu_count() or 1),
        "--mixed_precision", "no", "--dynamo_backend", "no",
        f"recipes/{recipe}.py", "--config", f"recipes/configs/{config}.yaml", *flags,
    ]  # fmt: skip


def cli(*args: str) -> list[str]:
    return [str(BIN / "cxr-vitmae"), *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("demo_output"))
    parser.add_argument("--num-images", type=int, default=3000)
    parser.add_argument("--size", type=int, default=128, help="phantom image side (the models see 64 px crops)")
    parser.add_argument("--cnn", action="append", default=[], metavar="MODEL",
                        help="a further CNN baseline beside DenseNet-121, any recipe --model (e.g. timm:resnet18), "
                             "fine-tuned with DenseNet-121's settings; repeatable")  # fmt: skip
    add_update_results_flag(parser, "put the results table into docs/results.md")
    args = parser.parse_args()
    out = args.output
    phantoms, pretrained = out / "phantoms", out / "mae-pretrain"
    classifiers = {"finetune-mae": "ViT, MAE pre-trained", "finetune-scratch": "ViT from scratch"}
    classifiers["finetune-densenet121"] = "DenseNet-121 from scratch"
    # The study's naming and descriptions (timm:resnet18 -> timm-resnet18, "from scratch" or "from its weights").
    extra_cnns = {}
    for name, (_, label, model) in cnn_arms(args.cnn).items():
        extra_cnns[f"finetune-{name}"], classifiers[f"finetune-{name}"] = model, label
    # The recipes read the prepared copy (decoded once, netpbm in Arrow); localisation and anomaly maps the corpus.
    prepared = out / "phantoms-prepared"
    common = ["--data_dir", str(prepared)]
    explain, dry_run = out / "explain", out / "hub-dry-run"
    # A fresh run every time: what an earlier run left would be refused (a prepared copy of files since rewritten, a
    # non-empty dry-run directory) or resumed by the recipes. Only the names the demo itself writes are removed.
    for path in (phantoms, prepared, pretrained, *(out / name for name in classifiers), explain, dry_run):
        shutil.rmtree(path, ignore_errors=True)
    seconds = {}

    seconds["phantoms"] = run(
        "synthetic corpus in NIH ChestX-ray14's format",
        cli("phantoms", "--output", str(phantoms), "--num-images", str(args.num_images), "--size", str(args.size),
            "--seed", "0", "--difficulty", "medium"),
    )  # fmt: skip
    seconds["prepare"] = run(
        "the prepared copy the recipes read",
        cli("prepare", "nih-chestxray14", "--data-dir", str(phantoms), "--output", str(prepared), "--size",
            str(args.size)),
    )  # fmt: skip
    # The study's fine-tuning budget at its low label fraction (the `cpu` profile of scripts/reproduce.py), where it
    # measured the MAE ahead of scratch: 400 steps at batch 32 on 10 % of the training patients, for every model.
    study = PROFILES["cpu"]
    fraction = min(study.finetune_steps)
    steps, batch = study.finetune_steps[fraction], study.finetune_batch[fraction]

    def budget(config: str) -> list[str]:
        settings = yaml.safe_load((ROOT / "recipes" / "configs" / f"{config}.yaml").read_text())
        return [str(flag) for flag in budget_flags(phantoms, fraction, steps, batch, settings, seed=0)]

    seconds["pre-training"] = run(
        "MAE pre-training", accelerate("pretrain", "demo_pretrain", *common, "--output_dir", str(pretrained))
    )
    seconds["fine-tuning (MAE init)"] = run(
        "fine-tuning from the MAE",
        accelerate("finetune", "demo_finetune", *common, *budget("demo_finetune"), "--model", str(pretrained),
                   "--output_dir", str(out / "finetune-mae")),
    )  # fmt: skip
    seconds["fine-tuning (scratch)"] = run(
        "fine-tuning from scratch, same budget",
        accelerate("finetune", "demo_finetune", *common, *budget("demo_finetune"), "--model", "vit-tiny",
                   "--model_overrides", "{patch_size: 8, num_hidden_layers: 6, classifier_init_std: 0.02}",
                   "--output_dir", str(out / "finetune-scratch")),
    )  # fmt: skip
    seconds["fine-tuning (DenseNet-121)"] = run(
        "the CNN baseline: DenseNet-121 from scratch",
        accelerate("finetune", "demo_finetune_densenet", *common, *budget("demo_finetune_densenet"),
                   "--output_dir", str(out / "finetune-densenet121")),
    )  # fmt: skip
    for name, model in extra_cnns.items():
        seconds[f"fine-tuning ({model})"] = run(
            f"a further CNN baseline: {model} from scratch, DenseNet-121's settings",
            accelerate("finetune", "demo_finetune_densenet", *common, *budget("demo_finetune_densenet"),
                       "--model", model, "--output_dir", str(out / name)),
        )  # fmt: skip

    # The paper's discussion points, measured on these models: Grad-CAM localisation of the phantom boxes (ViT vs
    # DenseNet) and MAE anomaly maps of planted nodules.
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
            "--dry-run", str(dry_run / "finetune-mae")),
    )  # fmt: skip

    summary = {"run": {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                       "command": " ".join(["python", "scripts/demo.py", *sys.argv[1:]])}}  # fmt: skip
    for name, description in classifiers.items():
        metrics = json.loads((out / name / "metrics.json").read_text())
        summary[name] = {key: metrics[key] for key in ("mean_auroc", "mean_auroc_ci95", "n_images")}
        summary[name]["description"] = description
    # The paper's comparison, paired: both ViTs scored on the same draws of test patients.
    difference = paired_auroc_difference(
        [load_predictions(out / "finetune-mae" / PREDICTIONS_FILE)],
        [load_predictions(out / "finetune-scratch" / PREDICTIONS_FILE)],
    )
    summary["mae_minus_scratch"] = {key: difference[key] for key in ("difference", "difference_ci95", "p_value")}
    for name in ("finetune-mae", "finetune-densenet121"):
        result = json.loads((explain / f"localization-{name}.json").read_text())
        keys = ("pointing_game", "chance_pointing_game", "mean_iou", "n_boxes")
        summary[name]["localization"] = {key: result[key] for key in keys}
    anomaly = json.loads((explain / "anomaly.json").read_text())
    summary["anomaly"] = {key: anomaly[key] for key in ("hit_rate", "control_hit_rate", "chance_hit_rate", "n_images")}
    summary["classifiers"] = list(classifiers)
    summary["seconds"] = seconds
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    report = demo_report(summary)
    print("\n" + report)
    print(f"models, metrics.json, figures and the model card are in {out}/")
    if args.update_results:
        update_results_section("demo", report)


def demo_report(summary: dict) -> str:
    """The demo's results as Markdown, every number from `summary` (demo_summary.json): what the demo prints and
    what `--update-results` puts into docs/results.md."""
    run, seconds = summary["run"], summary["seconds"]
    lines = [
        f"Measured {run['date']} on {run['machine']}: `{run['command']}`, {sum(seconds.values()):.0f} s of steps.",
        "",
        "| model | phantom test mean AUROC | 95 % CI (patient bootstrap) | Grad-CAM pointing game (chance) | boxes |",
        "|---|---|---|---|---|",
    ]
    for name in summary["classifiers"]:
        model = summary[name]
        low, high = model["mean_auroc_ci95"]
        loc = model.get("localization")
        pointing = f"{loc['pointing_game']:.3f} ({loc['chance_pointing_game']:.3f})" if loc else "—"
        boxes = str(loc["n_boxes"]) if loc else "—"
        lines.append(f"| {model['description']} | {model['mean_auroc']:.3f} | {low:.3f} – {high:.3f} | {pointing} | "
                     f"{boxes} |")  # fmt: skip
    difference = summary["mae_minus_scratch"]
    low, high = difference["difference_ci95"]
    anomaly = summary["anomaly"]
    lines += [
        "",
        f"- MAE pre-trained minus scratch (paired patient bootstrap on the same test images): "
        f"{difference['difference']:+.3f} [{low:+.3f}, {high:+.3f}], one-sided p = {difference['p_value']:.3f}.",
        f"- MAE anomaly map, {anomaly['n_images']} planted nodules: hit rate {anomaly['hit_rate']:.3f} (untouched "
        f"images {anomaly['control_hit_rate']:.3f}, chance {anomaly['chance_hit_rate']:.3f}).",
        "- Seconds per step: " + ", ".join(f"{step} {value:.0f}" for step, value in seconds.items()) + ".",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
