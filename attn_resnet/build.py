"""Builders from validated config nodes to library objects: model spec, data loaders, precision, seeds."""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch

from .architectures import network_label, shape_of
from .attention_registry import BLOCKS, find_block
from .config.choices import EXECUTION_MODEL_KEYS, NETWORK_MODEL_KEYS, TRANSFER_MODEL_KEYS, canonical_attention
from .data import (DeviceImageLoader, build_eval_dataset, build_prefetched_loader, build_splits, resolve_loader,
                   resolve_num_workers)
from .data.policies import AugmentSpec
from .dataset_registry import NETWORK_TYPES, network_type_of
from .engine.objectives import BatchMix
from .models import ResidualNet
from .registry import RegistryError

log = logging.getLogger(__name__)

LOADER_KEYS = ("batch_size", "val_batch_size", "num_workers", "pin_memory", "persistent_workers", "loader",
               "repeat_aug")
DATA_META_KEYS = ("name", "stem", "network_type")  # the dataset and the network's stem: not builder options
# The network's own keys in model.* beside depth and att_type, the fine-tuning start and how the
# network runs (model.fused); every other model.* key is an option of the chosen block.
MODEL_KEYS = NETWORK_MODEL_KEYS + TRANSFER_MODEL_KEYS + EXECUTION_MODEL_KEYS
MODEL_OPTION_KEYS = tuple(key for key in NETWORK_MODEL_KEYS if key not in ("depth", "att_type"))
# Block options that checkpoints written before blocks declared their own options stored for
# every block; such a checkpoint is rebuilt with the ones its block takes.
LEGACY_BLOCK_KEYS = ("reduction", "kernel_size", "combine")
# The spec key that records where a block from outside the package lives (``Found.record``).
ATT_SOURCE = "att_source"


def model_spec(model: Mapping[str, Any], stem: str, num_classes: int) -> dict:
    """Plain keyword arguments for ``ResidualNet``; stored in checkpoints to rebuild the model.

    ``stem`` ("imagenet" | "cifar") is recorded under the name checkpoints have always used,
    ``network_type``: "ImageNet", and for the CIFAR stem "CIFAR100" with 100 classes, else "CIFAR10"
    (``dataset_registry.network_type_of``), so that the specs of the usual runs read as before; an
    older network type given instead is kept as it is. A resume matches specs by stem
    (``engine.checkpointing``), so CIFAR10 and CIFAR100 specs of one network match.
    """
    spec = {
        "network_type": NETWORK_TYPES.get(str(stem).lower()) or network_type_of(stem, int(num_classes)),
        "depth": int(model["depth"]),
        "num_classes": int(num_classes),
        "att_type": canonical_attention(model["att_type"]),
        **{key: model[key] for key in MODEL_OPTION_KEYS if key in model},
        **{key: value for key, value in model.items() if key not in MODEL_KEYS},
    }
    found = find_block(spec["att_type"])
    if found is not None and found.external:
        # A block from outside the package: where its class lives and which package (and version) provides
        # it, so that evaluation, prediction, export and fine-tuning find it again in another process.
        spec[ATT_SOURCE] = found.record()
    return spec


def block_source(spec: Mapping[str, Any]) -> dict | None:
    """Where a spec's block came from (``{"target", "origin", "package", "version"}``); None for a built-in one."""
    return spec.get(ATT_SOURCE)


def _buildable_att_type(att_type: Any, source: Mapping[str, Any] | None) -> Any:
    """The ``att_type`` to build a spec's block by here: its name where this process knows it, else the import
    path its run recorded; RegistryError naming the module and the package to install when neither imports."""
    known = find_block(att_type)
    if known is None and canonical_attention(att_type) == "none":
        return att_type
    found = known
    if found is None and source and source.get("target"):
        found = BLOCKS.find(source["target"])
    if found is None:
        return att_type  # unknown and nothing recorded: ResidualNet names the valid blocks
    try:
        BLOCKS.check_importable(found)
    except RegistryError:  # said again with what the run recorded: the package and its version
        package = (source or {}).get("package") or found.distribution
        version = (source or {}).get("version")
        wanted = f"{package}=={version}" if package and version else (package or found.module.split(".")[0])
        raise RegistryError(
            f"This model's attention block {att_type!r} lives in the module {found.module!r} "
            f"({found.target}), which cannot be imported here. Install the package that provides it "
            f"(pip install {wanted}, or pip install -e path/to/{package or found.module.split('.')[0]} for your "
            f"own) in this environment, or put its folder on PYTHONPATH, then run this again.") from None
    return att_type if known is not None else found.name


def block_options_of(spec: Mapping[str, Any]) -> dict:
    """The block options in a model spec (or a ``model`` config node)."""
    return {key: value for key, value in spec.items()
            if key not in MODEL_KEYS and key not in ("network_type", "num_classes", ATT_SOURCE)}


def describe_spec(spec: dict) -> str:
    """E.g. "ResNet-50 + CBAM (CIFAR100 stem, 100 classes)", "ResNeXt-50 (32x4d) + SE (ImageNet stem, 1000 classes)"."""
    attention = ""
    if spec["att_type"] != "none":
        options = ", ".join(f"{key}={value}" for key, value in block_options_of(spec).items())
        placement = spec.get("att_placement", "default")
        attention = (f" + {spec['att_type']}{f'({options})' if options else ''}"
                     f"{'' if placement == 'default' else f' at {placement}'}")
    network = network_label(spec["depth"], **shape_of(spec))
    return f"{network}{attention} ({spec['network_type']} stem, {spec['num_classes']} classes)"


def build_model(spec: dict, fused: bool | str = "auto") -> torch.nn.Module:
    """The network of a model spec; ``fused`` (model.fused) is how SE and CBAM run, not part of the spec."""
    spec = dict(spec)
    source = spec.pop(ATT_SOURCE, None)
    spec["att_type"] = _buildable_att_type(spec.get("att_type"), source)
    if "att_placement" not in spec:  # a checkpoint from before blocks declared their own options
        from .models.attention import block_options

        accepted = block_options(spec.get("att_type"))
        spec = {key: value for key, value in spec.items() if key not in LEGACY_BLOCK_KEYS or key in accepted}
    return ResidualNet(**spec, fused=fused)


def _instantiate_named(nodes: Mapping[str, Any] | None, group: str, base: type, what: str) -> list:
    """Each NAME -> {_target_, arguments} of ``nodes`` built with Hydra's ``instantiate`` and named NAME (which
    keys its state); a None entry is switched off. An object that is not a ``base`` is refused."""
    from hydra.utils import instantiate

    built = []
    for name, node in (nodes or {}).items():
        if node is None:
            continue
        made = instantiate(dict(node))
        if not isinstance(made, base):
            raise TypeError(f"{group}.{name}: {node['_target_']} built a {type(made).__name__}, not an "
                            f"attn_resnet.{base.__name__}; a configured {what} subclasses attn_resnet.{base.__name__}.")
        made.name = str(name)
        built.append(made)
    return built


def _listed(objects: list) -> str:
    return ", ".join(f"{made.name} ({type(made).__module__}.{type(made).__qualname__})" for made in objects)


def configured_callbacks(callbacks: Mapping[str, Any] | None) -> list:
    """The callbacks of the config's ``callbacks`` mapping (NAME -> {_target_, arguments}), built with Hydra's
    ``instantiate``; each is named NAME, which keys its state in checkpoints. A None entry is switched off."""
    from .engine.callbacks import Callback

    built = _instantiate_named(callbacks, "callbacks", Callback, "callback")
    if built:
        log.info("Callbacks from the config: %s", _listed(built))
    return built


def configured_loggers(config: Mapping[str, Any], spec: Mapping[str, Any], dataset: str):
    """The loggers of the config's ``logger`` mapping (NAME -> {_target_, arguments}, the ``logger`` group's
    choices and any ``+logger.NAME._target_=...``), built with Hydra's ``instantiate``, each named NAME; with the
    run's name, its tags (block, depth, dataset, seed) and its hyperparameters (the flattened config)."""
    from .engine.loggers import Logger, LoggerList, flatten_hparams

    built = _instantiate_named(config.get("logger"), "logger", Logger, "logger")
    hyperparams = flatten_hparams({k: v for k, v in config.items() if k != "hydra"})
    source = block_source(spec)
    if source:  # a block from outside the package: where it lives and which version ran
        hyperparams["model.att_source"] = (f"{source['target']} ({source.get('package') or 'no installed package'}"
                                           f"{' ' + source['version'] if source.get('version') else ''})")
    tags = {"block": str(spec["att_type"]), "depth": str(spec["depth"]), "dataset": str(dataset),
            "seed": str(config.get("seed"))}
    if built:
        log.info("Loggers: %s", _listed(built))
    return LoggerList(built, name=str(config.get("name") or ""), tags=tags, hyperparams=hyperparams)


def resolve_precision(requested: str, device: torch.device) -> str:
    """"auto": bf16 on GPUs that support it, fp16 on older GPUs, fp32 on the CPU."""
    requested = str(requested)
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "32"


def _builder_arguments(data: Mapping[str, Any]) -> dict:
    """The keys of a data config that go to the dataset's builder (``data.dataset_options`` lists those it takes)."""
    return {k: v for k, v in data.items() if k not in LOADER_KEYS + DATA_META_KEYS}


@dataclass
class Loaders:
    train: Any
    val: Any                 # the split that picks best.pt: held out from train, or the test split
    test: Any | None         # the test split, when a validation split was held out
    info: Any


@dataclass(frozen=True)
class Sharding:
    """This process's share of every split in a data-parallel run: rank ``rank`` of ``num_replicas``.

    ``local_processes``: the ranks on this machine, which share its cores for loader workers.
    """

    num_replicas: int = 1
    rank: int = 0
    local_processes: int = 1


def _loader_options(data: Mapping[str, Any], seed: int, device: torch.device, dataset, name: str,
                    channels_last: bool = False, dtype: torch.dtype = torch.float32,
                    sharding: Sharding = Sharding()) -> tuple[Callable, dict]:
    """``(builder, options)`` for the loaders of ``dataset``'s splits, as ``data.loader`` chooses; logs the choice.

    ``builder(split, batch_size=..., train=..., **options)`` makes one loader; either kind yields
    ``(images, targets)`` already on ``device``, normalized, as ``dtype`` and, with
    ``channels_last``, in that memory format; each rank of ``sharding`` gets its own share.
    """
    kind, note = resolve_loader(data.get("loader", "auto"), dataset, device, name)
    common = dict(seed=seed, device=device, channels_last=channels_last, dtype=dtype,
                  num_replicas=sharding.num_replicas, rank=sharding.rank)
    if kind == "device":  # no worker processes: data.num_workers does not apply
        log.info("%s", note)
        return DeviceImageLoader, common
    if kind == "dali":  # DALI's own threads decode; data.num_workers does not apply
        from .data.dali import DaliImageLoader

        log.info("%s", note)
        return DaliImageLoader, common
    workers, workers_note = resolve_num_workers(data.get("num_workers", 0), sharding.local_processes)
    log.info("%s; %s", note, workers_note)
    return build_prefetched_loader, dict(
        common, num_workers=workers, pin_memory=bool(data.get("pin_memory")) and device.type == "cuda",
        persistent_workers=bool(data.get("persistent_workers")))


def augment_spec(aug: Mapping[str, Any]) -> AugmentSpec:
    """The per-image ops of an ``aug`` config group (its mixing keys are the objective's)."""
    return AugmentSpec(policy=str(aug.get("policy", "none")), num_ops=int(aug.get("num_ops", 2)),
                       magnitude=int(aug.get("magnitude", 9)), cutout=int(aug.get("cutout", 0) or 0),
                       random_erasing=float(aug.get("random_erasing", 0.0)))


def batch_mix(aug: Mapping[str, Any], num_classes: int, seed: int) -> BatchMix:
    """The batch mixing of an ``aug`` config group (mixup, CutMix), for the objective."""
    return BatchMix(num_classes, float(aug.get("mixup", 0.0)), float(aug.get("cutmix", 0.0)),
                    float(aug.get("mix_prob", 1.0)), float(aug.get("switch_prob", 0.5)),
                    int(aug.get("mix_off_epoch", 0)), seed)


def make_loaders(data: Mapping[str, Any], seed: int, device: torch.device, channels_last: bool = False,
                 dtype: torch.dtype = torch.float32, sharding: Sharding = Sharding(),
                 aug: Mapping[str, Any] | None = None) -> Loaders:
    """Train, validation and (with ``val_split``) test loaders for a plain data config dict.

    Their batches are on ``device``, normalized, as ``dtype``, channels_last on request; see
    ``_loader_options`` for the choice between the device loader and DataLoader workers.
    With ``sharding`` each loader yields this rank's share: ``data.batch_size`` images per
    batch on every rank (the train shards equal, the val/test shards together covering each
    image once). ``aug`` (the ``aug`` config group) adds the training split's per-image ops after
    the data set's own crop and flip (``augment_spec``); ``data.repeat_aug`` repeats its images.
    """
    splits = build_splits(data["name"], **_builder_arguments(data))
    splits.train.set_augment(augment_spec(aug or {}))
    repeats = int(data.get("repeat_aug", 1) or 1)
    build, options = _loader_options(data, seed, device, splits.train, str(data["name"]), channels_last, dtype,
                                     sharding)
    val_batch = int(data.get("val_batch_size") or data["batch_size"])
    train = build(splits.train, batch_size=int(data["batch_size"]), train=True, **options)
    train.batch_sampler.set_repeats(repeats)
    test = build(splits.test, batch_size=val_batch, train=False, **options)
    if splits.val is None:
        return Loaders(train, test, None, splits.info)
    val = build(splits.val, batch_size=val_batch, train=False, **options)
    return Loaders(train, val, test, splits.info)


def make_eval_loader(data: Mapping[str, Any], seed: int, device: torch.device, channels_last: bool = False,
                     dtype: torch.dtype = torch.float32):
    """The val/test split alone (the train split is never read or scanned) and its DataInfo."""
    dataset, info = build_eval_dataset(data["name"], **_builder_arguments(data))
    val_batch = int(data.get("val_batch_size") or data.get("batch_size") or 256)
    build, options = _loader_options(data, seed, device, dataset, str(data["name"]), channels_last, dtype)
    return build(dataset, batch_size=val_batch, train=False, **options), info


def configure_determinism(seed: int, deterministic: bool) -> None:
    """Seed every RNG; set (or, for a later job of a sweep, unset) deterministic kernels.

    cuDNN's autotuner (``cudnn.benchmark``) is the trainer's to set, from
    ``trainer.cudnn_benchmark`` and whether deterministic algorithms are on.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # library use; the entry points set it earlier
        torch.backends.cudnn.deterministic = True
        # warn_only: a few CUDA kernels (e.g. adaptive pooling backward) have no deterministic version.
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
