"""The models that race: ours and their torchvision/timm peers, with their optimizers, train steps and inputs."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.trainer import autocast_context
from ..models import ResidualNet
from .settings import NETWORK_TYPE, NUM_CLASSES, Settings

TIMM_MISSING = "timm is not installed (pip install -e '.[bench]')"


def timm_module():
    try:
        import timm
    except ImportError:
        return None
    return timm


def build_ours(depth: int, att_type: str, fused: bool | str = "auto") -> nn.Module:
    return ResidualNet(NETWORK_TYPE, depth, NUM_CLASSES, att_type, fused=fused)


def build_peer(depth: int, att_type: str, use_timm: bool) -> tuple[nn.Module | None, str, str | None]:
    """``(model or None, its name, why it is missing)`` for the peer of our (depth, att_type)."""
    if att_type == "none":
        import torchvision

        return getattr(torchvision.models, f"resnet{depth}")(num_classes=NUM_CLASSES), f"torchvision resnet{depth}", None
    if att_type not in ("SE", "CBAM"):
        return None, "—", f"no torchvision/timm implementation of {att_type}"
    name = f"timm seresnet{depth}" if att_type == "SE" else f"timm resnet{depth} + attn_layer='cbam'"
    timm = timm_module() if use_timm else None
    if timm is None:
        why = TIMM_MISSING if use_timm else "timm peers switched off (--no-timm)"
        return None, name, why
    if att_type == "SE":
        return timm.create_model(f"seresnet{depth}", num_classes=NUM_CLASSES), name, None
    return timm.create_model(f"resnet{depth}", num_classes=NUM_CLASSES, block_args=dict(attn_layer="cbam")), name, None


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_train_step(forward: Callable, model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                    targets: torch.Tensor, device: torch.device, precision: str) -> Callable[[], None]:
    def step() -> None:
        with autocast_context(device, precision):
            loss = F.cross_entropy(forward(images), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)


def model_inputs(settings: Settings, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    size = settings.image_size
    images = torch.randn(settings.batch_size, 3, size, size, generator=generator)
    targets = torch.randint(0, NUM_CLASSES, (settings.batch_size,), generator=generator)
    images, targets = images.to(settings.torch_device), targets.to(settings.torch_device)
    if settings.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets


def place(model: nn.Module, settings: Settings) -> nn.Module:
    """``model`` on the settings' device, in training mode and in their memory format."""
    model = model.to(settings.torch_device).train()
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
