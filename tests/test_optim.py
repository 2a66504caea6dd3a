"""Parameter groups (weight-decay split, layer-wise lr decay), the MAE lr scaling rule and the warmup + cosine
schedule, checked against hand computations and the closed-form MAE formula."""

import io
import math
import re

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState

from cxr_vitmae import (
    CXRDenseNetConfig,
    CXRViTMAEConfig,
    CXRViTMAEForPreTraining,
    DenseNetForChestXray,
    ViTMAEForChestXray,
)
from cxr_vitmae.training.optim import (
    cosine_schedule_with_warmup,
    parameter_groups,
    scaled_learning_rate,
    supports_layer_decay,
    warmup_cosine_learning_rate,
)

DECAY = 0.55
WEIGHT_DECAY = 0.05


def tiny_vit_config(**overrides) -> CXRViTMAEConfig:
    return CXRViTMAEConfig.from_preset(
        "vit-tiny",
        **{
            "image_size": 32,
            "patch_size": 16,
            "num_hidden_layers": 3,
            "hidden_size": 32,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "decoder_hidden_size": 32,
            "decoder_num_attention_heads": 2,
            "decoder_intermediate_size": 64,
            "num_labels": 3,
            **overrides,
        },
    )


def tiny_classifier() -> ViTMAEForChestXray:
    torch.manual_seed(0)
    return ViTMAEForChestXray(tiny_vit_config())


def tiny_densenet() -> DenseNetForChestXray:
    return DenseNetForChestXray(CXRDenseNetConfig(growth_rate=8, block_config=(2, 2), num_labels=3))


def by_name(groups: list[dict]) -> dict[str, dict]:
    """parameter name → its group; fails if a name appears twice."""
    seen: dict[str, dict] = {}
    for group in groups:
        assert len(group["params"]) == len(group["param_names"]) > 0
        for name in group["param_names"]:
            assert name not in seen, f"{name} is in two groups"
            seen[name] = group
    return seen


def hand_scale(name: str) -> float:
    """L = 3: embeddings 0.55^4, block 0 0.55^3, block 1 0.55^2, block 2 0.55, fc_norm / classifier 1."""
    if name.startswith("vit.embeddings."):
        return DECAY**4
    for block, power in ((0, 3), (1, 2), (2, 1)):
        if name.startswith(f"vit.layers.{block}."):
            return DECAY**power
    assert name.startswith(("fc_norm.", "classifier.")), name
    return 1.0


def test_scaled_learning_rate():
    assert scaled_learning_rate(1.5e-4, 2048) == 1.2e-3
    assert scaled_learning_rate(2.5e-4, 1024) == pytest.approx(1e-3, rel=1e-15)
    with pytest.raises(ValueError):
        scaled_learning_rate(1e-4, 0)


def test_layer_decay_scales_for_every_vit_parameter():
    model = tiny_classifier()
    assert supports_layer_decay(model)
    groups = parameter_groups(model, weight_decay=WEIGHT_DECAY, layer_decay=DECAY)
    assigned = by_name(groups)
    assert set(assigned) == {name for name, _ in model.named_parameters()}
    for name, group in assigned.items():
        assert group["lr_scale"] == pytest.approx(hand_scale(name), rel=1e-12), name
    # Readable, distinct group names, one (layer, decay) pair each, ordered embeddings → head.
    names = [group["name"] for group in groups]
    assert len(set(names)) == len(names)
    assert names[0].startswith("layer_0_") and names[-1].startswith("layer_4_")
    assert assigned["classifier.weight"]["name"] == "layer_4_decay"
    assert assigned["vit.layers.1.mlp.fc1.weight"]["name"] == "layer_2_decay"
    assert assigned["vit.embeddings.cls_token"]["name"] == "layer_0_no_decay"
    assert [group["layer_id"] for group in groups] == sorted(group["layer_id"] for group in groups)


def test_weight_decay_split_on_the_classifier():
    model = tiny_classifier()
    assigned = by_name(parameter_groups(model, weight_decay=WEIGHT_DECAY, layer_decay=DECAY))
    # By hand: biases, every LayerNorm weight, the (trainable, fine-tuned) position table and the CLS token.
    no_decay = re.compile(
        r"\.bias$|(layernorm_before|layernorm_after|fc_norm)\.weight$|^vit\.embeddings\.(cls_token|position_embeddings)$"
    )
    for name, param in model.named_parameters():
        expected = 0.0 if no_decay.search(name) else WEIGHT_DECAY
        assert assigned[name]["weight_decay"] == expected, name
        if param.ndim == 1:
            assert expected == 0.0, name
    assert assigned["vit.embeddings.patch_embeddings.projection.weight"]["weight_decay"] == WEIGHT_DECAY
    assert assigned["classifier.weight"]["weight_decay"] == WEIGHT_DECAY


def test_pretraining_model_leaves_frozen_tables_out_and_has_no_layer_decay():
    model = CXRViTMAEForPreTraining(tiny_vit_config())
    groups = parameter_groups(model, weight_decay=WEIGHT_DECAY)
    assert [group["name"] for group in groups] == ["decay", "no_decay"]
    assert all(group["lr_scale"] == 1.0 for group in groups)
    assigned = by_name(groups)
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert set(assigned) == trainable
    assert "vit.embeddings.position_embeddings" not in assigned
    assert "decoder.decoder_pos_embed" not in assigned
    # The original pre-training's timm `add_weight_decay` without a skip list: only biases and norm weights are
    # exempt; the CLS and mask tokens (3-D) are decayed, unlike in fine-tuning.
    no_decay = re.compile(r"\.bias$|(layernorm_before|layernorm_after|vit\.layernorm|decoder_norm)\.weight$")
    for name in trainable:
        assert assigned[name]["weight_decay"] == (0.0 if no_decay.search(name) else WEIGHT_DECAY), name
    assert assigned["vit.embeddings.cls_token"]["weight_decay"] == WEIGHT_DECAY
    assert assigned["decoder.mask_token"]["weight_decay"] == WEIGHT_DECAY


def test_densenet_gets_no_layer_decay():
    model = tiny_densenet()
    assert not supports_layer_decay(model)
    groups = parameter_groups(model, weight_decay=WEIGHT_DECAY)
    assert [group["name"] for group in groups] == ["decay", "no_decay"]
    assert all(group["lr_scale"] == 1.0 for group in groups)
    assigned = by_name(groups)
    assert set(assigned) == {name for name, _ in model.named_parameters()}
    for name, param in model.named_parameters():
        # Convolutions and the linear classifier decay; BatchNorm weights and all biases do not.
        assert assigned[name]["weight_decay"] == (WEIGHT_DECAY if param.ndim > 1 else 0.0), name
    with pytest.raises(ValueError, match="layer_decay=None"):
        parameter_groups(model, weight_decay=WEIGHT_DECAY, layer_decay=DECAY)


def test_groups_feed_adamw_and_keep_their_keys():
    groups = parameter_groups(tiny_classifier(), weight_decay=WEIGHT_DECAY, layer_decay=DECAY)
    optimizer = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95))
    for group, original in zip(optimizer.param_groups, groups, strict=True):
        assert group["name"] == original["name"]
        assert group["lr_scale"] == original["lr_scale"]
        assert group["weight_decay"] == original["weight_decay"]


def closed_form(step: int, warmup: int, total: int, base_lr: float, min_lr: float) -> float:
    """MAE util/lr_sched.py::adjust_learning_rate with `epoch` = optimizer-update index."""
    if step < warmup:
        return base_lr * step / warmup
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def run_schedule(optimizer, scheduler, steps: int) -> list[list[float]]:
    """The lrs of every group used by updates 0 … steps-1 (the lr in force when optimizer.step() runs)."""
    history = []
    for _ in range(steps):
        history.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return history


@pytest.mark.parametrize("min_lr", [0.0, 1e-5])
def test_schedule_values_at_chosen_steps_for_every_group(min_lr):
    warmup, total, base_lr = 10, 50, 1e-3
    groups = parameter_groups(tiny_classifier(), weight_decay=WEIGHT_DECAY, layer_decay=DECAY)
    optimizer = torch.optim.AdamW(groups, lr=123.0)  # the scheduler, not this lr, sets the groups' lrs
    scheduler = cosine_schedule_with_warmup(
        optimizer, warmup_steps=warmup, total_steps=total, base_lr=base_lr, min_lr=min_lr
    )
    history = run_schedule(optimizer, scheduler, total + 1)
    scales = [group["lr_scale"] for group in optimizer.param_groups]
    assert len(set(scales)) == 5
    for step in (0, 5, warmup, 30, total - 1, total):
        expected = closed_form(step, warmup, total, base_lr, min_lr)
        assert history[step] == pytest.approx([expected * scale for scale in scales], rel=1e-12, abs=1e-20), step
    assert history[0] == [0.0] * len(scales)
    assert history[warmup] == pytest.approx([base_lr * scale for scale in scales], rel=1e-12)
    assert history[total] == pytest.approx([min_lr * scale for scale in scales], rel=1e-12, abs=1e-20)
    # The public closed form agrees, and the schedule stays at min_lr past the end instead of rising again.
    assert warmup_cosine_learning_rate(
        30, warmup_steps=warmup, total_steps=total, base_lr=base_lr, min_lr=min_lr
    ) == pytest.approx(closed_form(30, warmup, total, base_lr, min_lr), rel=1e-15)
    history += run_schedule(optimizer, scheduler, 5)
    assert history[-1] == pytest.approx([min_lr * scale for scale in scales], rel=1e-12, abs=1e-20)


def test_schedule_without_warmup_and_validation():
    optimizer = torch.optim.AdamW(parameter_groups(tiny_densenet(), weight_decay=WEIGHT_DECAY), lr=1.0)
    scheduler = cosine_schedule_with_warmup(optimizer, warmup_steps=0, total_steps=4, base_lr=2e-3, min_lr=1e-4)
    history = run_schedule(optimizer, scheduler, 5)
    for step in range(5):
        assert history[step] == pytest.approx([closed_form(step, 0, 4, 2e-3, 1e-4)] * 2, rel=1e-12)
    for bad in (
        {"warmup_steps": 5, "total_steps": 4, "base_lr": 1e-3},
        {"warmup_steps": -1, "total_steps": 4, "base_lr": 1e-3},
        {"warmup_steps": 0, "total_steps": 4, "base_lr": 1e-3, "min_lr": 2e-3},
    ):
        with pytest.raises(ValueError):
            cosine_schedule_with_warmup(optimizer, **bad)


def make_run(seed: int = 0):
    torch.manual_seed(seed)
    model = ViTMAEForChestXray(tiny_vit_config())
    optimizer = torch.optim.AdamW(parameter_groups(model, weight_decay=WEIGHT_DECAY, layer_decay=DECAY), lr=1.0)
    scheduler = cosine_schedule_with_warmup(optimizer, warmup_steps=4, total_steps=12, base_lr=1e-3, min_lr=1e-5)
    return model, optimizer, scheduler


def test_scheduler_state_dict_round_trip_resumes_identically():
    _, optimizer, scheduler = make_run()
    uninterrupted = run_schedule(optimizer, scheduler, 13)

    _, optimizer, scheduler = make_run()
    first_half = run_schedule(optimizer, scheduler, 6)
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=False)

    _, optimizer, scheduler = make_run()  # fresh objects, as after a restart
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    assert scheduler.get_last_lr() == uninterrupted[6]
    assert first_half + run_schedule(optimizer, scheduler, 7) == uninterrupted


@pytest.fixture
def fresh_accelerate_state():
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def train_prepared(accelerator, model, optimizer, scheduler, steps: int) -> list[list[float]]:
    """Updates through the prepared optimizer and scheduler; one real backward first so AdamW has state to save."""
    history = []
    for step in range(steps):
        history.append([group["lr"] for group in optimizer.param_groups])
        if step == 0:
            accelerator.backward(model(pixel_values=torch.ones(1, 3, 32, 32)).logits.sum())
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return history


@pytest.mark.slow
def test_accelerate_save_state_and_load_state_restore_the_schedule(tmp_path, fresh_accelerate_state):
    accelerator = Accelerator(cpu=True)
    uninterrupted = train_prepared(accelerator, *accelerator.prepare(*make_run()), steps=13)
    expected = [closed_form(step, 4, 12, 1e-3, 1e-5) for step in range(13)]
    assert [lrs[-1] for lrs in uninterrupted] == pytest.approx(expected, rel=1e-12, abs=1e-20)

    accelerator = Accelerator(cpu=True)
    objects = accelerator.prepare(*make_run())
    first_half = train_prepared(accelerator, *objects, steps=6)
    accelerator.save_state(tmp_path / "checkpoint")

    accelerator = Accelerator(cpu=True)
    model, optimizer, scheduler = accelerator.prepare(*make_run(seed=1))
    accelerator.load_state(tmp_path / "checkpoint")
    assert first_half + train_prepared(accelerator, model, optimizer, scheduler, steps=7) == uninterrupted
