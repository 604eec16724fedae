"""The dataset registry: a dataset added with one module, one registry line and one conf file; the stem
chosen by kind (data.stem) with data.network_type read as its older spelling, in configs, checkpoints
and on the command line; data.mean / data.std and the ImageFolder crops as config keys."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image
from torchvision import transforms

from attn_resnet import dataset_registry
from attn_resnet.app import evaluate, train
from attn_resnet.build import make_loaders
from attn_resnet.config import choices as C
from attn_resnet.config.command_line import check_overrides
from attn_resnet.config.resume import trajectory_changes
from attn_resnet.config.validate import ConfigError, validate_train_config
from attn_resnet.data import DATASET_BUILDERS, DataError, Splits, build_splits
from attn_resnet.data.common import TensorImageDataset, data_info, normalization
from attn_resnet.dataset_registry import DATASETS, DatasetEntry, dataset_names
from attn_resnet.engine.checkpoint import load_training_checkpoint, save_atomic
from attn_resnet.models import ResidualNet

from helpers import CONF, FAST, compose_train, write_cifar10, write_imagefolder


# ------------------------------------------------------------------ a dataset registered here
def build_dummy(*, size: int = 32, num_classes: int = 3, mean=None, std=None) -> Splits:
    """Class-coloured 8x8 images, learnable at once: the train builder of the dataset this module registers."""
    mean, std = normalization("dummy", mean, std)
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(size) % num_classes
    colours = torch.linspace(30, 220, num_classes).round().to(torch.uint8)
    noise = torch.randint(0, 20, (size, 3, 8, 8), generator=generator, dtype=torch.uint8)
    images = colours[labels].view(-1, 1, 1, 1).expand(-1, 3, 8, 8) + noise
    classes = [f"shade_{k}" for k in range(num_classes)]
    train_set = TensorImageDataset(images, labels, classes, mean, std, train=True, pad=1, flip=True)
    test_set = TensorImageDataset(images, labels, classes, mean, std, train=False)
    return Splits(train_set, None, test_set, data_info("dummy", test_set, (8, 8), train_set))


def build_dummy_eval(*, size: int = 32, num_classes: int = 3, mean=None, std=None):
    """Its eval builder: the test split alone."""
    splits = build_dummy(size=size, num_classes=num_classes, mean=mean, std=std)
    return splits.test, replace(splits.info, train_size=None)


DUMMY = DatasetEntry(f"{__name__}:build_dummy", f"{__name__}:build_dummy_eval", stem="cifar", mean=(0.5,) * 3,
                     std=(0.25,) * 3)
DUMMY_CONF = """# Class-coloured 8x8 images, registered by a test.
name: dummy
stem: cifar
network_type: null
size: 32
num_classes: 3
mean: null
std: null
loader: auto
batch_size: 8
val_batch_size: 16
num_workers: 0
pin_memory: false
persistent_workers: false
"""


def test_a_dataset_is_one_module_one_registry_line_and_one_conf_file(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "data" / "dummy.yaml").write_text(DUMMY_CONF)
    overrides = ["data=dummy", "trainer.epochs=1", "trainer.limit_train_batches=2", "trainer.progress=false",
                 "trainer.deterministic=true"]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
        added = compose(config_name="train", overrides=overrides + ["+data.colour=1"])
    with pytest.raises(ConfigError, match=r"data.name='dummy'.*Valid choices: cifar10, cifar100"):
        validate_train_config(cfg, conf_dir=conf)  # not registered yet

    monkeypatch.setitem(DATASETS, "dummy", DUMMY)  # the registry line
    assert "dummy" in dataset_names() and "dummy" in DATASET_BUILDERS
    validate_train_config(cfg, conf_dir=conf)
    misspelt = OmegaConf.merge(cfg, {"data": {"name": "dumy"}})
    with pytest.raises(ConfigError, match=r"data.name='dumy'.*Valid choices: .*digits, dummy"):
        validate_train_config(misspelt, conf_dir=conf)
    with pytest.raises(ConfigError, match="Unknown config key 'data.colour'"):
        validate_train_config(added, conf_dir=conf)
    with pytest.raises(DataError, match=r"Unknown option 'colour' for dataset 'dummy'. Valid options: size, "):
        build_splits("dummy", colour=1)

    results = train(cfg, tmp_path / "run", conf_dir=conf)
    assert results["status"] == "completed" and results["global_step"] == 2
    assert results["data"] == {"name": "dummy", "num_classes": 3, "train_size": 32, "val_size": 32,
                               "val_split_size": 0, "image_size": [8, 8]}
    assert results["model"]["network_type"] == "CIFAR10" and results["config"]["data"]["stem"] == "cifar"
    saved = load_training_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert saved["input"]["mean"] == [0.5] * 3 and saved["input"]["std"] == [0.25] * 3  # the registry's default


def test_every_registered_dataset_resolves_and_its_conf_file_agrees():
    assert C.DATASETS == dataset_names() and C.NETWORK_TYPES is dataset_registry.NETWORK_TYPES
    for name, entry in DATASETS.items():
        assert callable(DATASET_BUILDERS[name]) and callable(dataset_registry.resolve(name, "eval"))
        assert entry.stem in dataset_registry.STEMS
        assert (entry.mean is None) == (entry.std is None)
        conf = OmegaConf.load(CONF / "data" / f"{name}.yaml")
        assert conf.name == name and conf.stem == entry.stem and conf.network_type is None
        assert conf.mean is None and conf.std is None
        assert ("crop_scale" in conf) == entry.image_files  # the class-folder transforms
    assert [name for name, entry in DATASETS.items() if entry.image_files] == ["imagenet", "imagefolder"]


# ------------------------------------------------------------------------------ the stem
def test_the_stem_comes_from_data_stem_or_its_older_spelling():
    stem = lambda overrides: dataset_registry.data_stem(compose_train(overrides).data)  # noqa: E731
    assert stem([]) == "cifar" and stem(["data=imagenet"]) == "imagenet"
    assert stem(["data.stem=imagenet"]) == "imagenet"
    assert stem(["data.network_type=ImageNet"]) == "imagenet"  # the alias over the data set's default
    assert stem(["data=imagenet", "data.network_type=cifar100"]) == "cifar"
    assert stem(["data.stem=imagenet", "data.network_type=ImageNet"]) == "imagenet"
    for overrides in (["data.stem=imagenet"], ["data.network_type=ImageNet"], ["data=imagefolder"]):
        validate_train_config(compose_train(overrides))
    with pytest.raises(ConfigError, match=r"data.stem=imagenet and data.network_type=CIFAR10 choose different "
                                          r"stems.*CIFAR10 means data.stem=cifar"):
        validate_train_config(compose_train(["data.stem=imagenet", "data.network_type=CIFAR10"]))
    with pytest.raises(ConfigError, match=r"data.stem='resnet'. Valid choices: imagenet, cifar"):
        validate_train_config(compose_train(["data.stem=resnet"]))
    with pytest.raises(ConfigError, match=r"data.network_type='MNIST'.*ImageNet, CIFAR10, CIFAR100"):
        validate_train_config(compose_train(["data.network_type=MNIST"]))


def test_the_command_line_check_takes_the_stem_and_its_older_spelling():
    check_overrides(["train.py", "data.stem=imagenet"], "train", CONF)
    check_overrides(["train.py", "data=imagefolder", "data.network_type=ImageNet", "data.crop_pct=0.9"], "train", CONF)
    check_overrides(["evaluate.py", "checkpoint=x.pt", "data.stem=cifar", "data.network_type=CIFAR10"], "evaluate",
                    CONF)
    with pytest.raises(ConfigError, match="Did you mean data.stem"):
        check_overrides(["train.py", "data.stm=imagenet"], "train", CONF)
    with pytest.raises(ConfigError, match="data=imagefolder, data=imagenet declare it"):
        check_overrides(["train.py", "data.crop_pct=0.9"], "train", CONF)  # cifar10 has no crops
    # Typed together, the two spellings must name one stem, even when data.stem repeats the data set's
    # default (which the composed config alone cannot tell from the conf file's value).
    check_overrides(["train.py", "data.stem=cifar", "data.network_type=CIFAR100"], "train", CONF)
    with pytest.raises(ConfigError, match=r"data.stem=cifar and data.network_type=ImageNet choose different stems"):
        check_overrides(["train.py", "data.stem=cifar", "data.network_type=ImageNet"], "train", CONF)
    with pytest.raises(ConfigError, match=r"data.stem=imagenet and data.network_type=CIFAR10 choose different"):
        check_overrides(["evaluate.py", "checkpoint=x.pt", "data.network_type=CIFAR10", "data.stem=imagenet"],
                        "evaluate", CONF)


def test_residual_net_takes_network_types_and_stem_kinds():
    for stem, network_type, classes in (("cifar", "CIFAR10", 10), ("imagenet", "ImageNet", 1000),
                                        ("CIFAR", "CIFAR10", 10)):
        with torch.device("meta"):
            by_stem, by_type = ResidualNet(stem, 18, None, "CBAM"), ResidualNet(network_type, 18, None, "CBAM")
        assert by_stem.network_type == network_type and by_stem.fc.out_features == classes
        assert [p.shape for p in by_stem.parameters()] == [p.shape for p in by_type.parameters()]
    with pytest.raises(ValueError, match="ImageNet, CIFAR10, CIFAR100, imagenet, cifar"):
        ResidualNet("resnet", 18)


@pytest.fixture(scope="module")
def old_style_run(module_tmp):
    """A run whose checkpoints are as an earlier release wrote them: data.network_type in the config (no data.stem,
    data.mean, data.std), and network_type CIFAR100 in the spec, as a CIFAR-100 run narrowed to 10 classes had."""
    run = module_tmp("old") / "run"
    train(compose_train(FAST), run)
    for name in ("last.pt", "best.pt"):
        checkpoint = load_training_checkpoint(run / "checkpoints" / name)
        data = checkpoint["config"]["data"]
        for key in ("stem", "mean", "std"):
            del data[key]
        data["network_type"] = "CIFAR100"
        checkpoint["model_spec"]["network_type"] = "CIFAR100"
        save_atomic(checkpoint, run / "checkpoints" / name)
    return run


def test_an_old_style_config_and_spec_resume(old_style_run, tmp_path):
    saved = load_training_checkpoint(old_style_run / "checkpoints" / "last.pt")
    assert "stem" not in saved["config"]["data"] and saved["model_spec"]["network_type"] == "CIFAR100"
    current = OmegaConf.to_container(compose_train(FAST + ["trainer.epochs=2"]), resolve=True)
    assert trajectory_changes(saved["config"], current) == {"trainer.epochs": (1, 2)}
    imagenet = OmegaConf.to_container(compose_train(FAST + ["data.stem=imagenet"]), resolve=True)
    assert trajectory_changes(saved["config"], imagenet) == {"data.stem": ("cifar", "imagenet")}

    run = tmp_path / "resumed"
    shutil.copytree(old_style_run, run)
    results = train(compose_train(FAST + ["trainer.epochs=2", "trainer.resume_allow_changes=true"]), run)
    assert results["status"] == "completed" and results["epochs"] == 2 and results["global_step"] == 12
    assert results["resume_changes"] == {"trainer.epochs": {"checkpoint": 1, "now": 2}}  # nothing about the stem
    assert results["model"]["network_type"] == "CIFAR10"  # this run's own spec, matched to CIFAR100 by stem


def test_an_old_style_checkpoint_evaluates_predicts_and_initialises(old_style_run, tmp_path):
    from attn_resnet import load_checkpoint
    from attn_resnet.predict import input_transform

    checkpoint = old_style_run / "checkpoints" / "best.pt"
    (tmp_path / "eval").mkdir()
    result = evaluate(compose_train([f"checkpoint={checkpoint}", "device=cpu"], config_name="evaluate"),
                      tmp_path / "eval")
    again = evaluate(compose_train([f"checkpoint={checkpoint}", "device=cpu", "data.network_type=CIFAR10"],
                                   config_name="evaluate"), tmp_path / "eval")
    assert result["model"]["network_type"] == "CIFAR100" and result["images"] == 16
    assert again["acc1"] == result["acc1"]

    model, info = load_checkpoint(checkpoint)
    assert info.model_spec["network_type"] == "CIFAR100" and model.fc.out_features == 10
    image = Image.new("RGB", (20, 12), (10, 200, 30))
    assert input_transform(info)(image).shape == (3, 8, 8)  # the CIFAR stem: resized to the input size

    results = train(compose_train(FAST + [f"model.init_from={checkpoint}"]), tmp_path / "tuned")
    assert results["status"] == "completed" and results["init_from"]["loaded"] > 0


def test_the_older_spelling_trains_and_is_recorded_as_the_stem(tmp_path):
    cfg = compose_train(FAST + ["data.image_size=32", "data.network_type=ImageNet"])
    results = train(cfg, tmp_path / "run")
    assert results["model"]["network_type"] == "ImageNet"
    checkpoint = load_training_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert checkpoint["config"]["data"]["stem"] == "imagenet" and "network_type" not in checkpoint["config"]["data"]
    assert checkpoint["model_spec"]["network_type"] == "ImageNet"


def test_predict_resizes_imagenet_stem_models_by_the_runs_crop_pct():
    from attn_resnet.api import ModelInfo
    from attn_resnet.predict import input_transform

    spec = {"network_type": "ImageNet", "depth": 18, "num_classes": 3, "att_type": "none"}
    image = Image.fromarray(torch.randint(0, 256, (40, 60, 3), dtype=torch.uint8).numpy())
    info = ModelInfo(spec, ["a", "b", "c"], (0.5,) * 3, (0.25,) * 3, (16, 16), "model", "x", "checkpoint")
    default = transforms.Compose([transforms.Resize(round(16 / 0.875)), transforms.CenterCrop(16),
                                  transforms.PILToTensor()])
    assert torch.equal(input_transform(info)(image), default(image))
    info.config = {"data": {"crop_pct": 1.0}}
    whole = transforms.Compose([transforms.Resize(16), transforms.CenterCrop(16), transforms.PILToTensor()])
    assert torch.equal(input_transform(info)(image), whole(image))


# --------------------------------------------------------------- normalisation and crops
@pytest.mark.parametrize("override, needles", [
    ("data.mean=[0.5,0.5]", ["data.mean=[0.5, 0.5]", "a list of 3 numbers"]),
    ("data.std=[0.2,0.0,0.2]", ["data.std=[0.2, 0.0, 0.2]", "must be positive"]),
    ("data.std=gray", ["data.std='gray'", "a list of 3 numbers"]),
    ("data.crop_scale=[0.5,1.5]", ["data.crop_scale=[0.5, 1.5]", "0 < low <= high <= 1"]),
    ("data.crop_scale=[0.9,0.2]", ["data.crop_scale=[0.9, 0.2]", "0 < low <= high <= 1"]),
    ("data.crop_scale=[0.0,1.0]", ["data.crop_scale=[0.0, 1.0]", "0 < low <= high <= 1"]),
    ("data.crop_pct=0", ["data.crop_pct=0", "in (0, 1]"]),
    ("data.crop_pct=1.2", ["data.crop_pct=1.2", "in (0, 1]"]),
])
def test_bad_normalisation_and_crop_values_are_refused_before_torch(override, needles):
    with pytest.raises(ConfigError) as error:
        validate_train_config(compose_train(["data=imagefolder", override]))
    message = str(error.value)
    assert all(needle in message for needle in needles) and "\n" not in message, message


def _by_hand(uint8: torch.Tensor, mean, std) -> torch.Tensor:
    """(pixels - 255 mean) / (255 std) in float32, each constant one correctly rounded float32."""
    shift = torch.tensor([255 * v for v in mean], dtype=torch.float32).view(-1, 1, 1)
    scale = torch.tensor([255 * v for v in std], dtype=torch.float32).view(-1, 1, 1)
    return (uint8.float() - shift) / scale


def _first_val_batch(config: dict) -> torch.Tensor:
    loaders = make_loaders(config, seed=0, device=torch.device("cpu"))
    return next(iter(loaders.val))[0]


@pytest.mark.parametrize("loader", ["device", "workers"])
def test_cifar_mean_and_std_change_the_batches_exactly(tmp_path, loader):
    root = write_cifar10(tmp_path)
    raw = build_splits("cifar10", root=root).test.images[:40]
    config = {"name": "cifar10", "stem": "cifar", "root": str(root), "batch_size": 8, "val_batch_size": 40,
              "num_workers": 0, "loader": loader}
    before = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))  # the constants of the earlier release
    assert torch.equal(_first_val_batch(config), _by_hand(raw, *before))
    assert torch.equal(_first_val_batch({**config, "mean": None, "std": None}), _by_hand(raw, *before))
    mean, std = [0.25, 0.5, 0.75], [0.1, 0.2, 0.3]
    assert torch.equal(_first_val_batch({**config, "mean": mean, "std": std}), _by_hand(raw, mean, std))


def test_imagefolder_mean_std_and_crop_pct_change_the_val_batches_exactly(tmp_path):
    root = write_imagefolder(tmp_path / "images", classes=3, per_class=6, size=40)
    config = {"name": "imagefolder", "stem": "imagenet", "root": str(root), "image_size": 16, "batch_size": 6,
              "val_batch_size": 9, "num_workers": 0, "loader": "workers"}
    files = sorted((root / "val").rglob("*.png"), key=lambda path: (path.parent.name, path.name))  # ImageFolder's
    images = [Image.open(path).convert("RGB") for path in files]

    def expected(resize: int, mean, std) -> torch.Tensor:
        crop = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(16), transforms.PILToTensor()])
        return torch.stack([_by_hand(crop(image), mean, std) for image in images])

    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert torch.equal(_first_val_batch(config), expected(18, *imagenet))  # 16 / 0.875, as before
    mean, std = [0.3, 0.4, 0.5], [0.2, 0.3, 0.4]
    custom = {**config, "mean": mean, "std": std, "crop_pct": 1.0, "crop_scale": [0.5, 1.0]}
    assert torch.equal(_first_val_batch(custom), expected(16, mean, std))
    float_item = build_splits("imagefolder", root=root, image_size=16, mean=mean, std=std, crop_pct=1.0).test[0][0]
    crop = transforms.Compose([transforms.Resize(16), transforms.CenterCrop(16), transforms.ToTensor(),
                               transforms.Normalize(mean, std)])
    assert torch.equal(float_item, crop(images[0]))  # the float items: torchvision's own arithmetic


def test_imagefolder_crop_scale_sets_the_random_resized_crop(tmp_path):
    root = write_imagefolder(tmp_path / "images", classes=2, per_class=4, size=40)
    default = build_splits("imagefolder", root=root, image_size=16).train
    whole = build_splits("imagefolder", root=root, image_size=16, crop_scale=[1.0, 1.0], mean=[0.5] * 3,
                         std=[0.5] * 3).train
    for index in range(len(default)):
        image = Image.open(default.samples[index][0]).convert("RGB")
        # The defaults: torchvision's RandomResizedCrop(16) + flip under the item's seed, as before.
        before = transforms.Compose([transforms.RandomResizedCrop(16), transforms.RandomHorizontalFlip(),
                                     transforms.ToTensor(),
                                     transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(77 + index)
            assert torch.equal(default[(index, 77 + index)][0], before(image))
        # scale (1, 1) on a square image: the whole image, resized, maybe mirrored.
        resized = _by_hand(transforms.PILToTensor()(image.resize((16, 16), Image.BILINEAR)), [0.5] * 3, [0.5] * 3)
        crop = whole.uint8_items()[(index, 5 + index)][0]
        item = _by_hand(crop, [0.5] * 3, [0.5] * 3)
        assert torch.equal(item, resized) or torch.equal(item, resized.flip(-1))


def _gradient_folder(root: Path, per_class: int = 4) -> Path:
    """PNGs whose red channel is the x coordinate and green the y coordinate: a crop's pixels say where it is."""
    x = torch.linspace(0, 255, 48).view(1, -1).expand(48, -1)
    y = torch.linspace(0, 255, 48).view(-1, 1).expand(-1, 48)
    for split in ("train", "val"):
        for cls in range(2):
            (root / split / f"c{cls}").mkdir(parents=True)
            for index in range(per_class):
                pixels = torch.stack([x, y, torch.full_like(x, 60.0 * cls + index)], -1).round().to(torch.uint8)
                Image.fromarray(pixels.numpy()).save(root / split / f"c{cls}" / f"{index}.png")
    return root


def test_dali_honours_the_crops_and_the_normalisation(tmp_path):
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI (the dali extra) is not installed")
    from attn_resnet.data import build_prefetched_loader
    from attn_resnet.data.dali import DaliImageLoader

    root = _gradient_folder(tmp_path / "images")
    mean, std = [0.3, 0.4, 0.5], [0.2, 0.3, 0.4]

    def pixels(batch: torch.Tensor) -> torch.Tensor:
        return batch * torch.tensor(std).view(1, 3, 1, 1) * 255 + torch.tensor(mean).view(1, 3, 1, 1) * 255

    for crop_pct in (0.875, 0.5):
        splits = build_splits("imagefolder", root=root, image_size=16, mean=mean, std=std, crop_pct=crop_pct,
                              crop_scale=[0.9, 1.0])
        dali_images = next(iter(DaliImageLoader(splits.test, batch_size=8, train=False, device="cpu")))[0]
        worker_images = next(iter(build_prefetched_loader(splits.test, batch_size=8, train=False, num_workers=0)))[0]
        red = pixels(dali_images)[:, 0]
        span = (red[:, :, -1] - red[:, :, 0]).mean() / 255  # the fraction of the width the centre crop kept
        assert abs(span - crop_pct) < 0.1, (crop_pct, span)
        difference = (pixels(dali_images) - pixels(worker_images)).abs()
        assert difference.mean() < 5.0, (crop_pct, difference.mean())  # the same crop, normalised alike
        train_images = next(iter(DaliImageLoader(splits.train, batch_size=8, train=True, device="cpu", seed=1)))[0]
        red, green = pixels(train_images)[:, 0], pixels(train_images)[:, 1]
        area = ((red[:, :, -1] - red[:, :, 0]).abs().mean(1) * (green[:, -1] - green[:, 0]).abs().mean(1)) / 255**2
        assert area.min() > 0.8, area  # RandomResizedCrop's area in crop_scale [0.9, 1.0]
