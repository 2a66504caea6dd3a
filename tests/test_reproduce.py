"""`scripts/reproduce.py` end to end at its smoke scale: phantoms in two layouts -> the prepared pre-training union ->
MAE pre-training with snapshots and the crop-scale ablation -> every fine-tuning arm through `accelerate launch` ->
localisation and anomaly maps -> results.json, the table and the figure; then a second run resumes without redoing a
step; a CNN baseline added by name (`--cnn timm:resnet10t`) is fine-tuned and reported beside DenseNet-121. Also the
patient-level label fraction the study fine-tunes on."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import psutil
import pytest
from PIL import Image

from cxr_vitmae.data.phantoms import generate_phantoms
from cxr_vitmae.training.arguments import FinetuneArguments, parse_recipe_arguments
from cxr_vitmae.training.setup import patient_subset

ROOT = Path(__file__).resolve().parent.parent


def test_label_fraction_keeps_whole_patients_and_the_same_ones_for_every_seed():
    patients = [f"p{i // 3:03d}" for i in range(300)] + ["single"]  # 100 patients of 3 images, one of 1
    split = datasets.Dataset.from_dict({"patient_id": patients, "row": list(range(len(patients)))})
    subset = patient_subset(split, 0.1, seed=0)
    kept = set(subset["patient_id"])
    assert len(kept) == 10
    # Whole patients: every image of a kept patient is in, no other image is.
    assert sorted(subset["row"]) == [i for i, p in enumerate(patients) if p in kept]
    assert set(patient_subset(split, 0.1, seed=0)["patient_id"]) == kept
    assert set(patient_subset(split, 0.1, seed=1)["patient_id"]) != kept
    # A larger fraction with the same seed keeps a superset (a prefix of the same permutation).
    assert kept <= set(patient_subset(split, 0.5, seed=0)["patient_id"])
    assert len(patient_subset(split, 1e-6, seed=0)) >= 1


@pytest.mark.parametrize("fraction", ["0", "1.5", "-0.1"])
def test_label_fraction_outside_0_1_is_refused(fraction):
    with pytest.raises(ValueError, match="--label_fraction must be in"):
        parse_recipe_arguments(FinetuneArguments, ["--output_dir", "x", "--label_fraction", fraction])


def run_study(output: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "scripts/reproduce.py", "--profile", "smoke", "--seeds", "1", "--output", str(output),
               "--cnn", "timm:resnet10t"]  # fmt: skip
    # Generous: CI runs it beside another test worker on 2 cores; the limit is there to end a hung study.
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=2400)


@pytest.mark.slow
def test_study_end_to_end_and_resume(tmp_path):
    output = tmp_path / "study"
    first = run_study(output)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    results = json.loads((output / "results.json").read_text())

    # Every arm at every label fraction, plus the other MAE checkpoints and the ablation at the low fraction, each
    # from its own metrics.json; the seed-averaged CI brackets the mean.
    arms = {(s["arm"], s["fraction"]) for s in results["summaries"]}
    for arm in ("vit-mae", "vit-scratch", "densenet121", "timm-resnet10t"):
        assert {(arm, 0.5), (arm, 1.0)} <= arms
    assert ("vit-mae-crop0.5", 0.5) in arms
    snapshots = sorted((output / "pretrain" / "mae" / "snapshots").iterdir())
    assert [p.name for p in snapshots] and all((p / "config.json").is_file() for p in snapshots)
    # The profile's larger test share reached the generator (the smoke profile's 30 %, NIH's list 23 %).
    assert json.loads((output / "corpora" / "nih" / "cxr_vitmae_phantoms.json").read_text())["test_fraction"] == 0.3
    final = max(r["step"] for r in json.loads((output / "pretrain" / "mae" / "trainer_history.json").read_text()))
    candidates = {int(p.name.split("-")[1]): p for p in snapshots} | {final: output / "pretrain" / "mae"}

    # Each MAE checkpoint was fine-tuned once at the low fraction (seed 0): the curve's points; the one with the best
    # validation (read here from the runs' own histories) is the MAE arm's, whose own low-fraction runs take other
    # seeds than the one that chose it.
    candidate_runs = {
        step: output / "finetune" / f"vit-mae-step-{step}" / "fraction-0.5" / "seed-0" for step in candidates
    }
    validation = {
        step: max(
            r["val_mean_auroc"] for r in json.loads((run / "trainer_history.json").read_text()) if "val_mean_auroc" in r
        )
        for step, run in candidate_runs.items()
    }
    chosen = max(validation, key=validation.get)
    assert results["pretraining_choice"]["step"] == chosen
    assert results["pretraining_choice"]["validation"] == {str(k): v for k, v in validation.items()}
    for step, run in candidate_runs.items():
        arm = f"vit-mae-step-{step}"
        model = json.loads((run / "training_args.json").read_text())["model"]
        assert Path(model) == candidates[step]
        assert {"arm": arm, "fraction": 0.5, "seed": 0, "dir": str(run.relative_to(output))} in [
            {k: r[k] for k in ("arm", "fraction", "seed", "dir")} for r in results["runs"]
        ]
    assert sorted(r["seed"] for r in results["runs"] if (r["arm"], r["fraction"]) == ("vit-mae", 0.5)) == [1]
    assert sorted(r["seed"] for r in results["runs"] if (r["arm"], r["fraction"]) == ("vit-scratch", 0.5)) == [0]
    for run in (r for r in results["runs"] if r["arm"] in ("vit-mae", "vit-mae-crop0.5")):
        model = Path(json.loads((output / run["dir"] / "training_args.json").read_text())["model"])
        pretrained = "mae" if run["arm"] == "vit-mae" else "mae-crop0.5"
        assert model in (
            output / "pretrain" / pretrained,
            output / "pretrain" / pretrained / "snapshots" / f"step-{chosen}",
        )
        assert model.name == (f"step-{chosen}" if chosen != final else pretrained)
    peaks = {}
    for run in results["runs"]:
        metrics = json.loads((output / run["dir"] / "metrics.json").read_text())
        assert run["mean_auroc"] == metrics["mean_auroc"]
        args = json.loads((output / run["dir"] / "training_args.json").read_text())
        assert args["label_fraction"] == run["fraction"] and args["seed"] == run["seed"]
        assert run["mixed_precision"] == args["mixed_precision"] in ("no", "bf16")  # auto, resolved
        # The smoke profile's batch at 0.5, the YAMLs' (64) at 1.0; the same peak learning rate per arm at both.
        assert args["per_device_train_batch_size"] == (32 if run["fraction"] == 0.5 else 64)
        peaks.setdefault(run["arm"].split("-step-")[0].replace("-crop0.5", ""), []).append(args["peak_learning_rate"])
    assert peaks.keys() == {"vit-mae", "vit-scratch", "densenet121", "timm-resnet10t"}
    assert all(np.allclose(values, values[0], rtol=1e-9) for values in peaks.values()), peaks

    # The same step budget for every arm at a fraction (the recipes' own histories).
    for fraction, steps in ((0.5, 2), (1.0, 3)):
        for run in (r for r in results["runs"] if r["fraction"] == fraction):
            history = json.loads((output / run["dir"] / "trainer_history.json").read_text())
            assert max(record["step"] for record in history) == steps, run

    # Paired comparisons and the curve: step 0 is scratch, then every checkpoint by step, the MAE arm's at its step.
    pairs = {(c["a"], c["b"], c["fraction"]) for c in results["comparisons"]}
    assert {
        ("vit-mae", "vit-scratch", 0.5),
        ("vit-mae", "vit-scratch", 1.0),
        ("vit-mae", "vit-mae-crop0.5", 0.5),
        ("vit-mae", "timm-resnet10t", 1.0),  # at every fraction, unlike the ablation
        ("timm-resnet10t", "densenet121", 0.5),
        ("timm-resnet10t", "densenet121", 1.0),
    } <= pairs
    curve = results["pretraining_curve"]
    assert curve[0]["pretraining_steps"] == 0 and curve[0]["arm"] == "vit-scratch"
    assert [p["pretraining_steps"] for p in curve] == [0, *sorted(candidates)]
    assert [p["pretraining_steps"] for p in curve if p["chosen"]] == [chosen]
    assert f"| {chosen} (chosen) |" in (output / "results.md").read_text()
    for arm in ("vit-mae", "densenet121"):
        localization = results["explain"]["localization"][arm]
        assert 0 < localization["chance_pointing_game"] < 1
        low, high = localization["pointing_game_ci95"]
        assert low <= localization["pointing_game"] <= high and high - low > 0.05  # a few boxes: a wide interval
        assert results["targets"]["pointing_game_above_chance"][arm] == (low > localization["chance_pointing_game"])
    anomaly = results["explain"]["anomaly"]
    assert 0 < anomaly["chance_hit_rate"] < 1 and anomaly["hit_rate_ci95"][0] <= anomaly["hit_rate"]
    assert results["targets"]["anomaly_above_chance"] == (anomaly["hit_rate_ci95"][0] > anomaly["chance_hit_rate"])
    # What the pre-training learned, from the MAE's own history: every probe point (snapshots and the end) has both
    # encoders with CIs, and the held-out losses come with their trivial predictors.
    history = json.loads((output / "pretrain" / "mae" / "trainer_history.json").read_text())
    diagnostics = results["pretraining_diagnostics"]
    assert [p["step"] for p in diagnostics["probe"]] == [r["step"] for r in history if "probe_mean_auroc" in r]
    assert len(diagnostics["probe"]) == len(snapshots) + 1
    for point in diagnostics["probe"]:
        assert 0 <= point["probe_mean_auroc"] <= 1 and 0 <= point["probe_random_mean_auroc"] <= 1
        assert point["probe_random_mean_auroc_ci95"][0] <= point["probe_random_mean_auroc"]
        difference = point["probe_mean_auroc"] - point["probe_random_mean_auroc"]
        assert point["probe_minus_random"] == pytest.approx(difference)
    assert diagnostics["reconstruction"] and all(
        r["heldout_mean_image_loss"] > 0 for r in diagnostics["reconstruction"]
    )
    assert set(results["targets"]) == {
        "mae_beats_scratch_at_low_fraction",
        "probe_above_random_encoder",
        "anomaly_above_chance",
        "pointing_game_above_chance",
    }

    # The table carries every arm and the command; the figure has two readable panels.
    table = (output / "results.md").read_text()
    assert "ViT, MAE pre-trained" in table and "DenseNet-121 from scratch" in table and "--profile smoke" in table
    assert "timm:resnet10t from scratch" in table and "timm-resnet10t 100%" in table  # the summary and per-class tables
    assert "encoder probe at pre-training step" in table and "training mean image" in table
    precisions = ", ".join(sorted({run["mixed_precision"] for run in results["runs"]}))
    assert f"fine-tuning precision {precisions})" in table
    test_size = results["comparisons"][0]
    assert f"phantoms ({test_size['n_patients']:,} patients, {test_size['n_images']:,} images)" in table
    assert f"chosen on validation: step {chosen} " in table
    pair = ("vit-mae", "vit-scratch", 0.5)
    headline = next(c for c in results["comparisons"] if (c["a"], c["b"], c["fraction"]) == pair)
    mae_target = results["targets"]["mae_beats_scratch_at_low_fraction"]
    assert mae_target["difference_ci95"] == headline["difference_ci95"]
    assert mae_target["reached"] == (headline["difference_ci95"][0] > 0)
    probe_target = results["targets"]["probe_above_random_encoder"]
    last = diagnostics["probe"][-1]
    assert probe_target["step"] == final and probe_target["difference"] == last["probe_minus_random"]
    assert probe_target["reached"] == (last["probe_minus_random_ci95"][0] > 0)
    for point in diagnostics["probe"]:  # with the paired MAE-minus-random difference; below chance flagged
        assert f"| {point['probe_minus_random']:+.3f} | [" in table
        below = point["probe_mean_auroc_ci95"][1] < 0.5
        assert (f"| {point['probe_mean_auroc']:.3f} (below chance) |" in table) == below
    with Image.open(output / "reproduce.png") as figure:
        assert figure.width >= 3 * 384 and figure.height >= 384

    # A second run finds every step done and rewrites the same numbers.
    second = run_study(output)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "accelerate" not in second.stdout and second.stdout.count("done before") >= 10
    again = json.loads((output / "results.json").read_text())
    assert again["summaries"] == results["summaries"] and again["comparisons"] == results["comparisons"]
    assert np.isclose(again["run"]["seconds"]["pretrain mae"], results["run"]["seconds"]["pretrain mae"])
    # A step stopped after metrics.json but before its test predictions is not taken for done: a re-run redoes it.
    stopped = output / "finetune" / "vit-scratch" / "fraction-1" / "seed-0"
    (stopped / "test_predictions.npz").unlink()
    (stopped / "figures" / "roc_test.png").unlink()
    third = run_study(output)
    assert third.returncode == 0, third.stderr[-3000:]
    lines = third.stdout.splitlines()
    pairs = zip(lines, lines[1:], strict=False)  # a step that runs prints its command after its name
    redone = [line for line, after in pairs if line.startswith("==>") and after.startswith("$ ")]
    assert redone == ["==> finetune vit-scratch 1 seed 0"]
    assert (stopped / "test_predictions.npz").is_file()
    # Another profile does not continue it (its steps found done would mix two scales): one line, nothing run.
    command = [sys.executable, "scripts/reproduce.py", "--profile", "cpu", "--output", str(output)]
    other = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert other.returncode == 2 and "continue it with --profile smoke" in other.stderr.splitlines()[-1]
    assert "==>" not in other.stdout


@pytest.mark.slow
def test_a_stopped_study_stops_the_recipe_it_launched(tmp_path):
    output = tmp_path / "study"

    def processes(*words):  # every process whose command line holds the study's output and `words`
        return [
            p
            for p in psutil.process_iter(["cmdline"])
            if p.info["cmdline"] and all(w in " ".join(p.info["cmdline"]) for w in (str(output), *words))
        ]

    command = [sys.executable, "scripts/reproduce.py", "--profile", "smoke", "--output", str(output)]
    study = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not processes("recipes/pretrain.py") and study.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        recipes = processes("recipes/pretrain.py")
        assert recipes, "the pre-training recipe never started"
        study.send_signal(signal.SIGTERM)  # to the study's own process only, as `kill PID` does
        _, stderr = study.communicate(timeout=120)
        assert study.returncode != 0 and "stopped by signal" in stderr.splitlines()[-1]
        _, alive = psutil.wait_procs(recipes, timeout=60)
        assert not alive and not processes(), "a step of the stopped study is still running"
    finally:
        study.kill()
        for process in processes():
            process.kill()


def test_a_study_made_before_the_profile_changed_is_not_continued(tmp_path):
    """An output folder from an earlier version of the profile (no profile.json yet) says what it was made with in
    its corpus's phantom record; continuing it would mix two scales in one table."""
    corpus = tmp_path / "study" / "corpora" / "nih"
    generate_phantoms(corpus, 12, size=32, seed=0)  # not the smoke profile's 240 images at 64 px
    command = [sys.executable, "scripts/reproduce.py", "--profile", "smoke", "--output", str(tmp_path / "study")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "made with other settings of profile 'smoke'" in result.stderr.splitlines()[-1]
    assert "==>" not in result.stdout and not (tmp_path / "study" / "profile.json").exists()


@pytest.mark.parametrize("hits, trials", [(6, 96), (0, 4), (1, 25), (25, 25)])
def test_hit_rate_interval_is_wilsons(hits, trials):
    from scipy.stats import binomtest

    from cxr_vitmae.evaluation.study import _rate_ci

    reference = binomtest(hits, trials).proportion_ci(confidence_level=0.95, method="wilson")
    assert _rate_ci(hits / trials, trials) == pytest.approx([reference.low, reference.high], abs=1e-6)
    assert _rate_ci(0.0, 0) is None  # no boxes: no interval, and no claim above chance


def test_results_section_is_replaced_between_its_markers_only(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from results_section import RESULTS, update_results_section
    finally:
        sys.path.pop(0)
    # The scripts write into the results page, which README links to; README itself carries no generated section.
    assert RESULTS == ROOT / "docs" / "results.md"
    page = tmp_path / "results.md"
    page.write_text("# t\n\nbefore\n<!-- demo:start -->\nold table\n<!-- demo:end -->\nafter\n")
    update_results_section("demo", "| new | table |\n", page)
    assert page.read_text() == "# t\n\nbefore\n<!-- demo:start -->\n| new | table |\n<!-- demo:end -->\nafter\n"
    with pytest.raises(SystemExit, match="reproduce:start"):
        update_results_section("reproduce", "x", page)


def test_budget_flags_give_every_arm_the_same_steps_and_peak_learning_rate(phantom_corpus):
    """The study's and the demo's fine-tuning budget: the steps at a batch on a patient fraction, the epochs the
    recipe needs for them, and the base learning rate rescaled only where the batch is not the YAML's."""
    from cxr_vitmae.data import load_cxr_dataset

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from reproduce import budget_flags
    finally:
        sys.path.pop(0)
    corpus = phantom_corpus(60, size=32, seed=4)
    images = len(patient_subset(load_cxr_dataset("nih-chestxray14", corpus)["train"], 0.5, seed=0))
    config = {"per_device_train_batch_size": 8, "base_learning_rate": 1e-3}

    flags = dict(zip(*[iter(map(str, budget_flags(corpus, 0.5, 30, 4, config, seed=2)))] * 2, strict=True))
    epochs = 30 / (images // 4)
    assert flags["--max_train_steps"] == "30" and flags["--seed"] == "2" and flags["--label_fraction"] == "0.5"
    assert float(flags["--num_train_epochs"]) == pytest.approx(epochs, abs=1e-4)
    assert float(flags["--warmup_epochs"]) == pytest.approx(epochs / 10, abs=1e-4)
    assert flags["--per_device_train_batch_size"] == "4"
    # Peak = base x batch / 256 stays the YAML's.
    assert float(flags["--base_learning_rate"]) * 4 == pytest.approx(1e-3 * 8)

    same_batch = [str(flag) for flag in budget_flags(corpus, 0.5, 30, 8, config, seed=2)]
    assert "--base_learning_rate" not in same_batch and "--per_device_train_batch_size" not in same_batch


@pytest.mark.parametrize(
    "flags, code, message",
    [
        (["--seeds", "0"], 2, "expected at least 1, got 0"),
        (["--output", "FILE"], 2, "a file, not a directory"),
        (["--cnn", "timm:resnet10tx", "--output", "NEW"], 1, "'resnet10tx' is not a timm model"),
        (["--cnn", "densenet121", "--output", "NEW"], 1, "the study runs the arm 'densenet121' already"),
        (["--cnn", "timm:resnet18", "--cnn", "timm:resnet18", "--output", "NEW"], 1, "given twice"),
    ],
)
def test_wrong_study_flags_are_one_line_errors_before_any_step(tmp_path, flags, code, message):
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    paths = {"FILE": str(afile), "NEW": str(tmp_path / "study")}
    command = [sys.executable, "scripts/reproduce.py", *(paths.get(f, f) for f in flags)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == code and "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1] and not (tmp_path / "study").exists()
