"""The training objective: which targets a batch is trained towards, and the loss against them.

Two parts, both applied inside the training step:

- ``BatchMix``: mixup (Zhang et al., 2018) and CutMix (Yun et al., 2019) done on the whole batch,
  on its device. Each image is mixed with the batch's mirror image ``images.flip(0)`` (the last
  with the first, and so on, as timm's "batch" mode pairs them), with one ``lam`` per batch:
  mixup blends ``lam * x + (1 - lam) * x.flip(0)``; CutMix pastes a box of the mirror whose sides
  are ``sqrt(1 - lam)`` of the image's, centred on a uniformly drawn pixel and clipped at the
  border, and sets ``lam`` to the share of the image left uncovered. The targets mix with the same
  ``lam``. Its random draws (whether to mix, which of the two, ``lam``, the box) come from a
  generator seeded with the run's seed, the epoch and the batch's index, on the host: the same
  batch is mixed the same way in any run with the same seed, also after a mid-epoch resume, and
  no draw waits for the GPU.
- ``Objective``: the loss. ``ce`` is cross-entropy; against hard targets (no batch mixed) it is
  ``F.cross_entropy`` with ``label_smoothing``, against mixed targets the soft cross-entropy
  ``-(y * log_softmax(z)).sum(1).mean()`` with ``y`` the smoothed one-hot targets mixed as above
  (the same value for an unmixed batch). ``bce`` is the binary cross-entropy of every class's
  logit against its target probability, averaged over the batch and the classes (timm's
  ``BinaryCrossEntropy``, the loss of "ResNet strikes back"); with ``bce_target_threshold`` the
  targets are first set to 1 where they exceed it and to 0 elsewhere.

Training accuracy under mixed targets counts a prediction as right when it is the class with
the larger weight in the mixed target (the image's own label unless ``lam`` < 0.5): there is no
single right answer for a mixed image, and this keeps the figure comparable to the unmixed one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..config.choices import LOSSES  # the one list, torch-free for the config checks
from ..data.sampler import mix_seed

__all__ = ["LOSSES", "BatchMix", "MixDraw", "Objective", "smooth_one_hot"]


def smooth_one_hot(targets: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Float (B, K) targets: ``1 - smoothing + smoothing / K`` for the label, ``smoothing / K`` elsewhere."""
    off = smoothing / num_classes
    dense = torch.full((targets.shape[0], num_classes), off, device=targets.device, dtype=torch.float32)
    return dense.scatter_(1, targets[:, None], 1.0 - smoothing + off)


@dataclass(frozen=True)
class MixDraw:
    """What ``BatchMix`` drew for one batch: the kind (None: not mixed), ``lam``, and CutMix's box."""

    kind: str | None
    lam: float = 1.0
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # rows y0:y1, columns x0:x1


class BatchMix:
    """``aug.mixup`` / ``aug.cutmix`` (Beta concentrations; 0: off), ``aug.mix_prob``, ``aug.switch_prob``,
    ``aug.mix_off_epoch``: mixing of whole batches on the device, reproducible from (seed, epoch, batch).

    ``mix_prob``: the chance that a batch is mixed at all; ``switch_prob``: with both on, the chance
    that a mixed batch takes CutMix rather than mixup; ``mix_off_epoch``: from this (0-based) epoch on
    no batch is mixed (0: mixing never stops), as timm's ``mixup_off_epoch``.
    """

    def __init__(self, num_classes: int, mixup: float = 0.0, cutmix: float = 0.0, mix_prob: float = 1.0,
                 switch_prob: float = 0.5, mix_off_epoch: int = 0, seed: int = 0) -> None:
        for name, value in (("mixup", mixup), ("cutmix", cutmix)):
            if value < 0:
                raise ValueError(f"aug.{name}={value!r} is not valid: a Beta concentration > 0, or 0 for none.")
        for name, value in (("mix_prob", mix_prob), ("switch_prob", switch_prob)):
            if not 0 <= value <= 1:
                raise ValueError(f"aug.{name}={value!r} is not valid: a probability in [0, 1].")
        self.mixup, self.cutmix = float(mixup), float(cutmix)
        self.mix_prob, self.switch_prob = float(mix_prob), float(switch_prob)
        self.mix_off_epoch, self.seed = int(mix_off_epoch), int(seed)
        self.num_classes = int(num_classes)

    @property
    def enabled(self) -> bool:
        return (self.mixup > 0 or self.cutmix > 0) and self.mix_prob > 0

    def draw(self, epoch: int, batch: int, height: int, width: int) -> MixDraw:
        """The draw for batch ``batch`` of ``epoch`` (both 0-based) of images of that size."""
        if not self.enabled or (self.mix_off_epoch and epoch >= self.mix_off_epoch):
            return MixDraw(None)
        rng = np.random.default_rng(mix_seed(self.seed, epoch, batch, 0x4D4958))  # "MIX": apart from the crops'
        if rng.random() >= self.mix_prob:
            return MixDraw(None)
        if self.mixup > 0 and self.cutmix > 0:
            kind = "cutmix" if rng.random() < self.switch_prob else "mixup"
        else:
            kind = "cutmix" if self.cutmix > 0 else "mixup"
        alpha = self.cutmix if kind == "cutmix" else self.mixup
        lam = float(rng.beta(alpha, alpha))
        if kind == "mixup":
            return MixDraw(kind, lam)
        cut = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * cut), int(width * cut)
        cy, cx = int(rng.integers(height)), int(rng.integers(width))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        return MixDraw(kind, 1.0 - (y1 - y0) * (x1 - x0) / (height * width), (y0, y1, x0, x1))

    @staticmethod
    def apply(images: torch.Tensor, targets: torch.Tensor, draw: MixDraw) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, targets)`` mixed as ``draw`` says; ``targets`` are float (B, K), e.g. ``smooth_one_hot``."""
        if draw.kind is None:
            return images, targets
        mixed_targets = targets * draw.lam + targets.flip(0) * (1.0 - draw.lam)
        if draw.kind == "mixup":
            return images * draw.lam + images.flip(0) * (1.0 - draw.lam), mixed_targets
        y0, y1, x0, x1 = draw.box
        pasted = images.clone()
        pasted[..., y0:y1, x0:x1] = images.flip(0)[..., y0:y1, x0:x1]
        return pasted, mixed_targets


class Objective:
    """``trainer.loss`` (ce | bce), ``trainer.label_smoothing``, ``trainer.bce_target_threshold``."""

    def __init__(self, loss: str = "ce", label_smoothing: float = 0.0, bce_target_threshold: float | None = None,
                 mix: BatchMix | None = None) -> None:
        if loss not in LOSSES:
            raise ValueError(f"trainer.loss={loss!r} is not valid. Valid choices: {', '.join(LOSSES)}.")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"trainer.label_smoothing={label_smoothing!r} is not valid: it must be in [0, 1).")
        self.loss, self.label_smoothing = loss, float(label_smoothing)
        self.bce_target_threshold = bce_target_threshold
        self.mix = mix if mix is not None and mix.enabled else None

    def batch(self, images: torch.Tensor, targets: torch.Tensor, epoch: int, index: int
              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``(images, soft targets or None, hard targets for accuracy)`` of batch ``index`` of ``epoch``.

        Without mixing the soft targets are None and the loss takes the integer labels as they are.
        With mixing every batch gets soft targets, also one the draw leaves unmixed, so that a
        compiled step sees one kind of input throughout.
        """
        if self.mix is None:
            return images, None, targets
        draw = self.mix.draw(epoch, index, *images.shape[-2:])
        soft = smooth_one_hot(targets, self.mix.num_classes, self.label_smoothing)
        images, soft = BatchMix.apply(images, soft, draw)
        # The label that weighs most: the image's own unless its partner's weight is larger.
        hard = targets if draw.lam >= 0.5 else targets.flip(0)
        return images, soft, hard

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, soft: torch.Tensor | None) -> torch.Tensor:
        """The mean loss of a batch: against ``soft`` targets when given, else the integer ``targets``."""
        if self.loss == "bce":
            goal = soft if soft is not None else smooth_one_hot(targets, logits.shape[1], self.label_smoothing)
            if self.bce_target_threshold is not None:
                goal = (goal > self.bce_target_threshold).to(goal.dtype)
            return F.binary_cross_entropy_with_logits(logits.float(), goal)
        if soft is None:
            return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        return -(soft * F.log_softmax(logits.float(), dim=1)).sum(1).mean()
