"""ResNet with pluggable attention, following the CBAM/BAM authors' ``ResidualNet``.

Architecture facts (Woo et al. 2018, Park et al. 2018, and the authors' released code):
SE and CBAM sit in every residual block on the residual branch after its last BN and
before the shortcut addition (placement "residual"); BAM sits on the outputs of stages 1-3
(placement "stage"). Beyond the papers, any block can also go after each block's addition
("post_add") or once before the head's pooling ("head"). The placements are registered in
``attention_registry.PLACEMENTS``, each naming the network's slot it fills (``SLOTS`` below);
the blocks only fill the slots they are given. The CIFAR stem is a 3x3/1 conv with no
max-pool. The head pools adaptively, which equals the reference's fixed AvgPool2d(7)
at 224x224 (ImageNet) and avg_pool2d(4) at 32x32 (CIFAR), and also works elsewhere.
The same network widened (WideResNet) or with grouped Bottleneck convs (ResNeXt) comes from
``width``, ``cardinality`` and ``width_per_group``; ``attn_resnet.architectures`` says how.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from ..architectures import STEM_WIDTH, bottleneck_width, check_shape, stage_widths
from ..config.choices import INITS, RESNET_LAYOUTS  # the one list of each, torch-free for the config checks
from ..attention_registry import find_block
from ..dataset_registry import DEFAULT_NUM_CLASSES, NETWORK_TYPES, STEMS, network_type_of, stem_of
from .attention import (DEFAULT_PLACEMENT, PLACEMENTS, AttentionConfigError, build_attention, canonical_name,
                        check_block_contract, check_options, init_block_, name_rule_init_, resolve_placement, torchvision_rule_init_)
from .attention.fused import check_fused, set_fused
STAGE_WIDTHS = stage_widths(1.0)  # the plain ResNet's
# Where this network can hold an attention block: ``attn`` (each residual block's branch, before the
# addition), ``post_attn`` (each residual block, after the addition), ``stage_attn`` (after stages 1-3),
# ``head_attn`` (before the pooling). Each registered placement fills one of them.
SLOTS = ("attn", "post_attn", "stage_attn", "head_attn")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def _drop_path(rate: float) -> nn.Module:
    """Stochastic depth of a residual branch (Huang et al., 2016): in training each sample's branch is
    dropped with probability ``rate`` and kept ones are scaled by ``1 / (1 - rate)`` (torchvision's
    ``StochasticDepth``, "row" mode); an identity in evaluation and at rate 0."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop_path={rate!r} is not valid: it must be in [0, 1).")
    return StochasticDepth(rate, "row") if rate > 0 else nn.Identity()


class BasicBlock(nn.Module):
    """Two 3x3 convs; attention on the residual branch before the addition."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        attention: Callable[[int], nn.Module] | None = None,
        stride_in_1x1: bool = False,
        post_attention: Callable[[int], nn.Module] | None = None,
        drop_path: float = 0.0,
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        if (groups, base_width) != (1, 64):
            raise ValueError("BasicBlock only supports groups=1 and base_width=64 (as torchvision's); a grouped "
                             "ResNet (ResNeXt) is built of Bottleneck blocks: depth 50 or 101.")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.attn = attention(planes) if attention is not None else nn.Identity()
        self.post_attn = post_attention(planes) if post_attention is not None else nn.Identity()
        self.drop_path = _drop_path(drop_path)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.drop_path(self.attn(self.bn2(self.conv2(out))))
        return self.post_attn(self.relu(out + shortcut))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (expansion 4); stride on the 3x3 unless ``stride_in_1x1``.

    ``groups`` and ``base_width`` make the 3x3 conv grouped and sized as torchvision's ResNeXt
    (``int(planes * base_width / 64) * groups`` channels); the defaults give the plain block.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        attention: Callable[[int], nn.Module] | None = None,
        stride_in_1x1: bool = False,
        post_attention: Callable[[int], nn.Module] | None = None,
        drop_path: float = 0.0,
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        inner = bottleneck_width(planes, groups, base_width)
        self.conv1 = nn.Conv2d(inplanes, inner, 1, stride=stride_1x1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, inner, 3, stride=stride_3x3, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv3 = nn.Conv2d(inner, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.attn = attention(planes * self.expansion) if attention is not None else nn.Identity()
        self.post_attn = post_attention(planes * self.expansion) if post_attention is not None else nn.Identity()
        self.drop_path = _drop_path(drop_path)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.drop_path(self.attn(self.bn3(self.conv3(out))))
        return self.post_attn(self.relu(out + shortcut))


# depth -> (block class, blocks per stage), from the torch-free table of layouts.
DEPTHS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    depth: ({"basic": BasicBlock, "bottleneck": Bottleneck}[block], layers)
    for depth, (block, layers) in RESNET_LAYOUTS.items()
}


class ResNet(nn.Module):
    """ResNet trunk with an ImageNet (7x7/2 + max-pool) or CIFAR (3x3/1) stem and optional attention.

    ``att_placement`` ("default" = the block's own) picks the slots the block fills: ``attn`` of
    every residual block (residual), ``post_attn`` of every residual block (post_add),
    ``stage_attn`` (stages 1-3) or ``head_attn``. Unused slots are identities. ``fused`` is set on
    the blocks that have fused kernels (SE, CBAM; see ``attention.fused``). ``width`` widens every
    stage (not the stem); ``cardinality`` and ``width_per_group`` group the Bottleneck's 3x3 conv
    (``attn_resnet.architectures``).
    """

    def __init__(
        self,
        block: type[nn.Module],
        layers: tuple[int, int, int, int],
        num_classes: int,
        imagenet_stem: bool = True,
        att_type: str | None = None,
        attention_options: dict | None = None,
        stride_in_1x1: bool = False,
        att_placement: str | None = DEFAULT_PLACEMENT,
        drop_path: float = 0.0,
        fused: bool | str = "auto",
        width: float = 1.0,
        cardinality: int = 1,
        width_per_group: int = 64,
    ) -> None:
        super().__init__()
        check_fused(fused)
        widths = stage_widths(width)
        self.att_type = canonical_name(att_type)
        self.att_placement = resolve_placement(self.att_type, att_placement)
        options = dict(attention_options or {})

        def make_attention(channels: int) -> nn.Module:
            return build_attention(self.att_type, channels, **options)

        check_options(self.att_type, options)  # an unknown option fails here, before any layer is built
        found = find_block(self.att_type)
        if found is not None and found.external:  # a block from outside the package: checked once, by running it
            check_block_contract(self.att_type, options)
        slot = {name: None for name in SLOTS}
        if self.att_placement is not None:
            chosen = PLACEMENTS[self.att_placement]
            if chosen.slot not in slot:
                raise AttentionConfigError(
                    f"att_placement={self.att_placement} fills the slot {chosen.slot!r}, which this ResNet does "
                    f"not have (its slots: {', '.join(SLOTS)}). A new placement needs its slot in ResNet too.")
            slot[chosen.slot] = make_attention
        self.imagenet_stem = imagenet_stem
        if imagenet_stem:
            self.conv1 = nn.Conv2d(3, STEM_WIDTH, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(3, STEM_WIDTH, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(STEM_WIDTH)
        self.relu = nn.ReLU(inplace=True)

        self.inplanes = STEM_WIDTH
        grouping = {"groups": cardinality, "base_width": width_per_group}
        stages = []
        # Stochastic depth rising linearly from 0 at the first block to drop_path at the last (as timm).
        total = sum(layers)
        rates = [drop_path * index / max(total - 1, 1) for index in range(total)]
        for index, (planes, blocks) in enumerate(zip(widths, layers)):
            stride = 1 if index == 0 else 2
            first = sum(layers[:index])
            stages.append(self._make_layer(block, planes, blocks, stride, slot["attn"], stride_in_1x1,
                                           slot["post_attn"], rates[first:first + blocks], grouping))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        # Stage attention (BAM's place) on the outputs of stages 1-3; identities otherwise.
        self.stage_attn = nn.ModuleList(
            slot["stage_attn"](planes * block.expansion) if slot["stage_attn"] else nn.Identity()
            for planes in widths[:3]
        )
        self.head_attn = slot["head_attn"](widths[3] * block.expansion) if slot["head_attn"] else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)
        set_fused(self, fused)

    def attention_blocks(self) -> list[tuple[str, nn.Module]]:
        """``(name, block)`` of every attention block in the network, in registration order."""
        found = []
        for name, module in self.named_modules():
            if isinstance(module, nn.Identity):
                continue
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("attn", "post_attn", "head_attn") or (name.startswith("stage_attn.") and name.count(".") == 1):
                found.append((name, module))
        return found

    def _make_layer(self, block, planes, blocks, stride, attention, stride_in_1x1, post_attention,
                    drop_paths: list[float], grouping: dict) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, attention, stride_in_1x1, post_attention,
                        drop_paths[0], **grouping)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, None, attention, stride_in_1x1, post_attention, drop_paths[i],
                         **grouping)
                   for i in range(1, blocks)]
        return nn.Sequential(*layers)

    @property
    def min_input_size(self) -> int:
        """Smallest height/width that leaves at least one real pixel per feature at the last stage."""
        return 32 if self.imagenet_stem else 8

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"ResNet expects a batch of RGB images shaped (N, 3, H, W); got shape {tuple(x.shape)}."
            )
        height, width = x.shape[-2:]
        if height < self.min_input_size or width < self.min_input_size:
            stem = "ImageNet" if self.imagenet_stem else "CIFAR"
            raise ValueError(
                f"Input of {height}x{width} pixels is too small for the {stem} stem, which downsamples "
                f"by {self.min_input_size}: height and width must be at least {self.min_input_size}. "
                f"Resize the images or use the other stem (data.stem, or ResidualNet's network_type)."
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.stage_attn[0](self.layer1(x))
        x = self.stage_attn[1](self.layer2(x))
        x = self.stage_attn[2](self.layer3(x))
        return self.head_attn(self.layer4(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


def _reference_init(model: ResNet) -> None:
    """The authors' name-based init on the trunk; each attention block initialises itself.

    fc weight: kaiming normal (fan_in). Then over every trunk parameter: a weight whose name
    contains "conv" -> kaiming normal (fan_out); one whose name contains "bn" -> 1; every
    bias -> 0; weights named neither way (downsample conv/BN) keep PyTorch's default init, as
    in the reference. An attention block is never initialised because of its parameters' names:
    it gets ``init_weights("reference")`` (SE, CBAM and BAM apply the authors' rule to their own
    names there, which reproduces the reference), called where its first parameter comes, so
    that the random draws happen in the reference's order.
    """
    nn.init.kaiming_normal_(model.fc.weight)
    blocks = dict(model.attention_blocks())
    done: set[str] = set()
    trunk: list[tuple[str, nn.Parameter]] = []

    def flush() -> None:
        name_rule_init_(trunk)
        trunk.clear()

    with torch.no_grad():
        for name, param in model.named_parameters():
            owner = next((block_name for block_name in blocks if name.startswith(block_name + ".")), None)
            if owner is None:
                trunk.append((name, param))
            elif owner not in done:
                flush()
                done.add(owner)
                init_block_(blocks[owner], "reference")
        flush()


def _torchvision_init(model: ResNet) -> None:
    """torchvision's ResNet init on the trunk (convs kaiming normal fan_out/relu, norms 1/0);
    each attention block gets ``init_weights("torchvision")``."""
    inside = {id(module) for _, block in model.attention_blocks() for module in block.modules()}
    torchvision_rule_init_(module for module in model.modules() if id(module) not in inside)
    with torch.no_grad():
        for _, block in model.attention_blocks():
            init_block_(block, "torchvision")


def _choice(value, valid, what: str):
    raise ValueError(f"Unknown {what} {value!r}. Valid choices: {', '.join(map(str, valid))}.")


def ResidualNet(
    network_type: str,
    depth: int,
    num_classes: int | None = None,
    att_type: str | None = None,
    *,
    att_placement: str = DEFAULT_PLACEMENT,
    stride_in_1x1: bool = False,
    zero_init_residual: bool = False,
    init: str = "reference",
    drop_path: float = 0.0,
    fused: bool | str = "auto",
    width: float = 1.0,
    cardinality: int = 1,
    width_per_group: int = 64,
    **attention_options,
) -> ResNet:
    """Build the authors' ResidualNet: ``ResidualNet("CIFAR10", 50, 10, "CBAM")``.

    network_type: "ImageNet" | "CIFAR10" | "CIFAR100", or the stem kind "imagenet" | "cifar"
    (case-insensitive; selects the stem: "cifar" is "CIFAR10").
    depth: 18 | 34 | 50 | 101. num_classes: defaults to 1000 / 10 / 100 by network_type.
    att_type: "none" (or None) | any registered block, e.g. "SE", "CBAM", "BAM" (case-insensitive), an
    entry point's block by name, a block of one's own by import path ("mypkg.gates:MyGate") or its class.
    att_placement: "default" (the block's own) | "residual" | "post_add" | "stage" | "head".
    stride_in_1x1: put the Bottleneck stride on the first 1x1 conv (original ResNet).
    zero_init_residual: zero each block's last BN weight so blocks start as identities.
    init: "reference" (the authors' name-based init) or "torchvision"; attention blocks own theirs.
    drop_path: stochastic depth of the residual branches, rising linearly with depth from 0 at the
    first block to this rate at the last (0: none; no parameters either way).
    fused: "auto" | True | False: SE and CBAM run fused Triton kernels ("auto": on CUDA inputs when
    Triton is importable); the parameters are the same, so checkpoints load either way.
    width: the factor on every stage's channels (the stem keeps 64): 1.5 and 2 give the CBAM paper's
    WideResNet-18. cardinality, width_per_group: the groups and the per-group width of the
    Bottleneck's 3x3 conv, 32 and 4 for ResNeXt 32x4d (torchvision's groups and width_per_group;
    depth 50/101 only). See ``attn_resnet.architectures``.
    attention_options: the block's own options, e.g. ``reduction=8`` or CBAM's ``kernel_size=3``;
    one the block does not take is an error naming those it does.
    """
    stem = stem_of(network_type)
    if stem is None:
        _choice(network_type, (*NETWORK_TYPES.values(), *STEMS), "network_type")
    network_type = NETWORK_TYPES.get(network_type.lower()) or network_type_of(stem)
    if isinstance(depth, bool) or depth not in DEPTHS:
        _choice(depth, DEPTHS, "depth")
    att_type = canonical_name(att_type)
    if num_classes is None:
        num_classes = DEFAULT_NUM_CLASSES[network_type]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    if init not in INITS:
        _choice(init, INITS, "init")
    check_shape(RESNET_LAYOUTS[depth][0], width, cardinality, width_per_group)

    block, layers = DEPTHS[depth]
    model = ResNet(
        block,
        layers,
        num_classes,
        imagenet_stem=stem == "imagenet",
        att_type=att_type,
        attention_options=attention_options,
        stride_in_1x1=stride_in_1x1,
        att_placement=att_placement,
        drop_path=float(drop_path),
        fused=fused,
        width=width,
        cardinality=cardinality,
        width_per_group=width_per_group,
    )
    model.network_type, model.depth = network_type, depth
    (_reference_init if init == "reference" else _torchvision_init)(model)
    if zero_init_residual:
        for module in model.modules():
            if isinstance(module, (BasicBlock, Bottleneck)):
                nn.init.zeros_(module.last_bn.weight)
    return model
