"""The paper's findings at a scale anyone can run: a reproduction study on phantoms that mirrors its design.

    make reproduce                                    # 2 CPU cores, 32 min measured (bound 60) -> reproduce_output/
    python scripts/reproduce.py --profile cuda        # a larger scale on one GPU
    python scripts/reproduce.py --update-results      # also copy the table and figure into docs/results.md

Every step is the command a user runs on real corpora (`cxr-vitmae ...`, `accelerate launch recipes/...`), one YAML
per arm in `recipes/configs/reproduce/` (every value that departs from the paper is marked "ours" there):
1. Corpora: NIH-layout phantoms (the fine-tuning corpus: official-style splits, boxes) and CheXpert-layout phantoms
   of another seed. `pretrain-0.3m` unions NIH train + CheXpert train (frontal), as the paper's 0.3M does, prepared
   once; the union's builder refuses any NIH validation or test patient, so the fine-tuning test patients never
   enter pre-training.
2. MAE pre-training on the pool (mask ratio 0.90, crop scale 0.2-1: chosen on validation, ours), saving snapshots
   along the way, with the recipe's diagnostics (held-out loss, encoder probe against a random encoder); the
   ablation pre-trains the same model on the same schedule with the paper's crop scale 0.5-1 (the paper's
   comparison of 0.5-1 against ImageNet's 0.2-1, the other way round).
3. AUROC against pre-training steps: the ViT fine-tuned (seed 0, low label fraction) from every snapshot and the
   final MAE. The checkpoint whose run scores the best validation mean AUROC becomes the MAE arm's (pre-training
   length chosen on validation, like any checkpoint); the arm's own runs take other seeds.
4. Fine-tuning with the same number of steps (and batch) for every arm: the ViT from the chosen MAE checkpoint, the
   same ViT from scratch, and DenseNet-121 from scratch, on 10 % and 100 % of the training patients (the same
   patients for every arm and seed). The headline pair (the two ViTs at 10 %) runs every seed; the profile may give
   the other runs fewer. The recipe selects the checkpoint on validation and evaluates test once.
5. The ablation's MAE, at the chosen step, fine-tuned at the low label fraction.
6. The discussion points: Grad-CAM box localisation (ViT last LayerNorm vs DenseNet last dense block) and MAE
   anomaly maps of planted nodules, each against its chance rate.
7. `results.json`, `results.md` (the table) and `reproduce.png` (the figure), from the runs' own metrics.json and
   test predictions (paired patient-level bootstrap of differences).

Re-running continues an interrupted study: a step whose output is complete is not run again (to redo one, delete its
output and that of every step made from it: the steps downstream are not redone by themselves). Only the profile the
study started with continues it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import yaml
from results_section import RESULTS, add_update_results_flag, machine, positive_int, update_results_section

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CONFIGS = ROOT / "recipes" / "configs" / "reproduce"
NIH = "nih-chestxray14"


@dataclass(frozen=True)
class Profile:
    """The study's scale: corpus sizes, pre-training length, fine-tuning budget, seeds."""

    nih_images: int
    pool_images: int  # CheXpert-layout phantoms added to NIH train in the pre-training union
    phantom_size: int
    pretrain_epochs: int
    # Pre-training snapshots (the ablation's too), each fine-tuned for the curve and a candidate for the MAE arm's
    # checkpoint with the final model.
    snapshots: int
    finetune_steps: dict  # label fraction -> optimiser steps, the same for every arm
    seeds: int
    anomaly_images: int
    nodule_scale: float  # planted nodules' radii x this, so that they span a few pixels at the model's 64 px
    launch: tuple[str, ...]  # `accelerate launch` flags
    # At most this many held-out and probe images for the pre-training diagnostics (None: the YAML's).
    probe_images: int | None = None
    # Share of the NIH-layout phantoms whose patients are the test list (`phantoms --test-fraction`; None: NIH's).
    test_fraction: float | None = None
    # label fraction -> per-device batch of every arm there (None: each YAML's), the base learning rate scaled with
    # it so that the peak rate (base x batch / 256) stays the YAML's.
    finetune_batch: dict | None = None
    # Seeds of every run but the headline pair (the ViT from the MAE and from scratch at the low fraction), which
    # gets `seeds` (None: every run gets `seeds`).
    side_seeds: int | None = None

    def probe_flags(self) -> list:
        if self.probe_images is None:
            return []
        return ["--diagnostic_images", self.probe_images, "--probe_train_images", self.probe_images,
                "--probe_eval_images", self.probe_images]  # fmt: skip


CPU_LAUNCH = (
    # One process with every core: `accelerate launch` would otherwise pin it to one thread. Precision is left to the
    # recipe's `--mixed_precision auto`, which takes bf16 only where the CPU has it natively: emulated, on an EPYC
    # without AVX512-BF16, the demo's MAE step ran at 0.2 steps/s against 5 in float32.
    "--num_processes", "1", "--num_machines", "1", "--num_cpu_threads_per_process", str(os.cpu_count() or 1),
    "--mixed_precision", "no", "--dynamo_backend", "no",
)  # fmt: skip
GPU_LAUNCH = ("--num_processes", "1", "--num_machines", "1", "--mixed_precision", "bf16", "--dynamo_backend", "no")
PROFILES = {
    # Sized to finish in at most 60 minutes on 2 CPU cores (32 measured, at the speed docs/results.md gives). 60 % of
    # the NIH-layout phantoms are test patients (NIH's list: 23 %), leaving about the 2,300 images to train and
    # validate on that the study had with 3,000: on 210 test patients a paired difference of 0.03 had a 95 % CI of
    # +-0.03; about 1,000 narrow it to about +-0.015, at the cost of evaluation only (ours). The
    # fine-tuning budget at 10 % is the one under which the sweep (docs/results.md) found the MAE ahead of scratch
    # (400 steps; at 100 steps every ViT stayed at chance), at batch 32 to fit the hour; three seeds for the headline
    # pair, one for every other run and for each snapshot (another 400-step run each).
    # 48 pre-training epochs (about 3,300 steps) with a snapshot every 8: the linear probe rose above a random
    # encoder's only late on 3,000 phantoms (+0.048 [+0.005, +0.084] at the end, paired), while the ViT fine-tuned
    # from an early checkpoint scored best on validation (8 epochs: 0.611, 0.576, 0.616; 48: 0.598, 0.534, 0.572;
    # docs/results.md), so the study fine-tunes every snapshot once and lets validation choose.
    "cpu": Profile(
        nih_images=5800, pool_images=3000, phantom_size=128, pretrain_epochs=48, snapshots=5,
        finetune_steps={0.1: 400, 1.0: 160}, finetune_batch={0.1: 32, 1.0: 32}, seeds=3, side_seeds=1,
        anomaly_images=96, nodule_scale=2.5, launch=CPU_LAUNCH, test_fraction=0.6,
    ),
    # One GPU: 7-8x the corpora, a longer pre-training and fine-tuning. Not run by us yet (no GPU was lent).
    "cuda": Profile(
        nih_images=20000, pool_images=24000, phantom_size=128, pretrain_epochs=200, snapshots=4,
        finetune_steps={0.1: 400, 1.0: 1600}, seeds=5, anomaly_images=256, nodule_scale=2.5, launch=GPU_LAUNCH,
    ),
    # Minutes, for the tests: every step of the study on a few hundred images.
    "smoke": Profile(
        nih_images=240, pool_images=160, phantom_size=64, pretrain_epochs=2, snapshots=1,
        finetune_steps={0.5: 2, 1.0: 3}, finetune_batch={0.5: 32}, seeds=2, anomaly_images=4, nodule_scale=2.5,
        launch=CPU_LAUNCH, probe_images=32, test_fraction=0.3,
    ),
}  # fmt: skip
ARMS = {
    "vit-mae": ("finetune_vit_mae.yaml", "ViT, MAE pre-trained (crop scale 0.2-1)"),
    "vit-scratch": ("finetune_vit_scratch.yaml", "ViT from scratch"),
    "densenet121": ("finetune_densenet121.yaml", "DenseNet-121 from scratch"),
}
# The ablation: the same ViT fine-tuned from the MAE pre-trained with the paper's crop scale 0.5-1.
ABLATION_ARM = "vit-mae-crop0.5"


def cnn_arms(models: list[str]) -> dict[str, tuple[str, str, str]]:
    """`--cnn` baselines (e.g. `timm:resnet18`): arm name -> (config, description, `--model`). Each runs DenseNet-121's
    YAML (same budget, batch, learning rate, augmentation) with its own model."""
    from huggingface_hub.errors import StrictDataclassError

    from cxr_vitmae.model_families import family_for_preset

    arms = {}
    for model in models:
        name = model.replace(":", "-").replace("/", "-")  # timm:densenet121 -> timm-densenet121, not DenseNet's arm
        if name in ARMS or name.startswith("vit-mae"):
            raise SystemExit(f"--cnn {model}: the study runs the arm {name!r} already; --cnn adds other models")
        if name in arms:
            raise SystemExit(f"--cnn {model}: given twice (arm {name!r}); give each model once")
        family = family_for_preset(model)
        if family is not None:  # a name its family does not know fails now, not when its run starts an hour on
            try:
                family.new_config(model)
            except (ValueError, StrictDataclassError) as error:  # the configuration's own validation
                raise SystemExit(f"--cnn {model}: {error.__cause__ or error}") from error
        start = "from scratch" if family else "from its weights"
        arms[name] = (ARMS["densenet121"][0], f"{model} {start}", model)
    return arms


def run(step: str, command: list[str], log: Path) -> float:
    """Run one step (a CLI command or a recipe launch), its output in `log`; the error names the log."""
    print(f"==> {step}\n$ {' '.join(command)}", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w") as stream:
        # In its own process group, so that an interrupted study (Ctrl-C, or a SIGTERM to this process alone) stops
        # the whole step, the recipe that `accelerate launch` started included, instead of leaving it training.
        process = subprocess.Popen(command, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode = process.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):  # the step may have ended meanwhile
                os.killpg(process.pid, signal.SIGTERM)
            process.wait()
            raise
    seconds = time.perf_counter() - start
    if returncode:
        raise SystemExit(f"{step} failed (exit {returncode}); its output: {log}")
    print(f"[{seconds:.0f} s]", flush=True)
    return seconds


def _stop(signum, frame) -> None:
    """SIGTERM ends the study as Ctrl-C does: the running step's process group is stopped (`run`)."""
    raise SystemExit(f"stopped by signal {signum}; a re-run continues the study")


def cli(*args: str) -> list[str]:
    return [str(BIN / "cxr-vitmae"), *map(str, args)]


def launch(profile: Profile, recipe: str, config: str, *flags) -> list[str]:
    return [str(BIN / "accelerate"), "launch", *profile.launch, f"recipes/{recipe}.py",
            "--config", str(CONFIGS / config), *map(str, flags)]  # fmt: skip


@functools.cache
def training_images(data_dir: Path, fraction: float) -> int:
    """How many training images the fine-tuning recipe will see at `fraction` (the recipe's own subset)."""
    from cxr_vitmae.data import load_cxr_dataset
    from cxr_vitmae.training.setup import patient_subset

    train = load_cxr_dataset(NIH, data_dir)["train"]
    return len(train if fraction >= 1 else patient_subset(train, fraction, seed=0))


def budget_flags(data_dir: Path, fraction: float, steps: int, batch: int, config: dict, seed: int) -> list:
    """Recipe flags for one fine-tuning budget, the same for every arm: `steps` optimiser steps at `batch` on
    `fraction` of the training patients of the NIH-layout corpus in `data_dir` (the peak learning rate stays the
    YAML `config`'s), warmup over the first tenth, about six validations (the recipe keeps the best on validation)."""
    steps_per_epoch = max(1, training_images(data_dir, fraction) // batch)  # the recipe drops the last partial batch
    epochs = steps / steps_per_epoch
    flags = ["--label_fraction", fraction, "--seed", seed, "--max_train_steps", steps,
             "--num_train_epochs", f"{epochs:.4f}", "--warmup_epochs", f"{0.1 * epochs:.4f}",
             "--eval_every_epochs", max(1, math.floor(epochs / 6))]  # fmt: skip
    if batch != config["per_device_train_batch_size"]:
        base = config["base_learning_rate"] * config["per_device_train_batch_size"] / batch
        flags += ["--per_device_train_batch_size", batch, "--base_learning_rate", f"{base:g}"]
    return flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("reproduce_output"),
                        help="the study's directory; a re-run continues it (default: %(default)s)")  # fmt: skip
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--seeds", type=positive_int, default=None,
                        help="fine-tuning seeds of the two ViTs at the low fraction (default: the profile's); every "
                             "other run gets at most the profile's side seeds")  # fmt: skip
    parser.add_argument("--cnn", action="append", default=[], metavar="MODEL",
                        help="a further CNN arm beside DenseNet-121, any recipe --model (e.g. timm:resnet18); "
                             "repeatable")  # fmt: skip
    add_update_results_flag(parser, "copy the table and figure into docs/results.md")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    extra_cnns = cnn_arms(args.cnn)
    profile = PROFILES[args.profile]
    if args.seeds is not None:
        profile = replace(profile, seeds=args.seeds)
    if args.output.exists() and not args.output.is_dir():
        parser.error(f"--output {args.output}: a file, not a directory")
    out = args.output.resolve()
    # A re-run continues the study only with the profile it was started with (more seeds or CNNs only add runs):
    # steps found done would otherwise mix two scales in one table.
    started_with = out / "profile.json"
    settings = json.loads(json.dumps({"name": args.profile, **asdict(replace(profile, seeds=None))}))
    recorded = json.loads(started_with.read_text()) if started_with.exists() else settings
    if recorded["name"] != settings["name"]:
        parser.error(f"--output {args.output} holds a study of profile {recorded['name']!r} ({started_with}): "
                     f"continue it with --profile {recorded['name']}, or give another --output")  # fmt: skip
    from cxr_vitmae.data.phantoms import phantom_record

    corpus = phantom_record(out / "corpora" / "nih")  # a study from before profile.json was kept says it here
    made = corpus and (corpus["num_images"], corpus.get("test_fraction"), corpus["size"])
    if recorded != settings or made not in (None, (profile.nih_images, profile.test_fraction, profile.phantom_size)):
        parser.error(f"--output {args.output} holds a study made with other settings of profile {args.profile!r} "
                     "(the profile has changed since): give another --output")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    started_with.write_text(json.dumps(settings, indent=2) + "\n")
    corpora, logs = out / "corpora", out / "logs"
    nih, pool = corpora / "nih", corpora / "pool-prepared"
    mae, ablation = out / "pretrain" / "mae", out / "pretrain" / "mae-crop0.5"
    # Seconds per step, kept across invocations (an interrupted study resumes): results report the whole study.
    timings = out / "timings.json"
    seconds: dict[str, float] = json.loads(timings.read_text()) if timings.exists() else {}
    started = time.perf_counter()

    def step(name: str, done: Path, command: list[str]) -> None:
        if done.exists():
            print(f"==> {name}: done before ({done.relative_to(out)})", flush=True)
            return
        seconds[name] = run(name, command, logs / f"{name.replace(' ', '_').replace('/', '_')}.log")
        timings.write_text(json.dumps(seconds, indent=2) + "\n")

    # 1. Corpora, and the prepared pre-training union.
    # Medium difficulty, as the sweep that chose the fine-tuning budget (docs/results.md; ours).
    phantoms = ("--size", profile.phantom_size, "--difficulty", "medium")
    step("phantoms nih", nih / "cxr_vitmae_phantoms.json",
         cli("phantoms", "--output", nih, "--num-images", profile.nih_images, "--seed", 0, *phantoms,
             *(("--test-fraction", profile.test_fraction) if profile.test_fraction else ())))  # fmt: skip
    step("phantoms chexpert", corpora / "chexpert" / "cxr_vitmae_phantoms.json",
         cli("phantoms", "--layout", "chexpert", "--output", corpora / "chexpert", "--num-images",
             profile.pool_images, "--seed", 1, *phantoms))  # fmt: skip
    step("prepare pool", pool / "cxr_vitmae_prepared.json",
         cli("prepare", "pretrain-0.3m", "--data-dir", corpora, "--output", pool, "--size", profile.phantom_size,
             "--num-proc", min(4, os.cpu_count() or 1)))  # fmt: skip

    # 2. MAE pre-training with snapshots, and the crop-scale ablation on the same schedule with the same snapshots.
    # At most `snapshots` before the end: 10 epochs and 2 snapshots save at 4 and 8 (every 3 would save 3).
    snapshot_every = max(1, math.ceil(profile.pretrain_epochs / (profile.snapshots + 1)))
    # The probe of the encoder (at snapshots and the end) reads the NIH-layout phantoms, the fine-tuning corpus.
    # A recipe's step is done once the last file the recipe writes exists: one stopped part-way leaves the files it
    # wrote earlier (the model before its history; metrics.json before the test predictions), which a re-run must not
    # take for a finished step.
    for name, directory, crop in (("mae", mae, ()), ("mae-crop0.5", ablation, ("--crop_scale_min", 0.5))):
        step(f"pretrain {name}", directory / "figures" / "training_curves.png",
             launch(profile, "pretrain", "pretrain_mae.yaml", "--data_dir", pool, "--output_dir", directory,
                    "--probe_data_dir", nih, *profile.probe_flags(), "--num_train_epochs", profile.pretrain_epochs,
                    "--snapshot_every_epochs", snapshot_every, *crop,
                    "--reconstruction_every_epochs", profile.pretrain_epochs))  # fmt: skip

    fractions = sorted(profile.finetune_steps)
    low = fractions[0]
    runs = []
    side_seeds = min(profile.seeds, profile.side_seeds or profile.seeds)

    def finetune(arm: str, config: str, fraction: float, seed: int, *model_flags) -> Path:
        run_dir = out / "finetune" / arm / f"fraction-{fraction:g}" / f"seed-{seed}"
        settings = yaml.safe_load((CONFIGS / config).read_text())
        batch = (profile.finetune_batch or {}).get(fraction, settings["per_device_train_batch_size"])
        budget = budget_flags(nih, fraction, profile.finetune_steps[fraction], batch, settings, seed)
        step(f"finetune {arm} {fraction:g} seed {seed}", run_dir / "figures" / "roc_test.png",
             launch(profile, "finetune", config, "--output_dir", run_dir, *model_flags,
                    "--data_dir", nih, *budget))  # fmt: skip
        return run_dir

    def record(arm: str, fraction: float, seed: int, run_dir: Path) -> None:
        runs.append({"arm": arm, "fraction": fraction, "seed": seed, "dir": str(run_dir.relative_to(out))})

    # 3. Every MAE checkpoint fine-tuned once at the low fraction (the curve); validation picks the MAE arm's.
    from cxr_vitmae.evaluation.study import best_validation_auroc

    checkpoints = _checkpoints(mae)
    candidate_runs = {
        steps: finetune(f"vit-mae-step-{steps}", ARMS["vit-mae"][0], low, 0, "--model", checkpoint)
        for steps, checkpoint in sorted(checkpoints.items())
    }
    validation = {steps: best_validation_auroc(run_dir) for steps, run_dir in candidate_runs.items()}
    chosen = max(validation, key=validation.get)  # the earliest of equals
    choice = {"step": chosen, "fraction": low, "validation": {str(k): v for k, v in validation.items()}}
    print(f"==> the MAE arm fine-tunes from pre-training step {chosen} (validation {validation[chosen]:.3f})")
    for steps, run_dir in candidate_runs.items():
        record(f"vit-mae-step-{steps}", low, 0, run_dir)
    chosen_ablation = _checkpoints(ablation).get(chosen)
    if chosen_ablation is None:
        raise SystemExit(f"{ablation}: the ablation has no checkpoint at the chosen step {chosen}")

    # 4-5. Every arm x label fraction x seed; then the ablation at the chosen step. At the low fraction the MAE arm
    # takes seeds 1 to `seeds`: seed 0 chose its checkpoint, and a run picked for its validation score would carry
    # its luck into the test comparison.
    models = {"vit-mae": ("--model", checkpoints[chosen]), "vit-scratch": (), "densenet121": ()}
    arms = {**{arm: (config, models[arm]) for arm, (config, _) in ARMS.items()},
            **{arm: (config, ("--model", model)) for arm, (config, _, model) in extra_cnns.items()}}  # fmt: skip

    def seeds_of(arm: str, fraction: float) -> range:
        if fraction == low and arm == "vit-mae":
            return range(1, profile.seeds + 1)
        return range(profile.seeds if fraction == low and arm == "vit-scratch" else side_seeds)

    for fraction in reversed(fractions):
        for arm, (config, model_flags) in arms.items():
            for seed in seeds_of(arm, fraction):
                record(arm, fraction, seed, finetune(arm, config, fraction, seed, *model_flags))
    for seed in range(side_seeds):
        record(ABLATION_ARM, low, seed,
               finetune(ABLATION_ARM, ARMS["vit-mae"][0], low, seed, "--model", chosen_ablation))  # fmt: skip

    # 6. The discussion points, on the full-label seed-0 models.
    explain = out / "explain"
    explain.mkdir(parents=True, exist_ok=True)
    full = f"fraction-{fractions[-1]:g}/seed-0"
    for arm in ("vit-mae", "densenet121"):
        step(f"localize {arm}", explain / f"localization-{arm}.json",
             cli("localize", out / "finetune" / arm / full, "--dataset", NIH, "--data-dir", nih,
                 "--output", explain / f"localization-{arm}.json"))  # fmt: skip
    step("anomaly-eval", explain / "anomaly.json",
         cli("anomaly-eval", mae, "--data-dir", nih, "--num-images", profile.anomaly_images, "--num-maskings", 8,
             "--nodule-scale", profile.nodule_scale, "--output", explain / "anomaly.json"))  # fmt: skip

    # 7. Results, table, figure.
    from cxr_vitmae.evaluation.study import plot_study, study_markdown, summarize_study

    results = summarize_study(
        out,
        runs,
        arms={
            **{arm: label for arm, (_, label) in ARMS.items()},
            "vit-mae": f"{ARMS['vit-mae'][1]}, step {chosen} (chosen on validation)",
            **{arm: label for arm, (_, label, _) in extra_cnns.items()},
            ABLATION_ARM: f"ViT, MAE with the paper's crop scale 0.5-1 (step {chosen})",
        },
        baselines=tuple(extra_cnns),
        snapshot_steps={f"vit-mae-step-{steps}": steps for steps in checkpoints},
        mae_steps=chosen,
        pretraining_history=json.loads((mae / "trainer_history.json").read_text()),
        explain={
            "localization": {
                arm: json.loads((explain / f"localization-{arm}.json").read_text())
                for arm in ("vit-mae", "densenet121")
            },
            "anomaly": json.loads((explain / "anomaly.json").read_text()),
        },  # fmt: skip
    )
    results["pretraining_choice"] = choice
    results["run"] = {
        # When the last step finished (timings.json is rewritten after each), not when this summary was made.
        "date": datetime.fromtimestamp(
            timings.stat().st_mtime if timings.exists() else time.time(), timezone.utc
        ).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join(["python", "scripts/reproduce.py", *sys.argv[1:]]),
        "profile": {"name": args.profile, **asdict(profile)},
        "seconds": seconds,
        "wall_seconds_this_invocation": time.perf_counter() - started,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    plot_study(results, out / "reproduce.png")
    table = study_markdown(results, figure="reproduce.png")
    (out / "results.md").write_text(table)
    print("\n" + table)
    if args.update_results:
        _update_results(table, out / "reproduce.png")


def _checkpoints(model_dir: Path) -> dict[int, Path]:
    """A pre-training run's checkpoints by step: its snapshots and its final model."""
    snapshots = {int(path.name.split("-")[1]): path for path in (model_dir / "snapshots").glob("step-*")}
    return {**snapshots, _pretraining_steps(model_dir): model_dir}


def _pretraining_steps(model_dir: Path) -> int:
    history = json.loads((model_dir / "trainer_history.json").read_text())
    return max(int(record["step"]) for record in history if "step" in record)


RESULTS_FIGURE = RESULTS.parent / "figures" / "reproduce.png"


def _update_results(table: str, figure: Path) -> None:
    """The results page's reproduction section becomes this run's table, with the figure copied into docs/figures/
    (linked relative to the page)."""
    RESULTS_FIGURE.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(figure, RESULTS_FIGURE)
    link = RESULTS_FIGURE.relative_to(RESULTS.parent).as_posix()
    update_results_section("reproduce", table.replace("](reproduce.png)", f"]({link})"))


if __name__ == "__main__":
    main()
