"""A run's recipe in words: the features it switches on, the settings a short run cannot reach, how its numbers
were measured.

Torch-free; the training run logs each at its start (``recipe_features``, ``short_run_warnings``) and
labels its final numbers with ``measured_on``. A recipe made for 200 epochs keeps its epoch-counted
settings when a run is cut to 2 (``recipe=modern trainer.epochs=2``): a 5-epoch warmup then never lets
the lr reach its peak, and nothing else would say so.
"""

from __future__ import annotations

from typing import Any, Mapping


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _listed(values: list) -> str:
    return ", ".join(_number(value) for value in values)


def recipe_features(config: Mapping[str, Any]) -> list[str]:
    """The training features the config switches on, each in a few words ("EMA (decay 0.999)", "TTA flip")."""
    trainer, aug = config["trainer"], config.get("aug") or {}
    sched, optim = config.get("sched") or {}, config.get("optim") or {}
    features = []
    if trainer.get("ema_decay"):
        warmup = ", warmup" if trainer.get("ema_warmup") else ""
        features.append(f"EMA of the weights (decay {_number(trainer['ema_decay'])}{warmup})")
    if str(trainer.get("tta", "none")) != "none":
        features.append(f"TTA {trainer['tta']}")
    mixing = [f"{name} {_number(aug[key])}" for key, name in (("mixup", "mixup"), ("cutmix", "CutMix"))
              if aug.get(key)]
    if mixing:
        details = []
        if aug.get("mix_prob", 1.0) < 1:
            details.append(f"on {aug['mix_prob']:.0%} of batches")
        if aug.get("mix_off_epoch"):  # 0-based: the first epoch without mixing
            details.append(f"none after epoch {aug['mix_off_epoch']}")
        features.append(" / ".join(mixing) + (f" ({', '.join(details)})" if details else ""))
    policy = aug.get("policy", "none")
    if policy == "randaugment":
        features.append(f"RandAugment ({aug.get('num_ops', 2)} ops, magnitude {aug.get('magnitude', 9)})")
    elif policy == "trivialaugment":
        features.append("TrivialAugment")
    if aug.get("random_erasing"):
        features.append(f"random erasing {_number(aug['random_erasing'])}")
    if aug.get("cutout"):
        features.append(f"cutout {aug['cutout']}")
    if int((config.get("data") or {}).get("repeat_aug") or 1) > 1:
        features.append(f"repeated augmentation x{config['data']['repeat_aug']}")
    if trainer.get("label_smoothing"):
        features.append(f"label smoothing {_number(trainer['label_smoothing'])}")
    if trainer.get("loss", "ce") == "bce":
        threshold = trainer.get("bce_target_threshold")
        features.append("BCE loss" + ("" if threshold is None else f" (targets above {_number(threshold)} become 1)"))
    if (config.get("model") or {}).get("drop_path"):
        features.append(f"stochastic depth {_number(config['model']['drop_path'])}")
    if sched.get("name") != "onecycle" and sched.get("warmup_epochs"):
        features.append(f"lr warmup {_number(sched['warmup_epochs'])} epochs")
    if optim.get("layer_decay") is not None:
        features.append(f"layer-wise lr decay {_number(optim['layer_decay'])}")
    if trainer.get("grad_clip"):
        features.append(f"gradient clipping at norm {_number(trainer['grad_clip'])}")
    return features


def describe_recipe(config: Mapping[str, Any]) -> str:
    """One line: the recipe chosen (``recipe=...``) and the features that are on."""
    name = config.get("recipe_name")
    features = recipe_features(config)
    listed = ", ".join(features) if features else (
        "plain (no EMA, TTA, mixup/CutMix, augmentation policy, cutout, label smoothing or lr warmup)")
    return f"Recipe{f' {name}' if name else ''}: {listed}."


def measured_on(config: Mapping[str, Any]) -> str:
    """How a run's validation numbers were measured: on which weights, with which test-time augmentation."""
    trainer = config["trainer"]
    weights = "the EMA weights" if trainer.get("ema_decay") else "the trained weights"
    tta = str(trainer.get("tta", "none"))
    return f"{weights} {'without TTA' if tta == 'none' else f'with TTA {tta}'}"


def short_run_warnings(config: Mapping[str, Any]) -> list[str]:
    """A sentence for each epoch-counted setting that lies beyond the run's trainer.epochs, and so never takes
    effect: a warmup as long as the run, a mixing stop after its end, lr steps after its last epoch."""
    epochs = int(config["trainer"]["epochs"])
    sched, aug = config.get("sched") or {}, config.get("aug") or {}
    run = f"trainer.epochs={epochs}"
    warnings = []
    warmup = sched.get("warmup_epochs")
    if sched.get("name") != "onecycle" and warmup and warmup >= epochs:  # onecycle's is refused by validation
        warnings.append(f"sched.warmup_epochs={_number(warmup)} is not shorter than the run ({run}): the lr rises for "
                        f"the whole run and never reaches optim.lr. Shorten the warmup for a run this short "
                        f"(sched.warmup_epochs=0 for a quick test), or train for more epochs.")
    mix_off = aug.get("mix_off_epoch")
    if mix_off and mix_off >= epochs and (aug.get("mixup") or aug.get("cutmix")):
        warnings.append(f"aug.mix_off_epoch={mix_off} lies beyond the run ({run}): every epoch is mixed, none "
                        f"trains on plain images at the end. Set aug.mix_off_epoch below {epochs}, or 0 to mix "
                        f"throughout on purpose.")
    if sched.get("name") == "step" and int(sched.get("step_size") or 0) >= epochs:
        warnings.append(f"sched.step_size={sched['step_size']} is not shorter than the run ({run}): the lr never "
                        f"steps down. Set sched.step_size below {epochs}, or choose sched=cosine.")
    beyond = [milestone for milestone in sched.get("milestones") or [] if milestone >= epochs] \
        if sched.get("name") == "multistep" else []
    if beyond:
        warnings.append(f"sched.milestones {_listed(beyond)} lie beyond the run ({run}): the lr never steps down "
                        f"there. Give milestones below {epochs} (e.g. sched.milestones=[{epochs // 2},"
                        f"{epochs * 3 // 4}]).")
    return warnings
