"""Learning-rate schedules, parameter groups and accuracy counting."""

import pytest
import torch

from attn_resnet.engine.metrics import topk_correct
from attn_resnet.engine.optim import build_optimizer, lr_factor_schedule
from attn_resnet.models import ResidualNet


def test_step_schedule_as_in_the_papers():
    factor = lr_factor_schedule("step", 90, 100, step_size=30, gamma=0.1)
    assert factor(0) == 1 and factor(2999) == 1
    assert factor(3000) == pytest.approx(0.1) and factor(6000) == pytest.approx(0.01)


def test_multistep_and_cosine():
    multistep = lr_factor_schedule("multistep", 300, 10, milestones=[150, 225])
    assert multistep(1499) == 1 and multistep(1500) == pytest.approx(0.1) and multistep(2250) == pytest.approx(0.01)
    cosine = lr_factor_schedule("cosine", 10, 10, min_factor=0.0)
    assert cosine(0) == 1 and cosine(50) == pytest.approx(0.5) and cosine(100) == pytest.approx(0.0, abs=1e-12)


def test_linear_warmup_then_schedule():
    factor = lr_factor_schedule("cosine", 10, 10, warmup_epochs=2, warmup_start_factor=0.1)
    assert factor(0) == pytest.approx(0.1) and factor(10) == pytest.approx(0.55)
    assert factor(20) == pytest.approx(1.0) and factor(60) == pytest.approx(0.5)
    assert all(factor(i) < factor(i + 1) for i in range(19))
    with pytest.raises(ValueError, match="cosine"):
        lr_factor_schedule("poly", 10, 10)


def test_weight_decay_exemption_for_bn_and_bias():
    model = ResidualNet("CIFAR10", 18, 10, "CBAM")
    optimizer = build_optimizer(model, "sgd", 0.1, weight_decay=5e-4, exempt_bn_and_bias=True, nesterov=True)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() > 1 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    adamw = build_optimizer(model, "adamw", 1e-3, weight_decay=0.05)
    assert isinstance(adamw, torch.optim.AdamW) and len(adamw.param_groups) == 1


def test_topk_correct():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15], [0.2, 0.3, 0.5]])
    targets = torch.tensor([1, 2, 0])
    top1, top2 = topk_correct(logits, targets, (1, 2))
    assert top1.item() == 1 and top2.item() == 2
    assert topk_correct(logits, targets, (5,))[0].item() == 3  # k larger than the class count
