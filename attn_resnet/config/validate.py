"""Validate a composed config before anything expensive: unknown keys, bad choices, bad numbers.

Torch-free, so ``train.py`` rejects a bad value within a second of starting. The valid keys
of a config group are the keys of the option file that was chosen (``conf/data/cifar10.yaml``
and the files it extends): the config files are the schema, and a key that none of them
declares (Hydra's ``+model.att=CBAM``) is an error instead of being silently ignored.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from .. import dataset_registry
from ..attention_registry import BLOCK_GROUP, BLOCKS, NO_ATTENTION, attention_names, declared_block, find_block
from ..architectures import SHAPE_DEFAULTS, check_shape, shape_of
from ..optim_registry import OPTIMIZERS, SCHEDULES
from ..registry import Registry, RegistryError, locate_module, parse_path
from . import choices as C

GROUPS = ("model", "data", "optim", "sched", "trainer", "aug")
# The config group whose options are loggers (conf/logger/): NAME -> {_target_, arguments}, several at once.
LOGGER_GROUP = "logger"
# Keys that an earlier release had, with what replaced them: a config that still sets one is told the new way.
REPLACED_KEYS = {
    "trainer.tensorboard": (
        "trainer.tensorboard was replaced by the logger config group: logger=tensorboard (the default) writes "
        "TensorBoard events; to run without them choose other loggers (e.g. logger=csv, or several: "
        "logger=[csv,mlflow]) or none (logger=[]). Remove trainer.tensorboard from the command line or the "
        "config file."),
}
# How each group's option file is named after a key of the composed config, for callers
# (tests, notebooks) that compose without Hydra's runtime record of the choices.
_OPTION_FROM = {"model": lambda cfg: "resnet", "data": lambda cfg: cfg.data.get("name"),
                "optim": lambda cfg: cfg.optim.get("name"), "sched": lambda cfg: cfg.sched.get("name"),
                "trainer": lambda cfg: "default", "aug": lambda cfg: "basic"}
# evaluate.py may override these data keys of the data settings stored in a checkpoint.
EVALUATE_DATA_KEYS = ("name", "stem", "network_type", "root", "download", "val_subset", "batch_size", "val_batch_size",
                      "num_workers", "pin_memory", "persistent_workers", "image_size", "loader")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class ConfigError(ValueError):
    """A config key or value that cannot work; raised before any data is read."""


def default_conf_dir() -> Path:
    """The project's config folder: ``attn_resnet/conf``, which in a checkout links to the repository's ``conf/``
    and in an installed wheel holds its copy."""
    return (Path(__file__).resolve().parents[1] / "conf").resolve()


ConfDirs = Path | Sequence[Path]  # the config folders: the project's first, then the user's (hydra.searchpath)


def config_dirs(conf_dir: ConfDirs | None) -> list[Path]:
    """``conf_dir`` as a list of folders, the project's first (the default folder when None)."""
    if conf_dir is None:
        return [default_conf_dir()]
    return [Path(conf_dir)] if isinstance(conf_dir, (str, Path)) else [Path(d) for d in conf_dir] or [default_conf_dir()]


def source_folder(path: str, scheme: str = "file") -> Path | None:
    """The folder of one config search path entry (``file:///a/conf``, ``/a/conf``, ``pkg://mypkg.conf``)."""
    if path.startswith("file://"):
        scheme, path = "file", path[len("file://"):]
    elif path.startswith("pkg://"):
        scheme, path = "pkg", path[len("pkg://"):]
    if scheme == "file":
        return Path(path)
    if scheme == "pkg":
        spec = locate_module(path.replace("/", "."))
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        return Path(locations[0]) if locations else None
    return None


def conf_dir_of(hydra_cfg: Any) -> list[Path]:
    """The config folders Hydra composed from: its primary folder, then those of ``hydra.searchpath`` (a user's
    experiments and options); the repository's ``conf/`` when Hydra's record says nothing usable."""
    folders: list[Path] = []
    try:
        for source in hydra_cfg.runtime.config_sources:
            if source.provider in ("hydra", "schema"):
                continue  # Hydra's own configs and the structured-config store
            folder = source_folder(str(source.path), str(source.schema))
            if folder is not None and folder.is_dir() and folder not in folders:
                folders.append(folder)
    except Exception:  # noqa: BLE001 - any shape we do not know: use the default folder
        pass
    return folders or [default_conf_dir()]


def option_file(conf_dir: ConfDirs | None, group: str, option: str) -> Path | None:
    """The file of option ``option`` of config group ``group`` in the first folder that has it."""
    return next((path for folder in config_dirs(conf_dir)
                 if (path := folder / group / f"{option}.yaml").is_file()), None)


def option_names(conf_dir: ConfDirs | None, group: str) -> list[str]:
    """Every option of ``group`` over all the config folders."""
    return sorted({path.stem for folder in config_dirs(conf_dir) for path in (folder / group).glob("*.yaml")})


# ------------------------------------------------------------------ the schema
def _file_keys(path: Path, seen: frozenset = frozenset()) -> set[str]:
    """Top-level keys of one config file plus those of the same-group files its defaults list extends."""
    if not path.is_file() or path in seen:
        return set()
    content = OmegaConf.load(path)
    keys = {str(k) for k in content if k != "defaults"}
    for entry in content.get("defaults") or []:
        if isinstance(entry, str) and entry != "_self_":
            keys |= _file_keys(path.with_name(f"{entry}.yaml"), seen | {path})
    return keys


def group_keys(conf_dir: ConfDirs | None, group: str, option: str | None) -> set[str]:
    """The keys that option ``option`` of config group ``group`` declares (empty if no folder has its file)."""
    path = option_file(conf_dir, group, str(option)) if option else None
    return _file_keys(path) if path is not None else set()


def _top_level_keys(conf_dir: ConfDirs, config_name: str, experiment: str | None) -> set[str]:
    keys = {"defaults", *GROUPS, LOGGER_GROUP} | _file_keys(config_dirs(conf_dir)[0] / f"{config_name}.yaml")
    path = option_file(conf_dir, "experiment", experiment) if experiment else None
    if path is not None:
        keys |= {str(k) for k in OmegaConf.load(path) if k not in ("defaults", "hydra")}
    return keys - {"defaults", "hydra"}


def _is_subsequence(short: str, long: str) -> bool:
    """True when ``short``'s letters appear in order in ``long`` (``lr`` in ``learning_rate``)."""
    letters = iter(long)
    return all(char in letters for char in short)


def nearest_keys(key: str, where: str, valid: Iterable[str], elsewhere: Iterable[str] = ()) -> list[str]:
    """The full names most likely meant by the unknown ``key`` of ``where`` (a group, or "" for the top level).

    First a key of the same name in another group (``trainer.mixup`` -> ``aug.mixup``: the key is
    right, its group is not), then near spellings in its own group (``trainer.epoch`` ->
    ``trainer.epochs``), and only when there are none, near spellings elsewhere. ``elsewhere``
    holds full names (``aug.mixup``, ``seed``).
    """
    valid = sorted(valid)
    leaf = key.rsplit(".", 1)[-1]
    prefix = f"{where}." if where else ""
    elsewhere = sorted(set(elsewhere) - {prefix + name for name in valid} - {key})
    same = [name for name in elsewhere if name.rsplit(".", 1)[-1] == leaf]
    own = difflib.get_close_matches(leaf, valid, n=3, cutoff=0.5) or [
        name for name in valid if name[:1] == leaf[:1] and _is_subsequence(name, leaf)][:3]
    near = same + [prefix + name for name in own]
    if not near:
        # A stricter cutoff than in its own group: a near name in another group is a weaker guess.
        leaves = difflib.get_close_matches(leaf, sorted({name.rsplit(".", 1)[-1] for name in elsewhere}), n=3,
                                           cutoff=0.75)
        near = [name for name in elsewhere if name.rsplit(".", 1)[-1] in leaves]
    return near[:3]


def _unknown_key_error(key: str, where: str, valid: Iterable[str], elsewhere: Iterable[str] = ()) -> ConfigError:
    valid = sorted(valid)
    near = nearest_keys(key, where, valid, elsewhere)
    prefix = f"{where}." if where else ""
    hint = f"Did you mean {' or '.join(near)}? " if near else ""
    return ConfigError(
        f"Unknown config key {key!r}: no config file declares it, so it would be silently ignored. {hint}"
        f"Valid keys{f' of {where}' if where else ''}: {', '.join(valid)}. Set an existing key without a "
        f"leading '+' (Hydra's '+key=value' adds a new key instead of setting one), e.g. "
        f"{near[0] if near else prefix + valid[0]}=..."
    )


def _declared_names(cfg: DictConfig, groups: Iterable[str]) -> set[str]:
    """Every key of ``cfg`` by its full name (``seed``, ``aug.mixup``): where a misplaced key may belong."""
    names = {str(key) for key in cfg if key != "hydra"}
    for group in groups:
        if isinstance(cfg.get(group), DictConfig):
            names |= {f"{group}.{key}" for key in cfg[group]}
    return names


def check_unknown_keys(cfg: DictConfig, config_name: str = "train", group_choices: dict | None = None,
                       conf_dir: ConfDirs | None = None, groups: Iterable[str] = GROUPS) -> None:
    """ConfigError naming the first key that no chosen config file declares, and the nearest valid keys."""
    conf_dir = config_dirs(conf_dir)
    if not conf_dir[0].is_dir():
        return  # an installed package without its conf/ folder: Hydra composed from elsewhere
    group_choices = dict(group_choices or {})
    for key, message in REPLACED_KEYS.items():
        if OmegaConf.select(cfg, key, default=None) is not None:
            raise ConfigError(message)
    top = _top_level_keys(conf_dir, config_name, group_choices.get("experiment"))
    groups = tuple(groups)
    for key in cfg:
        if key not in top and key != "hydra":
            raise _unknown_key_error(str(key), "", top, _declared_names(cfg, groups))
    for group in groups:
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        option = group_choices.get(group) or _OPTION_FROM[group](cfg)
        valid = group_keys(conf_dir, group, option)
        if not valid:
            continue  # a config file outside this folder (e.g. a user's own search path)
        for key in node:
            if key not in valid and group != "model":  # other model.* keys: the block's options (validate_model)
                raise _unknown_key_error(f"{group}.{key}", group, valid, _declared_names(cfg, groups))


# ---------------------------------------------------------------- the values
def _listed(values) -> str:
    return ", ".join(str(v) for v in values)


def fail_choice(key: str, value: Any, valid) -> None:
    valid = list(valid)
    raise ConfigError(
        f"Invalid config value {key}={value!r}. Valid choices: {_listed(valid)}. "
        f"Fix it on the command line (e.g. {key}={valid[0]}) or in the config file."
    )


def _number(cfg: DictConfig, key: str, *, integer: bool = False, allow_zero: bool = False,
            allow_none: bool = False) -> None:
    value = OmegaConf.select(cfg, key, throw_on_missing=False)
    if value is None and allow_none:
        return
    kinds = (int,) if integer else (int, float)
    ok = not isinstance(value, bool) and isinstance(value, kinds) and (value > 0 or (allow_zero and value == 0))
    if not ok:
        what = ("a non-negative " if allow_zero else "a positive ") + ("integer" if integer else "number")
        raise ConfigError(f"Invalid config value {key}={value!r}: it must be {what}"
                          f"{' or null' if allow_none else ''}.")


def _stop_signals(value: Any) -> None:
    """``trainer.stop_signals``: a list of catchable signal names (``signals.signal_numbers`` says which)."""
    from omegaconf import ListConfig

    from ..signals import signal_numbers

    if value is None:
        return
    if not isinstance(value, (list, tuple, ListConfig)):
        raise ConfigError(f"Invalid config value trainer.stop_signals={value!r}: it must be a list of signal names, "
                          f"e.g. trainer.stop_signals=[SIGTERM,SIGUSR2], or [] for none.")
    try:
        signal_numbers([str(name) for name in value])
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _boolean(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    if not isinstance(value, bool):
        raise ConfigError(f"Invalid config value {key}={value!r}: it must be true or false.")


def validate_model(cfg: DictConfig, conf_dir: ConfDirs | None = None) -> None:
    model = cfg.model
    if isinstance(model.depth, bool) or model.depth not in C.DEPTHS:
        fail_choice("model.depth", model.depth, C.DEPTHS)
    found = _attention_block(model.att_type)
    if model.get("init") not in C.INITS:
        fail_choice("model.init", model.get("init"), C.INITS)
    placement = model.get("att_placement", C.DEFAULT_PLACEMENT)
    if placement not in C.placement_choices():
        fail_choice("model.att_placement", placement, C.placement_choices())
    for key in ("stride_in_1x1", "zero_init_residual"):
        _boolean(cfg, f"model.{key}")
    _network_shape(model)
    if "drop_path" in model:
        _number(cfg, "model.drop_path", allow_zero=True)
        if not model.drop_path < 1:
            raise ConfigError(f"Invalid config value model.drop_path={model.drop_path}: it must be in [0, 1) "
                              f"(e.g. 0.05 for ResNet-50; the last block's drop rate).")
    fused = model.get("fused", "auto")
    if not any(fused is choice if isinstance(choice, bool) else fused == choice for choice in C.FUSED_CHOICES):
        raise ConfigError(f"Invalid config value model.fused={fused!r}. Valid choices: auto, true, false (auto: SE's "
                          f"and CBAM's fused Triton kernels on CUDA when Triton is importable, the eager path "
                          f"elsewhere; true: always fused, which on the CPU needs TRITON_INTERPRET=1 and is meant "
                          f"for tests; false: always eager). Fix it on the command line (e.g. model.fused=auto) or "
                          f"in the config file.")
    _validate_transfer(cfg)
    network_keys = (group_keys(conf_dir or default_conf_dir(), "model", "resnet")
                    or set(C.NETWORK_MODEL_KEYS + C.TRANSFER_MODEL_KEYS + C.EXECUTION_MODEL_KEYS))
    options = {str(key): value for key, value in model.items() if key not in network_keys}
    if options or placement != C.DEFAULT_PLACEMENT or (found is not None and found.external):
        check_block(str(model.att_type), placement, options, sorted(network_keys))


def _network_shape(model: DictConfig) -> None:
    """model.width, model.cardinality and model.width_per_group (WideResNet, ResNeXt) fit the depth's blocks."""
    shape = shape_of(model)
    try:
        check_shape(C.RESNET_LAYOUTS[model.depth][0], **shape)
    except ValueError as error:
        settings = " ".join(f"model.{key}={value}" for key, value in shape.items() if value != SHAPE_DEFAULTS[key])
        raise ConfigError(f"Invalid network shape ({settings}, model.depth={model.depth}): {error}") from None


def _attention_block(att_type: Any):
    """Where the chosen block lives (None for "none"); ConfigError for an unknown name, or for an import path
    whose module is not on the Python path (found without importing anything, so the answer is immediate)."""
    if C.canonical_attention(att_type) is None:
        raise ConfigError(
            f"Invalid config value model.att_type={att_type!r}. Valid choices: {_listed(attention_names())} "
            f"(case-insensitive); or a block of your own by its import path, model.att_type=package.module:Class, "
            f"or by the name its installed package declares (entry point group {BLOCK_GROUP}). Fix it on the "
            f"command line (e.g. model.att_type=CBAM) or in the config file.")
    found = find_block(att_type)
    try:
        return found if found is None else BLOCKS.check_importable(found)
    except RegistryError as error:
        raise ConfigError(str(error)) from None


def _validate_transfer(cfg: DictConfig) -> None:
    """model.init_from (a readable file), init_from_format, freeze and freeze_bn_stats."""
    model = cfg.model
    if model.get("init_from_format", "auto") not in C.INIT_FORMATS:
        fail_choice("model.init_from_format", model.get("init_from_format"), C.INIT_FORMATS)
    new_head = model.get("new_head", "auto")
    if not any(new_head is choice if isinstance(choice, bool) else new_head == choice
               for choice in C.NEW_HEAD_CHOICES):
        raise ConfigError(f"Invalid config value model.new_head={new_head!r}. Valid choices: auto, true, false (auto: "
                          f"a new classifier when the classes of model.init_from's file are not the data's, by name "
                          f"where both record names, else by count; true: always new; false: keep the file's).")
    if model.get("freeze", "none") not in C.FREEZE_CHOICES:
        fail_choice("model.freeze", model.get("freeze"), C.FREEZE_CHOICES)
    if "freeze_bn_stats" in model:
        _boolean(cfg, "model.freeze_bn_stats")
    path = model.get("init_from")
    if path is None:
        return
    if path == C.INIT_FROM_REQUIRED:
        raise ConfigError(
            "model.init_from is required: the chosen recipe fine-tunes pretrained weights. Add "
            "model.init_from=PATH with the file to start from: a training run's checkpoints/best.pt, an exported "
            ".safetensors, the authors' .pth.tar, or a torchvision/timm ResNet state dict (e.g. the one "
            "torch.save(torchvision.models.resnet50(weights='DEFAULT').state_dict(), 'resnet50.pth') writes)."
        )
    if not isinstance(path, str) or not path:
        raise ConfigError(f"Invalid config value model.init_from={path!r}: it must be the path of a weights file "
                          f"(a checkpoint .pt, a .safetensors or a .pth state dict), or null.")
    import os

    if not os.path.isfile(path):
        where = "a folder, not a file" if os.path.isdir(path) else "not found"
        raise ConfigError(f"model.init_from={path!r} is {where}. Pass the weights file to start from: a training "
                          f"run's checkpoints/best.pt, an exported .safetensors, the authors' .pth.tar, or a "
                          f"torchvision/timm ResNet state dict (relative paths start at the folder train.py is run "
                          f"from).")


def check_block(att_type: str, placement: str, options: dict, network_keys: list[str]) -> None:
    """The chosen block takes these options and this placement, and builds with them (imports torch).

    Runs only when the config gives block options or a placement, so a plain config stays
    torch-free; a bad option is reported with the options the block takes, read from the block's
    source before torch is imported (a typo such as ``model.dept=50`` is refused at once).
    """
    name = C.canonical_attention(att_type)
    declared = None if name == NO_ATTENTION else declared_block(name)
    external = name != NO_ATTENTION and find_block(name).external
    if name == NO_ATTENTION or declared is not None:
        accepted = {} if declared is None else dict(declared.options)  # defaults as written in the source
    else:  # a block whose source cannot be read that way: ask the class
        from ..models.attention import block_options

        accepted = {key: repr(value) for key, value in block_options(att_type).items()}
    unknown = [key for key in options if key not in accepted]
    if unknown:
        valid = [*network_keys, *accepted]
        error = _unknown_key_error(f"model.{unknown[0]}", "model", valid)
        takes = (f"the {name} block takes " + ", ".join(f"model.{k} (default {v})" for k, v in accepted.items())
                 if accepted else f"att_type={name} takes no block options")
        raise ConfigError(f"{error} (model.* keys are the network's own or the chosen block's options: {takes}.)")
    from ..models.attention import AttentionConfigError, build_attention, check_block_contract, resolve_placement

    values = {key: plain(value) for key, value in options.items()}
    try:
        resolve_placement(att_type, placement)
        build_attention(att_type, 256, **values)  # the block's own checks of the values
        if external:  # a block from outside the package: run it once, so that a broken one stops here
            check_block_contract(att_type, values)
    except AttentionConfigError as error:
        raise ConfigError(str(error)) from None
    except (ValueError, TypeError) as error:
        raise ConfigError(f"Invalid block option for att_type={att_type} "
                          f"({', '.join(f'model.{k}={v!r}' for k, v in options.items())}): {error}") from None


def _num_workers(cfg: DictConfig) -> None:
    value = cfg.data.get("num_workers")
    if value == "auto":
        return
    _number(cfg, "data.num_workers", integer=True, allow_zero=True)


def validate_data(cfg: DictConfig) -> None:
    data = cfg.data
    found = _registered(dataset_registry.DATASETS, "data.name", data.get("name"))
    if found.external:
        try:
            dataset_registry.entry(data.get("name"))  # imports the module that declares it: a DatasetEntry?
        except RegistryError as error:
            raise ConfigError(str(error)) from None
    _stem(data)
    _data_transforms(data)
    _number(cfg, "data.batch_size", integer=True)
    _number(cfg, "data.val_batch_size", integer=True, allow_none=True)
    _num_workers(cfg)
    if "loader" in data and data.get("loader") not in C.LOADERS:
        fail_choice("data.loader", data.get("loader"), C.LOADERS)
    if data.get("loader") == "dali":
        _check_dali(str(data.get("name")))
    if "repeat_aug" in data:
        _number(cfg, "data.repeat_aug", integer=True)
    for key in ("train_subset", "val_subset", "val_split"):
        if key in data:
            _number(cfg, f"data.{key}", integer=True, allow_none=True)
    if "image_size" in data:
        _image_size(data.get("image_size"))
    if data.get("classes") is not None:
        _classes(data.get("classes"))


def _stem(data: DictConfig) -> None:
    """data.stem (imagenet | cifar), or its older spelling data.network_type; not two different stems."""
    try:
        dataset_registry.data_stem(data)
    except RegistryError as error:
        raise ConfigError(str(error)) from None


def _data_transforms(data: DictConfig) -> None:
    """data.mean / data.std (3 numbers each, std positive; null: the dataset's), and the class-folder
    datasets' data.crop_scale (0 < low <= high <= 1) and data.crop_pct (0 < pct <= 1)."""
    try:
        dataset_registry.check_normalization(plain(data.get("mean")), plain(data.get("std")))
        if "crop_scale" in data or "crop_pct" in data:
            dataset_registry.check_crop(plain(data.get("crop_scale", list(dataset_registry.DEFAULT_CROP_SCALE))),
                                        data.get("crop_pct", dataset_registry.DEFAULT_CROP_PCT))
    except RegistryError as error:
        raise ConfigError(str(error)) from None


def _image_size(value: Any) -> None:
    sides = list(value) if isinstance(value, ListConfig) else [value]
    if value is None or (len(sides) in (1, 2) and all(
            isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in sides)):
        return
    raise ConfigError(f"Invalid config value data.image_size={value!r}: it must be a positive integer (a square "
                      f"side) or [height, width]; null keeps the data set's own size.")


def _classes(value: Any) -> None:
    """data.classes: a list of at least two distinct class names or indices (checked against the data set later)."""
    entries = list(value) if isinstance(value, ListConfig) else None
    if entries is None or len(entries) < 2 or not all(
            isinstance(entry, (str, int)) and not isinstance(entry, bool) for entry in entries):
        raise ConfigError(f"Invalid config value data.classes={value!r}: it must be a list of at least two class "
                          f"names or indices, e.g. data.classes=[cat,dog] or data.classes=[0,1,2,3,4]; null keeps "
                          f"every class.")
    repeated = sorted({str(entry) for entry in entries if entries.count(entry) > 1})
    if repeated:
        raise ConfigError(f"Invalid config value data.classes={value!r}: {', '.join(repeated)} appear(s) more than "
                          f"once; each class may appear once, since its position is its new label.")


def _check_dali(dataset: str) -> None:
    """data.loader=dali: only for image files in class folders, and only where DALI is installed."""
    from ..optional import DALI_INSTALL, dali_available

    readers = [name for name in dataset_registry.DATASETS if dataset_registry.entry(name).image_files]
    if not dataset_registry.entry(dataset).image_files:
        raise ConfigError(f"data.loader=dali decodes image files from class folders (data={' or '.join(readers)}); "
                          f"{dataset} is held in memory. Use data.loader=auto for it.")
    if not dali_available():
        raise ConfigError(DALI_INSTALL)


def validate_train_config(cfg: DictConfig, group_choices: dict | None = None,
                          conf_dir: ConfDirs | None = None) -> None:
    """Check every key, choice and number a training run depends on; torch-free and fast."""
    check_unknown_keys(cfg, "train", group_choices, conf_dir)
    if isinstance(cfg.get("seed"), bool) or not isinstance(cfg.get("seed"), int):
        raise ConfigError(f"Invalid config value seed={cfg.get('seed')!r}: it must be an integer.")
    if "optimized_metric" in cfg and cfg.optimized_metric not in C.OPTIMIZED_METRICS:
        fail_choice("optimized_metric", cfg.optimized_metric, C.OPTIMIZED_METRICS)
    validate_model(cfg, conf_dir)
    validate_data(cfg)
    _registered(OPTIMIZERS, "optim.name", cfg.optim.name)
    _number(cfg, "optim.lr")
    _number(cfg, "optim.weight_decay", allow_zero=True)
    _number(cfg, "optim.reference_batch_size", integer=True, allow_none=True)
    if "head_lr_scale" in cfg.optim:
        _number(cfg, "optim.head_lr_scale")
    if cfg.optim.get("layer_decay") is not None:
        _number(cfg, "optim.layer_decay")
        if cfg.optim.layer_decay > 1:
            raise ConfigError(f"Invalid config value optim.layer_decay={cfg.optim.layer_decay}: it must be in (0, 1] "
                              f"(e.g. 0.7; each layer trains at that times the lr of the layer above), or null.")
    _registered(SCHEDULES, "sched.name", cfg.sched.name)
    _number(cfg, "sched.warmup_epochs", allow_zero=True, allow_none=cfg.sched.name == "onecycle")
    if cfg.sched.name == "onecycle" and cfg.sched.warmup_epochs is not None \
            and not 0 < cfg.sched.warmup_epochs < cfg.trainer.epochs:
        raise ConfigError(f"Invalid config value sched.warmup_epochs={cfg.sched.warmup_epochs} for sched=onecycle: its "
                          f"rising phase must last more than 0 and fewer than trainer.epochs={cfg.trainer.epochs} "
                          f"epochs.")
    trainer = cfg.trainer
    if str(trainer.precision) not in ("auto", *C.PRECISIONS):
        fail_choice("trainer.precision", trainer.precision, ("auto", *C.PRECISIONS))
    if not _DEVICE.match(str(trainer.device)):
        fail_choice("trainer.device", trainer.device, ("auto", "cpu", "cuda", "cuda:N"))
    if str(trainer.get("compile_mode", "default")) not in C.COMPILE_MODES:
        fail_choice("trainer.compile_mode", trainer.get("compile_mode"), C.COMPILE_MODES)
    if str(trainer.get("eval_precision", "32")) not in C.EVAL_PRECISIONS:
        fail_choice("trainer.eval_precision", trainer.get("eval_precision"), C.EVAL_PRECISIONS)
    for key in ("trainer.epochs", "trainer.accumulate"):
        _number(cfg, key, integer=True)
    for key in ("trainer.checkpoint_every_steps", "trainer.limit_train_batches", "trainer.limit_val_batches",
                "trainer.log_every_steps"):
        _number(cfg, key, integer=True, allow_zero=True)
    for key in ("trainer.label_smoothing", "trainer.grad_clip"):
        _number(cfg, key, allow_zero=True)
    for key in ("val_every_epochs", "checkpoint_every_epochs"):
        if key in trainer:
            _number(cfg, f"trainer.{key}", integer=True)
    if "attention_maps_every" in trainer:
        _number(cfg, "trainer.attention_maps_every", integer=True, allow_zero=True)
        _number(cfg, "trainer.attention_maps_images", integer=True)
    if "progress_interval" in trainer:
        _number(cfg, "trainer.progress_interval", allow_zero=True)
    if "dist_timeout" in trainer:
        _number(cfg, "trainer.dist_timeout")
    if "stop_signals" in trainer:
        _stop_signals(trainer.stop_signals)
    for key in ("sync_bn", "save_best"):
        if key in trainer:
            _boolean(cfg, f"trainer.{key}")
    if not 0 <= trainer.label_smoothing < 1:
        raise ConfigError(f"Invalid config value trainer.label_smoothing={trainer.label_smoothing}: "
                          f"it must be in [0, 1).")
    for key in ("channels_last", "compile", "deterministic", "progress", "cudnn_benchmark"):
        _boolean(cfg, f"trainer.{key}")
    if "compile_eval" in trainer:
        _boolean(cfg, "trainer.compile_eval")
    if "tta" in trainer and str(trainer.tta) not in C.TTA_MODES:
        fail_choice("trainer.tta", trainer.tta, C.TTA_MODES)
    if "loss" in trainer and trainer.loss not in C.LOSSES:
        fail_choice("trainer.loss", trainer.loss, C.LOSSES)
    if trainer.get("bce_target_threshold") is not None:
        _number(cfg, "trainer.bce_target_threshold", allow_zero=True)
        if not 0 <= trainer.bce_target_threshold < 1:
            raise ConfigError(f"Invalid config value trainer.bce_target_threshold={trainer.bce_target_threshold}: "
                              f"it must be in [0, 1) (timm's recipes use 0.2), or null for soft targets.")
    if "ema_decay" in trainer:
        _number(cfg, "trainer.ema_decay", allow_zero=True)
        if not 0 <= trainer.ema_decay < 1:
            raise ConfigError(f"Invalid config value trainer.ema_decay={trainer.ema_decay}: it must be in [0, 1) "
                              f"(e.g. 0.999; 0 keeps no average).")
        _boolean(cfg, "trainer.ema_warmup")
    resume = str(trainer.resume)
    if resume not in ("auto", "never") and not Path(resume).is_file():
        raise ConfigError(
            f"Invalid config value trainer.resume={resume!r}: no such file. Use trainer.resume=auto (continue "
            f"from the run folder's checkpoints/last.pt when present), never, or the path of a checkpoint."
        )
    validate_aug(cfg)
    validate_callbacks(cfg)
    validate_loggers(cfg, conf_dir)
    check_declared_options(cfg, group_choices, conf_dir)
    check_callables(cfg)


# The names of the built-in callbacks, which key their state in checkpoints too.
BUILT_IN_CALLBACKS = ("ema", "attention_images", "frozen_norms", "init_from")


def validate_callbacks(cfg: DictConfig) -> None:
    """``callbacks``: NAME -> {_target_: an importable class or factory, its arguments}. ConfigError, before any
    run folder is made, for a target that is missing or cannot be imported, arguments it does not take, or a
    name taken by a built-in callback. Imports the targets' modules (only when callbacks are configured)."""
    callbacks = cfg.get("callbacks")
    if callbacks is None:
        return
    example = "+callbacks.NAME._target_=package.module.Class"
    if not isinstance(callbacks, DictConfig):
        raise ConfigError(f"Invalid config value callbacks={callbacks!r}: it must be a mapping NAME -> "
                          f"{{_target_: package.module.Class, arg: value}} (on the command line: {example}).")
    for name, key, node in _target_nodes(callbacks, "callbacks"):
        if name in BUILT_IN_CALLBACKS:
            raise ConfigError(f"{key}: the name {name!r} is a built-in callback's (its state is saved under it): "
                              f"give yours another name. Built-in names: {', '.join(BUILT_IN_CALLBACKS)}.")
        from ..engine.callbacks import Callback  # torch-free

        _configured_class(key, node, Callback, "callback", "overrides the hooks it needs (docs/extending.md)")


def _target_nodes(nodes: DictConfig, group: str, hint: str = ""):
    """(name, key, node) of each entry of ``nodes`` that is switched on (``group.NAME=null`` switches one off);
    ConfigError for an entry without a ``_target_`` (``hint``: what else to say then)."""
    for name, node in nodes.items():
        key = f"{group}.{name}"
        if node is None:
            continue
        if not isinstance(node, DictConfig) or not isinstance(node.get("_target_"), str):
            raise ConfigError(f"{key} needs a _target_: the import path of its class, e.g. "
                              f"+{key}._target_=package.module.Class (and +{key}.arg=value for its arguments).{hint}")
        yield name, key, node


def _configured_class(key: str, node: DictConfig, base: type, kind: str, contract: str):
    """The class (or factory) a ``{_target_, arguments}`` node names, imported; ConfigError for a target that is not
    an import path, whose module is not on the Python path, that does not take the arguments given, or a class that
    does not subclass ``base`` (attn_resnet.<base>, which a configured ``kind`` subclasses and ``contract``)."""
    import inspect

    target = str(node._target_)
    path = parse_path(target)
    if path is None:
        raise ConfigError(f"Invalid config value {key}._target_={target!r}: it must be an import path, "
                          f"package.module.Class (or package.module:Class).")
    module, attribute = path
    if locate_module(module) is None:
        raise ConfigError(f"{key}._target_={target}: the module {module!r} cannot be imported here (no such "
                          f"module on the Python path). Install the package that provides it (pip install -e "
                          f"path/to/your/package), or put its folder on PYTHONPATH; check the spelling.")
    registry = Registry(kind, f"attn_resnet.{kind}s")
    try:
        factory = registry.load(f"{module}:{attribute}")
    except RegistryError as error:
        raise ConfigError(f"{key}: {error}") from None
    arguments = {str(k): v for k, v in node.items() if not str(k).startswith("_")}
    try:
        inspect.signature(factory).bind(**arguments)
    except TypeError as error:
        raise ConfigError(f"{key}: {target} does not take these arguments ({error}): "
                          f"{', '.join(f'{key}.{k}={v!r}' for k, v in arguments.items()) or 'none given'}. "
                          f"It takes {inspect.signature(factory)}.") from None
    except ValueError:
        pass  # a callable without a readable signature: its call will tell
    if isinstance(factory, type) and not issubclass(factory, base):
        raise ConfigError(f"{key}._target_={target} is not an attn_resnet.{base.__name__}: a configured {kind} "
                          f"subclasses attn_resnet.{base.__name__} and {contract}.")
    return factory


def validate_loggers(cfg: DictConfig, conf_dir: ConfDirs | None = None) -> None:
    """``logger``: NAME -> {_target_: a Logger class, its arguments} (the ``logger`` group's choices and any
    ``+logger.NAME._target_=...``). ConfigError, before any run folder is made, for an entry without a target, a
    target that cannot be imported or does not take its arguments, and a logger whose package is not installed
    (naming the extra to install). Imports the loggers' modules, which import neither torch nor their libraries."""
    from ..optional import missing_extra

    loggers = cfg.get(LOGGER_GROUP)
    if loggers is None:
        return
    choices = ", ".join(option_names(conf_dir, LOGGER_GROUP))
    if not isinstance(loggers, DictConfig):
        raise ConfigError(f"Invalid config value logger={loggers!r}: choose loggers from the logger config group "
                          f"(logger=tensorboard, several: logger=[tensorboard,mlflow], none: logger=[]; choices: "
                          f"{choices}), or add your own with +logger.NAME._target_=package.module.Class.")
    from ..engine.loggers.base import Logger  # torch-free

    for _, key, node in _target_nodes(loggers, LOGGER_GROUP, f" The logger config group's choices: {choices}."):
        factory = _configured_class(key, node, Logger, "logger", "overrides the methods it needs (docs/logging.md)")
        requires = getattr(factory, "requires", None)
        if requires:
            message = missing_extra(*requires)
            if message:
                raise ConfigError(f"{key} ({node._target_}) {message} Or choose another logger (choices: "
                                  f"{choices}).")


def _registered(registry: Registry, key: str, value: Any):
    """Where ``value`` lives in ``registry`` (a name, an entry point's name or an import path); ConfigError naming
    the valid names for an unknown one, and the module for a path whose module is not on the Python path."""
    found = registry.find(value) if isinstance(value, str) else None
    if found is None:
        raise ConfigError(
            f"Invalid config value {key}={value!r}. Valid choices: {_listed(registry.names())}; or one of your own "
            f"by its import path ({key}=package.module:Name) or the name its installed package declares (entry point "
            f"group {registry.group}). Fix it on the command line or in the config file.")
    try:
        return registry.check_importable(found)
    except RegistryError as error:
        raise ConfigError(str(error)) from None


def check_declared_options(cfg: DictConfig, group_choices: dict | None = None,
                           conf_dir: ConfDirs | None = None) -> None:
    """The optimizer's and schedule's options against their constructors as the source files declare them:
    torch-free, so an option they do not take is refused at once (``check_callables`` then asks the imported
    callables, also those whose source cannot be read that way)."""
    from ..optim_registry import PROJECT_OPTIM_KEYS
    from ..signatures import declared_options

    for registry, group, skip, handled in ((OPTIMIZERS, "optim", 1, PROJECT_OPTIM_KEYS), (SCHEDULES, "sched", 3,
                                                                                         ("name",))):
        node = plain(cfg[group])
        found = registry.find(node["name"])
        declared = None if found is None or found.obj is not None else declared_options(found.target, skip)
        if declared is None:
            continue
        accepted = {key: value for key, value in declared.options.items() if key not in handled}
        unknown = [key for key in node if key not in handled and key not in accepted]
        if not unknown:
            continue
        listed = ", ".join(f"{key} (default {value})" if value != "required" else key
                           for key, value in accepted.items())
        chosen = (group_choices or {}).get(group)
        fix = (f"{group}.name={node['name']} changes the {registry.kind} but keeps the options of conf/{group}/"
               f"{chosen}.yaml: choose the group instead, {group}={node['name']}, which brings its own options."
               if chosen and chosen != node["name"] and option_file(conf_dir, group, node["name"]) is not None else
               f"Fix the key on the command line or in conf/{group}/.")
        raise ConfigError(f"{group}.{unknown[0]} is not an option of {declared.where}; it takes: {listed}. {fix}")


def check_callables(cfg: DictConfig) -> None:
    """The chosen optimizer and schedule are installed and take every option their config files give.

    Imports torch (and the optimizer's package), so it runs after the torch-free checks: a bad
    choice is still reported within a second, an option the optimizer does not take before any
    data is read.
    """
    from ..optim_registry import OPTIMIZERS, PROJECT_OPTIM_KEYS, SCHEDULES, RegistryError, check_options, resolve

    optim = plain(cfg.optim)
    sched = plain(cfg.sched)
    try:
        check_options(resolve(OPTIMIZERS, optim["name"], "optimizer"),
                      {k: v for k, v in optim.items() if k not in PROJECT_OPTIM_KEYS}, 1, "optim", PROJECT_OPTIM_KEYS)
        check_options(resolve(SCHEDULES, sched["name"], "schedule"),
                      {k: v for k, v in sched.items() if k != "name"}, 3, "sched", ("name",))
    except RegistryError as error:
        raise ConfigError(f"{error} Fix the key on the command line or in conf/optim/, conf/sched/.") from None


def validate_aug(cfg: DictConfig) -> None:
    """The ``aug`` group: each op's value, and whether the chosen data path can do it."""
    aug = cfg.get("aug")
    if not isinstance(aug, DictConfig):
        return
    for key in ("mixup", "cutmix"):
        if key in aug:
            _number(cfg, f"aug.{key}", allow_zero=True)
    for key in ("mix_prob", "switch_prob"):
        if key in aug:
            _number(cfg, f"aug.{key}", allow_zero=True)
            if aug[key] > 1:
                raise ConfigError(f"Invalid config value aug.{key}={aug[key]}: it must be a probability in [0, 1].")
    if "mix_off_epoch" in aug:
        _number(cfg, "aug.mix_off_epoch", integer=True, allow_zero=True)
    if "policy" in aug and aug.policy not in C.AUG_POLICIES:
        fail_choice("aug.policy", aug.policy, C.AUG_POLICIES)
    if "num_ops" in aug:
        _number(cfg, "aug.num_ops", integer=True)
    if "magnitude" in aug:
        _number(cfg, "aug.magnitude", integer=True, allow_zero=True)
        if aug.magnitude > 30:
            raise ConfigError(f"Invalid config value aug.magnitude={aug.magnitude}: a magnitude bin in 0..30.")
    if "random_erasing" in aug:
        _number(cfg, "aug.random_erasing", allow_zero=True)
        if aug.random_erasing > 1:
            raise ConfigError(f"Invalid config value aug.random_erasing={aug.random_erasing}: a probability in "
                              f"[0, 1].")
    if "cutout" in aug:
        _number(cfg, "aug.cutout", integer=True, allow_zero=True)
    # DALI runs the policy with its own auto-augment; the boxes are painted by our loaders only.
    per_image = [f"aug.{key}={aug[key]}" for key, off in (("cutout", 0), ("random_erasing", 0))
                 if key in aug and aug[key] != off]
    if per_image and cfg.data.get("loader") == "dali":
        raise ConfigError(
            f"{per_image[0]} is not available with data.loader=dali: cutout and random erasing are painted by the "
            f"device loader and the DataLoader workers, from each image's aug seed, and the DALI pipeline does not "
            f"paint them. Use data.loader=workers (or auto) with them, or leave them off with DALI (aug.policy, "
            f"mixup and CutMix work with DALI too).")


def validate_evaluate_config(cfg: DictConfig, group_choices: dict | None = None,
                             conf_dir: ConfDirs | None = None) -> None:
    """Check evaluate.py's keys and values (torch-free)."""
    conf_dir = config_dirs(conf_dir)
    check_unknown_keys(cfg, "evaluate", group_choices, conf_dir, groups=("model",))
    data = cfg.get("data")
    if isinstance(data, DictConfig):
        allowed = set(EVALUATE_DATA_KEYS) | group_keys(conf_dir, "data", (group_choices or {}).get("data"))
        for key in data:
            if key not in allowed:
                raise _unknown_key_error(f"data.{key}", "data", allowed)
    if not cfg.get("checkpoint"):
        raise ConfigError("evaluate.py needs checkpoint=PATH (a checkpoints/best.pt or last.pt of a run, an "
                          "exported .safetensors with data=..., or the authors' .pth.tar with "
                          "checkpoint_format=official).")
    if not Path(str(cfg.checkpoint)).is_file():
        raise ConfigError(f"Invalid config value checkpoint={str(cfg.checkpoint)!r}: no such file. Give the path "
                          f"of a checkpoint, e.g. outputs/<name>/<time>/checkpoints/best.pt.")
    if cfg.checkpoint_format not in C.CHECKPOINT_FORMATS:
        fail_choice("checkpoint_format", cfg.checkpoint_format, C.CHECKPOINT_FORMATS)
    if str(cfg.precision) not in ("auto", *C.PRECISIONS):
        fail_choice("precision", cfg.precision, ("auto", *C.PRECISIONS))
    if not _DEVICE.match(str(cfg.device)):
        fail_choice("device", cfg.device, ("auto", "cpu", "cuda", "cuda:N"))
    if str(cfg.get("tta", "none")) not in C.TTA_MODES:
        fail_choice("tta", cfg.get("tta"), C.TTA_MODES)
    if str(cfg.get("weights", "model")) not in C.EVAL_WEIGHTS:
        fail_choice("weights", cfg.get("weights"), C.EVAL_WEIGHTS)
    if cfg.get("weights", "model") == "ema" and cfg.checkpoint_format == "official":
        raise ConfigError("weights=ema reads the weight average of one of our checkpoints; the authors' checkpoints "
                          "hold one set of weights. Use weights=model with checkpoint_format=official.")
    if cfg.checkpoint_format == "official":
        if not isinstance(data, DictConfig) or not data.get("name"):
            raise ConfigError("checkpoint_format=official needs the model and data chosen explicitly, e.g. "
                              "model.depth=50 model.att_type=CBAM data=imagenet data.root=/path/to/imagenet.")
        validate_model(cfg, conf_dir)
        validate_data(cfg)
    elif isinstance(data, DictConfig) and (data.get("stem") is not None or data.get("network_type") is not None):
        _stem(data)  # a stem replacing the checkpoint's


def plain(value: Any) -> Any:
    """A resolved plain-Python copy of a config node (or the value itself)."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value
