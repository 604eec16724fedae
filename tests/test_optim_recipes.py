"""Optimizers and schedules from the registry: LAMB and Lion against their update rules, the one-cycle
lr and momentum curves, layer-wise lr decay, and the registry's checks in the config validation."""

import math
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from attn_resnet.app import train
from attn_resnet.config.validate import ConfigError, validate_train_config
from attn_resnet.engine.optim import build_optimizer, build_scheduler, layer_ids, parameter_groups
from attn_resnet.models import ResidualNet
from attn_resnet.optim_registry import OPTIMIZERS, RegistryError, resolve

from helpers import FAST, compose_train

REPO = Path(__file__).resolve().parents[1]

timm = pytest.importorskip("timm", reason="LAMB and Lion come from timm (the test extras install it)")


def _two_tensor_model() -> nn.Module:
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -1.0, 2.0], [0.1, 0.2, -0.3]]))
        model.bias.copy_(torch.tensor([0.3, -0.4]))
    return model


def _set_grads(model: nn.Module, scale: float) -> list[torch.Tensor]:
    grads = [torch.tensor([[0.2, -0.1, 0.4], [-0.3, 0.5, 0.1]]) * scale, torch.tensor([0.05, -0.2]) * scale]
    for param, grad in zip(model.parameters(), grads):
        param.grad = grad.clone()
    return grads


@pytest.mark.parametrize("scale", [0.5, 10.0])  # a global gradient norm below and above max_grad_norm=1
def test_lamb_first_step_follows_its_update_rule(scale):
    model = _two_tensor_model()
    before = [p.detach().clone() for p in model.parameters()]
    grads = _set_grads(model, scale)
    lr, wd, beta1, beta2, eps = 0.01, 0.1, 0.9, 0.999, 1e-6
    optimizer = build_optimizer(model, "lamb", lr, weight_decay=wd, betas=[beta1, beta2], eps=eps, max_grad_norm=1.0)
    optimizer.step()
    global_norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
    clip = max(global_norm / 1.0, 1.0)
    for p0, g, p1 in zip(before, grads, model.parameters()):
        g = g / clip
        m = (1 - beta1) * g          # first moment after one step, bias-corrected below
        v = (1 - beta2) * g * g
        update = (m / (1 - beta1)) / (v.sqrt() / math.sqrt(1 - beta2) + eps) + wd * p0
        trust = float(p0.norm() / update.norm())
        assert torch.allclose(p1.detach(), p0 - lr * trust * update, atol=1e-6)


def test_lion_first_step_follows_its_update_rule():
    model = _two_tensor_model()
    before = [p.detach().clone() for p in model.parameters()]
    grads = _set_grads(model, 1.0)
    lr, wd, beta1, beta2 = 0.01, 0.5, 0.9, 0.99
    optimizer = build_optimizer(model, "lion", lr, weight_decay=wd, betas=[beta1, beta2])
    optimizer.step()
    for p0, g, p1 in zip(before, grads, model.parameters()):
        # The momentum starts at 0: the interpolation c = beta1 * 0 + (1 - beta1) g has the sign of g.
        expected = p0 * (1 - lr * wd) - lr * torch.sign((1 - beta1) * g)
        assert torch.allclose(p1.detach(), expected, atol=1e-7)
        assert torch.allclose(optimizer.state[p1]["exp_avg"], (1 - beta2) * g, atol=1e-7)


def test_one_cycle_lr_and_momentum_curves():
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(model, "sgd", 0.4, momentum=0.9, nesterov=True)
    epochs, steps = 10, 20
    # 4 warmup epochs of 10: not OneCycleLR's default share (30%), so a warmup that is not passed on shows.
    scheduler = build_scheduler(optimizer, "onecycle", epochs, steps, warmup_epochs=4, div_factor=25.0,
                                final_div_factor=1e4, base_momentum=0.85, max_momentum=0.95)
    lrs, momenta = [], []
    for _ in range(epochs * steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        momenta.append(optimizer.param_groups[0]["momentum"])
        optimizer.step()
        scheduler.step()
    rise = 4 * steps - 1  # OneCycleLR's first phase ends at step pct_start * total - 1
    # By hand: cosine from lr/25 up to lr over the rise, cosine down to lr/25/1e4 over the rest;
    # the momentum mirrors it between 0.95 and 0.85.
    for step in (0, 17, rise, 120, epochs * steps - 1):
        if step <= rise:
            t, start, end, m_start, m_end = step / rise, 0.4 / 25, 0.4, 0.95, 0.85
        else:
            t, start, end = (step - rise) / (epochs * steps - 1 - rise), 0.4, 0.4 / 25 / 1e4
            m_start, m_end = 0.85, 0.95
        cosine = (1 + math.cos(math.pi * t)) / 2
        assert lrs[step] == pytest.approx(end + (start - end) * cosine, rel=1e-6)
        assert momenta[step] == pytest.approx(m_end + (m_start - m_end) * cosine, rel=1e-6)
    assert max(lrs) == pytest.approx(0.4) and lrs.index(max(lrs)) == rise


def test_one_cycle_without_warmup_epochs_rises_over_the_first_30_percent():
    optimizer = build_optimizer(nn.Linear(2, 2), "adamw", 1e-3)
    scheduler = build_scheduler(optimizer, "onecycle", 10, 10)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs.index(max(lrs)) == 29 and optimizer.param_groups[0]["betas"][0] == pytest.approx(0.95, abs=1e-3)


def test_one_cycle_in_a_run_peaks_where_sched_warmup_epochs_ends(tmp_path):
    # Half the run rises (not the default 30%): 2 steps an epoch, the peak is the last step of epoch 1.
    args = [*FAST, "data.train_size=16", "trainer.epochs=2", "sched=onecycle", "sched.warmup_epochs=1"]
    first, second = train(compose_train(args), tmp_path)["history"]
    lr, low, final = 0.1, 0.1 / 25, 0.1 / 25 / 1e4
    assert (first["lr"], first["lr_end"]) == (pytest.approx(low), pytest.approx(lr))
    after_peak = (lr + final) / 2  # step 2, half way down the cosine from the peak (step 1) to the last step (3)
    assert (second["lr"], second["lr_end"]) == (pytest.approx(after_peak), pytest.approx(final))


def test_layer_decay_gives_each_block_its_lr():
    model = ResidualNet("CIFAR10", 18, 10, "BAM")
    ids, count = layer_ids(model)
    assert count == 10  # stem, 8 basic blocks, classifier
    assert ids["conv1.weight"] == 0 and ids["layer1.0.conv1.weight"] == 1 and ids["layer4.1.conv2.weight"] == 8
    assert ids["fc.weight"] == 9
    bam_params = [name for name in ids if name.startswith("stage_attn.0.")]
    assert bam_params and all(ids[name] == 2 for name in bam_params)  # BAM after stage 1: its last block's id
    groups = parameter_groups(model, 5e-4, True, lr=0.1, layer_decay=0.5)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["fc.weight"])] == (0.1, 5e-4)
    assert lr_of[id(named["conv1.weight"])] == (pytest.approx(0.1 * 0.5**9), 5e-4)
    assert lr_of[id(named["layer2.1.bn2.weight"])] == (pytest.approx(0.1 * 0.5**5), 0.0)  # block 4, no decay
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_registry_names_are_the_config_choices_and_unknown_options_fail_in_preflight(tmp_path):
    from attn_resnet.config import choices

    assert choices.OPTIMIZERS == tuple(OPTIMIZERS) == ("sgd", "adamw", "lamb", "lion")
    assert "onecycle" in choices.SCHEDULES and "constant" in choices.SCHEDULES
    with pytest.raises(RegistryError, match="Unknown optimizer 'adagrad'"):
        resolve(OPTIMIZERS, "adagrad", "optimizer")
    with pytest.raises(ValueError, match=r"optim.momentum is not an option of .*Lion; it takes: betas"):
        build_optimizer(nn.Linear(2, 2), "lion", 1e-4, momentum=0.9)
    # A config file that gives an option the optimizer does not take: refused by the validation.
    cfg = compose_train(["optim=lion"])
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.optim.nesterov = True
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    with open(conf / "optim" / "lion.yaml", "a") as file:  # a config file declaring an option Lion lacks
        file.write("nesterov: true\n")
    with pytest.raises(ConfigError, match=r"optim.nesterov is not an option of .*Lion; it takes: betas"):
        validate_train_config(cfg, conf_dir=conf)
    with pytest.raises(ConfigError, match="warmup_epochs=12 for sched=onecycle"):
        validate_train_config(compose_train(["sched=onecycle", "sched.warmup_epochs=12", "trainer.epochs=10"]))


def test_a_missing_package_is_named_with_its_install_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "timm.optim", None)  # what an import finds when timm is not installed
    with pytest.raises(RegistryError, match=r"package 'timm', which is not installed.*pip install \"timm>=1.0\""):
        resolve(OPTIMIZERS, "lamb", "optimizer")
