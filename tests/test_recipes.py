"""The Accelerate recipes, run as a user runs them: real processes, a real SIGKILL, real `accelerate launch`."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from model_helpers import assert_readable_png
from ports import free_port
from safetensors.torch import load_file

from cxr_vitmae.data import load_cxr_dataset
from cxr_vitmae.data.phantoms import phantom_record
from cxr_vitmae.training.arguments import FinetuneArguments, PretrainArguments, parse_recipe_arguments
from cxr_vitmae.training.setup import native_bf16_supported, resolve_mixed_precision

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TINY = "{patch_size: 8, num_hidden_layers: 2}"


def finetune_command(phantoms: Path, output_dir: Path, *flags: str) -> list[str]:
    return [
        sys.executable, "recipes/finetune.py", "--data_dir", str(phantoms), "--output_dir", str(output_dir),
        "--model", "vit-tiny", "--model_overrides", TINY, "--image_size", "32", "--per_device_train_batch_size", "8",
        "--per_device_eval_batch_size", "16", "--num_train_epochs", "3", "--n_bootstrap", "20", "--logging_steps", "1",
        "--base_learning_rate", "1e-3", "--warmup_epochs", "0.5", "--seed", "3",
        "--dataset_options", "{validation_fraction: 0.3}", *flags,
    ]  # fmt: skip


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def cpu_has_native_bf16() -> bool:
    """From the kernel's CPU flags, independently of torch: AVX512-BF16 or AMX-BF16."""
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").is_file() else []
    return "avx512_bf16" in flags or "amx_bf16" in flags


@pytest.mark.slow
def test_finetune_selects_on_validation_and_evaluates_test_once(phantoms, tmp_path):
    result = run(finetune_command(phantoms, tmp_path / "run"))
    # The default precision is the fastest native one, and training_args.json records what ran, not "auto".
    if not torch.cuda.is_available() and Path("/proc/cpuinfo").is_file():
        expected = "bf16" if cpu_has_native_bf16() else "no"
        assert f"mixed precision {expected}" in result.stdout
        assert json.loads((tmp_path / "run" / "training_args.json").read_text())["mixed_precision"] == expected
    history = json.loads((tmp_path / "run" / "trainer_history.json").read_text())
    validations = [record for record in history if "val_mean_auroc" in record]
    assert [record["epoch"] for record in validations] == [1, 2, 3]
    tests = [record for record in history if record.get("event") == "test"]
    selected = [record for record in validations if record.get("selected")][-1]
    assert len(tests) == 1 and tests[0]["checkpoint"] == f"epoch-{selected['epoch']}"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    test_split = load_cxr_dataset("nih-chestxray14", phantoms, validation_fraction=0.3)["test"]
    assert metrics["split"] == "test" and metrics["n_images"] == len(test_split)
    assert metrics["selected_by"] == "validation mean_auroc"
    training_args = json.loads((tmp_path / "run" / "training_args.json").read_text())
    assert metrics["synthetic_corpus"] == training_args["synthetic_corpus"] == phantom_record(phantoms) is not None
    assert set(metrics["per_class"]) == set(json.loads((tmp_path / "run" / "config.json").read_text())["label2id"])
    for name in ("roc_test.png", "training_curves.png"):
        assert_readable_png(tmp_path / "run" / "figures" / name)

    # One evaluation path: `cxr-vitmae evaluate` on the saved model gives the recipe's test metrics, by default (the
    # bootstrap settings come from the recipe's metrics.json), and prints them named and rounded.
    assert metrics["precision"] == "float32" and metrics["bootstrap"]["n_resamples"] == 20
    evaluated = tmp_path / "evaluated.json"
    printed = run([str(BIN / "cxr-vitmae"), "evaluate", str(tmp_path / "run"), "--dataset", "nih-chestxray14",
                   "--data-dir", str(phantoms), "--option", "validation_fraction=0.3",
                   "--output", str(evaluated)])  # fmt: skip
    assert_same_numbers(json.loads(evaluated.read_text()), metrics, tolerance=1e-6)
    low, high = metrics["mean_auroc_ci95"]
    assert f"mean AUROC {metrics['mean_auroc']:.4f} [{low:.4f}, {high:.4f}]" in printed.stdout
    assert metrics["split_source"] == "test_list.txt, the official test list"


def assert_same_numbers(evaluated, recorded, *, tolerance: float, where: str = "metrics") -> None:
    """The two metrics.json contents agree: floats to `tolerance`, everything else exactly, except where the model
    came from (`selected_by`, `checkpoint`)."""
    if isinstance(recorded, dict):
        ignored = {"selected_by", "checkpoint"} if where == "metrics" else set()
        assert evaluated.keys() - ignored == recorded.keys() - ignored, where
        for key in recorded.keys() - ignored:
            assert_same_numbers(evaluated[key], recorded[key], tolerance=tolerance, where=f"{where}.{key}")
    elif isinstance(recorded, list):
        assert len(evaluated) == len(recorded), where
        for index, (one, other) in enumerate(zip(evaluated, recorded, strict=True)):
            assert_same_numbers(one, other, tolerance=tolerance, where=f"{where}[{index}]")
    elif isinstance(recorded, float):
        assert abs(evaluated - recorded) <= tolerance, (where, evaluated, recorded)
    else:
        assert evaluated == recorded, (where, evaluated, recorded)


@pytest.mark.parametrize(
    "data_path",
    [
        (),
        # The crop and flip on the training device, two loader workers that persist across epochs.
        ("--augment_on", "accelerator", "--dataloader_num_workers", "2", "--crop_scale_min", "0.3"),
    ],
    ids=["cpu-augmentation", "device-augmentation"],
)
@pytest.mark.slow
def test_sigkill_and_resume_gives_bit_identical_weights(phantoms, tmp_path, data_path):
    flags = ("--checkpointing_steps", "3", "--max_train_steps", "14", *data_path)
    if data_path:  # RandAugment has no device version; a YAML null is how a config turns it off
        (tmp_path / "no_randaugment.yaml").write_text("auto_augment: null\n")
        flags += ("--config", str(tmp_path / "no_randaugment.yaml"))
    run(finetune_command(phantoms, tmp_path / "straight", *flags))
    recorded = json.loads((tmp_path / "straight" / "training_args.json").read_text())
    assert recorded["augment_on"] == ("accelerator" if data_path else "cpu")

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        finetune_command(phantoms, interrupted, *flags), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoint = interrupted / "checkpoints" / "step-00000006"
    deadline = time.time() + 300
    while not (checkpoint / "trainer_state.json").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed after a checkpoint"
    assert not (interrupted / "model.safetensors").exists()

    run(finetune_command(phantoms, interrupted, *flags, "--resume_from_checkpoint", "latest"))
    straight, resumed = (
        load_file(tmp_path / "straight" / "model.safetensors"),
        load_file(interrupted / "model.safetensors"),
    )
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert json.loads((tmp_path / "straight" / "metrics.json").read_text()) == json.loads(
        (interrupted / "metrics.json").read_text()
    )


@pytest.mark.slow
def test_two_cpu_processes_count_every_image_once(phantoms, tmp_path):
    command = [
        str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--main_process_port", str(free_port()),
        "--mixed_precision", "bf16", "--dynamo_backend", "no", *finetune_command(phantoms, tmp_path / "ddp")[1:],
        "--num_train_epochs", "1",
    ]  # fmt: skip
    result = run(command, env={**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"})
    assert "2 process(es) × 8 per device" in result.stdout
    # The launcher's precision reaches the recipe (the recipe's own --mixed_precision defaults to auto).
    assert "mixed precision bf16" in result.stdout
    history = json.loads((tmp_path / "ddp" / "trainer_history.json").read_text())
    splits = load_cxr_dataset("nih-chestxray14", phantoms, validation_fraction=0.3)
    validations = [record["n_validation_images"] for record in history if "n_validation_images" in record]
    assert validations == [len(splits["validation"])]
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["n_images"] == len(splits["test"])


@pytest.mark.slow
def test_every_process_draws_its_own_random_stream(tmp_path):
    # MAE masking and drop path draw from the process's generator: two processes must not repeat each other.
    script = tmp_path / "draw.py"
    script.write_text(
        "import sys, torch\n"
        "from cxr_vitmae.training.arguments import FinetuneArguments\n"
        "from cxr_vitmae.training.setup import make_accelerator\n"
        f"accelerator = make_accelerator(FinetuneArguments(output_dir={str(tmp_path)!r}, seed=3))\n"
        "draw = torch.rand(4).tolist()\n"
        "open(f'{sys.argv[1]}/rank{accelerator.process_index}.txt', 'w').write(repr(draw))\n"
    )
    command = [
        str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--main_process_port", str(free_port()),
        "--mixed_precision", "no", "--dynamo_backend", "no", str(script), str(tmp_path),
    ]  # fmt: skip
    run(command, env={**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"})
    first, second = ((tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1))
    assert first != second


@pytest.mark.slow
def test_torch_compile_through_the_launcher(phantoms, tmp_path):
    """`accelerate launch --dynamo_backend inductor`: the recipe trains the compiled model and saves, reloads and
    evaluates the model under it (Accelerate's unwrap_model keeps the compile wrapper unless told otherwise)."""
    command = [
        str(BIN / "accelerate"), "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "inductor", *finetune_command(phantoms, tmp_path / "compiled")[1:],
        "--num_train_epochs", "1", "--checkpointing_steps", "5",
    ]  # fmt: skip
    run(command)
    saved = load_file(tmp_path / "compiled" / "model.safetensors")
    checkpoint = load_file(next((tmp_path / "compiled" / "checkpoints").glob("step-*")) / "model.safetensors")
    assert saved.keys() == checkpoint.keys() and not any("_orig_mod" in key for key in saved)
    assert json.loads((tmp_path / "compiled" / "metrics.json").read_text())["n_images"] > 0


@pytest.mark.slow
def test_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(phantoms, tmp_path):
    command = finetune_command(phantoms, tmp_path / "diverge", "--learning_rate", "1e25", "--checkpointing_steps", "1")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "non-finite loss" in result.stderr and "Last good checkpoint" in result.stderr
    checkpoints = sorted((tmp_path / "diverge" / "checkpoints").glob("step-*"))
    assert checkpoints and all((path / "trainer_state.json").is_file() for path in checkpoints)
    weights = load_file(checkpoints[0] / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())


def test_mixed_precision_auto_resolution(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert resolve_mixed_precision("no") == "no" and resolve_mixed_precision("fp16") == "fp16"
    native = resolve_mixed_precision("auto")
    assert native == ("bf16" if native_bf16_supported() else "no")
    if not torch.cuda.is_available() and Path("/proc/cpuinfo").is_file():
        assert native_bf16_supported() == cpu_has_native_bf16()
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")  # what `accelerate launch --mixed_precision fp16` sets
    assert resolve_mixed_precision("auto") == "fp16" and resolve_mixed_precision("no") == "no"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert resolve_mixed_precision("auto") == native


def test_yaml_gives_defaults_and_flags_override(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("output_dir: out\nmodel: densenet121\ndataset_options: {views: [PA]}\nlayer_decay: null\n")
    args = parse_recipe_arguments(FinetuneArguments, ["--config", str(config), "--learning_rate", "0.01"])
    assert (args.output_dir, args.model, args.layer_decay, args.learning_rate) == ("out", "densenet121", None, 0.01)
    assert args.options() == {"views": ["PA"]}
    config.write_text("output_dir: out\nlearnig_rate: 1\n")
    with pytest.raises(SystemExit):
        parse_recipe_arguments(FinetuneArguments, ["--config", str(config)])


@pytest.mark.parametrize("config", sorted((ROOT / "recipes" / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_recipe_config_parses(config):
    recipe = (
        PretrainArguments
        if config.stem.endswith("pretrain") or config.stem.startswith("pretrain")
        else (FinetuneArguments)
    )
    args = parse_recipe_arguments(recipe, ["--config", str(config)])
    assert args.options() is not None and args.overrides() is not None


def test_paper_recipe_values():
    pretrain = parse_recipe_arguments(
        PretrainArguments, ["--config", str(ROOT / "recipes/configs/pretrain_vits_0.3m.yaml")]
    )
    assert (pretrain.mask_ratio, pretrain.crop_scale_min, pretrain.num_train_epochs, pretrain.warmup_epochs) == (
        0.9,
        0.5,
        800,
        40,
    )
    assert (pretrain.base_learning_rate, pretrain.adam_beta2, pretrain.weight_decay) == (1.5e-4, 0.95, 0.05)
    finetune = parse_recipe_arguments(
        FinetuneArguments, ["--config", str(ROOT / "recipes/configs/finetune_vits_nih.yaml")]
    )
    assert (finetune.layer_decay, finetune.drop_path, finetune.auto_augment) == (0.55, 0.2, "rand-m6-mstd0.5-inc1")
    assert (finetune.base_learning_rate, finetune.min_learning_rate, finetune.num_train_epochs) == (2.5e-4, 1e-5, 75)
