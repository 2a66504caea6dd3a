"""The recipes' optimisation loop with a real Accelerator on CPU: it trains in training mode whatever mode the model
arrives in or validation leaves it in, and its epochs match Accelerate's steps under gradient accumulation."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from ports import free_port

from cxr_vitmae.evaluation.prediction import predict
from cxr_vitmae.training.loop import Schedule, train


class ModeRecorder(torch.nn.Module):
    """A regression whose forward records whether it ran in training mode."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        self.config = SimpleNamespace(problem_type="multi_label_classification")
        self.training_modes = []

    def forward(self, pixel_values, labels=None):
        self.training_modes.append(self.training)
        logits = self.linear(pixel_values)
        loss = None if labels is None else torch.nn.functional.mse_loss(logits, labels)
        return SimpleNamespace(loss=loss, logits=logits)


@pytest.fixture
def accelerator_factory():
    def make(accumulation: int) -> Accelerator:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        return Accelerator(cpu=True, gradient_accumulation_steps=accumulation)

    yield make
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def run_loop(accelerator: Accelerator, *, batches: int, epochs: int, model: torch.nn.Module, on_epoch_end, tmp_path):
    examples = [
        {"pixel_values": torch.randn(4), "labels": torch.rand(2), "index": torch.tensor(index)}
        for index in range(batches)
    ]
    loader = torch.utils.data.DataLoader(examples, batch_size=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    schedule = Schedule.plan(len(loader), accelerator.gradient_accumulation_steps, epochs, None, 0)
    # What the loop reads of a recipe's arguments: a fresh run, no checkpoints, one log record at the end.
    args = SimpleNamespace(
        output_dir=tmp_path, resume_from_checkpoint=None, checkpointing_steps=None, logging_steps=100
    )

    def hook(state, is_last):
        on_epoch_end(model, loader, state, is_last)

    state = train(accelerator, args, model, optimizer, scheduler, loader, schedule, hook)
    return schedule, state


def test_training_runs_in_training_mode_after_from_pretrained_and_validation(accelerator_factory, tmp_path):
    accelerator = accelerator_factory(1)
    model = ModeRecorder().eval()  # as from_pretrained returns it
    evaluated = []

    def validate(model, loader, state, is_last):
        evaluated.append(model.training)
        predict(accelerator, model, loader)  # eval mode inside, as validation runs
        model.eval()  # and a hook that leaves the model in eval mode must not matter either

    run_loop(accelerator, batches=6, epochs=3, model=model, on_epoch_end=validate, tmp_path=tmp_path)
    training_forwards = [mode for mode in model.training_modes if mode]
    assert len(training_forwards) == 18
    # Every forward either trained (18 batches) or was one of the validations' (6 images × 3 epochs, in eval mode).
    assert model.training_modes.count(False) == 18
    assert evaluated == [True, True, True]


def test_predict_leaves_the_model_in_the_mode_it_came_in(accelerator_factory):
    accelerator = accelerator_factory(1)
    model = ModeRecorder().train()
    loader = torch.utils.data.DataLoader(
        [{"pixel_values": torch.randn(4), "labels": torch.rand(2), "index": torch.tensor(i)} for i in range(3)]
    )
    predict(accelerator, model, loader)
    assert model.training and model.training_modes == [False, False, False]


def test_epochs_under_gradient_accumulation_match_accelerates_steps(accelerator_factory, tmp_path):
    # 25 batches with accumulation 2: Accelerate updates after batches 2, 4, ..., 24 and at the end of the pass.
    accelerator = accelerator_factory(2)
    model = ModeRecorder()
    epoch_ends = []
    schedule, state = run_loop(
        accelerator,
        batches=25,
        epochs=2,
        model=model,
        on_epoch_end=lambda model, loader, state, is_last: epoch_ends.append((state.epoch, is_last)),
        tmp_path=tmp_path,
    )
    assert (schedule.steps_per_epoch, schedule.total_steps) == (13, 26)
    assert (state.step, state.epoch, state.batches_in_epoch) == (26, 2, 0)
    assert len(model.training_modes) == 50  # both epochs complete
    assert epoch_ends == [(1, False), (2, True)]


@pytest.mark.slow
def test_a_non_finite_loss_on_one_process_stops_every_process(tmp_path):
    # Process 1's loss turns NaN at its third batch; process 0's stays finite. Both must stop with the error, where
    # a check on the local loss alone would leave process 0 waiting in the gradient all-reduce.
    script = tmp_path / "nan_on_one_process.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import torch
            from accelerate import Accelerator
            from test_training_loop import ModeRecorder, run_loop

            accelerator = Accelerator(cpu=True)

            class NaNOnProcessOne(ModeRecorder):
                def forward(self, pixel_values, labels=None):
                    output = super().forward(pixel_values, labels)
                    if accelerator.process_index == 1 and len(self.training_modes) == 3:
                        output.loss = output.loss * float("nan")
                    return output

            run_loop(accelerator, batches=8, epochs=1, model=NaNOnProcessOne(), on_epoch_end=lambda *a: None,
                     tmp_path={str(tmp_path)!r})
            """
        )
    )
    command = [
        str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
        "--dynamo_backend", "no", str(script),
    ]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode != 0
    assert result.stderr.count("NonFiniteLossError: non-finite loss") == 2, result.stderr[-3000:]
    assert "nan, one per process" in result.stderr


def test_a_training_split_smaller_than_one_batch_is_refused_before_training():
    """The loaders drop the last, incomplete batch: an epoch of no step would loop forever."""
    from types import SimpleNamespace

    from cxr_vitmae.errors import InputError
    from cxr_vitmae.training.setup import plan_schedule

    args = SimpleNamespace(per_device_train_batch_size=64, gradient_accumulation_steps=1, num_train_epochs=1.0,
                           max_train_steps=4, warmup_epochs=0.0)  # fmt: skip
    with pytest.raises(InputError, match="fewer images than one batch of --per_device_train_batch_size 64"):
        plan_schedule(args, 0)
    assert plan_schedule(args, 1).total_steps == 4


def test_a_validation_split_that_cannot_select_a_checkpoint_is_refused_before_training():
    import datasets

    from cxr_vitmae.errors import InputError
    from cxr_vitmae.training.setup import check_validation_selects

    nan = float("nan")
    unusable = datasets.Dataset.from_dict(
        {"labels": [[0.0, nan], [0.0, 1.0], [0.0, 1.0]], "patient_id": ["a", "b", "b"]}
    )
    with pytest.raises(InputError, match=r"validation split \(3 images of 2 patients\) has no class with both"):
        check_validation_selects(unusable, "csv")
    check_validation_selects(unusable.add_item({"labels": [1.0, nan], "patient_id": "c"}), "csv")
