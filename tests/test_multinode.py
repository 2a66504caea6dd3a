"""The fine-tuning recipe (recipes/finetune.py) across two machines: two `accelerate launch --num_machines 2` launchers,
one per "machine", meet on loopback, and their tiny fine-tune ends with the weights of one machine running two
processes. This is the README's "On a cluster" command, with 127.0.0.1 as the main machine."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ports import free_port
from safetensors.torch import load_file
from test_recipes import ROOT, assert_same_numbers, finetune_command

pytestmark = pytest.mark.slow  # two machines of processes on loopback

BIN = Path(sys.executable).parent
# Gloo processes on CPU: `--multi_gpu` with ACCELERATE_USE_CPU (`--cpu` would silently run one process).
LAUNCH_ENV = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
TIMEOUT_S = 600


def launch(corpus: Path, output_dir: Path, *launcher_flags: str) -> list[str]:
    """`accelerate launch` of a tiny fine-tune: float32, one epoch (five steps of 2 x 8 images), a checkpoint at
    step 3."""
    return [
        str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--mixed_precision", "no",
        "--dynamo_backend", "no", *launcher_flags, *finetune_command(corpus, output_dir)[1:],
        "--num_train_epochs", "1", "--mixed_precision", "no", "--checkpointing_steps", "3",
    ]  # fmt: skip


def run_together(commands: list[list[str]], logs: Path, envs: list[dict[str, str]] | None = None) -> list[str]:
    """Start every command at once (each a "machine"), wait for all of them, and return their stdouts; a failure or
    a timeout shows every machine's log tail. Each launcher leads its own process group, so that a hung rendezvous
    is ended with its torchrun workers."""
    files, processes = [], []
    for rank, (command, env) in enumerate(zip(commands, envs or [{}] * len(commands), strict=True)):
        out, err = open(logs / f"machine{rank}.out", "w"), open(logs / f"machine{rank}.err", "w")  # noqa: SIM115
        files += [out, err]
        env = {**LAUNCH_ENV, **env}
        processes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True))
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while any(process.poll() is None for process in processes) and time.monotonic() < deadline:
            # One machine failing leaves the other waiting on it until the collective times out: stop early.
            if any(process.poll() not in (None, 0) for process in processes):
                break
            time.sleep(0.2)
    finally:
        running = [process for process in processes if process.poll() is None]
        for process in running:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for file in files:
            file.close()
    if running or any(process.returncode != 0 for process in processes):
        tails = "\n".join(
            f"--- machine {rank} (exit {process.returncode}), {stream}:\n"
            + (logs / f"machine{rank}.{stream}").read_text()[-3000:]
            for rank, process in enumerate(processes)
            for stream in ("out", "err")
        )
        what = f"still running after {TIMEOUT_S} s" if time.monotonic() >= deadline else "failed (-9: killed here)"
        raise AssertionError(f"a launcher {what}\n{tails}")
    return [(logs / f"machine{rank}.out").read_text() for rank in range(len(commands))]


def test_two_machines_on_loopback_train_the_weights_of_one_machine_with_two_processes(phantoms, tmp_path):
    started = time.monotonic()
    one, two = tmp_path / "one-machine", tmp_path / "two-machines"
    (one_log := tmp_path / "one-log").mkdir()
    (two_log := tmp_path / "two-log").mkdir()

    # (a) One machine, two processes.
    (single,) = run_together(
        [launch(phantoms, one, "--num_machines", "1", "--main_process_port", str(free_port()))], one_log
    )
    # (b) Two machines of one process each, both started now, meeting at machine 0's address and port. Each has its
    # own datasets cache, as on machines with their own disks (output_dir is shared: see README, "On a cluster").
    port = str(free_port())
    machines = [
        launch(phantoms, two, "--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
               "--main_process_port", port)
        for rank in (0, 1)
    ]  # fmt: skip
    caches = [{"HF_DATASETS_CACHE": str(tmp_path / f"datasets-cache-{rank}")} for rank in (0, 1)]
    main, other = run_together(machines, two_log, caches)

    # Both really ran two processes: each machine's local main process prints the banner with the world size (two
    # launches that fell back to one process each would print "1 process(es)"), and machine 1's process is rank 1:
    # the final line, printed by the global main process only, comes from machine 0.
    for banner in (single, main, other):
        assert "2 process(es) × 8 per device × 1 accumulation = global batch 16" in banner
    assert '{"split_source"' in main and '{"split_source"' not in other
    for cache in caches:  # each machine built its own copy of the corpus
        assert any(Path(cache["HF_DATASETS_CACHE"]).rglob("dataset_info.json"))
    for run in (one, two):
        assert json.loads((run / "training_args.json").read_text())["global_batch_size"] == 16
        # Every process, on either machine, saved its random state into the checkpoints in the shared output_dir.
        checkpoints = sorted((run / "checkpoints").glob("step-*"))
        states = [sorted(path.name for path in checkpoint.glob("random_states_*")) for checkpoint in checkpoints]
        assert checkpoints and all(names == ["random_states_0.pkl", "random_states_1.pkl"] for names in states), states
        assert json.loads((run / "metrics.json").read_text())["n_images"] > 0

    reference, multinode = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert reference.keys() == multinode.keys()
    differences = {key: (reference[key] - multinode[key]).abs().max().item() for key in reference}
    worst = max(differences, key=differences.get)
    print(f"max |weight difference| {differences[worst]:.3g} ({worst}) over {len(reference)} tensors; "
          f"{time.monotonic() - started:.0f} s for both runs")  # fmt: skip
    assert differences[worst] <= 1e-6, (worst, differences[worst])
    # The same model, evaluated the same way, gives the same test metrics.
    assert_same_numbers(
        json.loads((two / "metrics.json").read_text()), json.loads((one / "metrics.json").read_text()), tolerance=1e-6
    )
