"""Starting from pretrained weights: torchvision / timm / the authors' / our files, a new head, freezing,
head lr, the Python API (create_model, list_models, load_checkpoint) and fine-tuning end to end."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torchvision

from attn_resnet import create_model, list_models, load_checkpoint
from attn_resnet.api import parse_model_name
from attn_resnet.app import train
from attn_resnet.engine.checkpoint import load_training_checkpoint
from attn_resnet.engine.finetune import FrozenNormsInEval, InitRecord
from attn_resnet.engine.optim import parameter_groups
from attn_resnet.engine.trainer import Trainer
from attn_resnet.models.official import CheckpointError, official_to_ours
from attn_resnet.models.transfer import freeze_, frozen_modules, load_pretrained
from attn_resnet.models.weights_file import read_weights, save_weights

from helpers import FAST, compose_train, run_script
from test_official import official_state_dict

ATTENTION = re.compile(r"(^|\.)(attn|post_attn|head_attn)\.|^stage_attn\.")


def _randomise_norm_statistics(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and affine terms, so a missed or misplaced tensor changes the logits."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)


@pytest.fixture(scope="module")
def torchvision_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tv")
    files = {}
    for depth in (18, 50):
        torch.manual_seed(depth)
        model = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
        _randomise_norm_statistics(model, depth)
        files[depth] = folder / f"resnet{depth}.pth"
        torch.save(model.state_dict(), files[depth])
    return files


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_weights_give_the_same_logits(torchvision_files, depth):
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    reference.load_state_dict(torch.load(torchvision_files[depth], weights_only=True))
    model = create_model(f"resnet{depth}", num_classes=1000, pretrained=torchvision_files[depth]).eval()
    assert model.transfer_report.format == "torchvision" and not model.transfer_report.new
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(images), reference(images), rtol=0, atol=1e-5)


def test_a_cbam_network_takes_the_trunk_and_keeps_its_own_attention_and_a_new_head(torchvision_files):
    file = torch.load(torchvision_files[50], weights_only=True)
    torch.manual_seed(3)
    fresh = create_model("resnet50_cbam", num_classes=7)
    torch.manual_seed(3)
    model = create_model("resnet50_cbam", num_classes=7, pretrained=torchvision_files[50])
    report = model.transfer_report
    assert report.head == "fc: 1000 -> 7 classes, new"
    assert sorted(report.ignored) == ["fc.bias", "fc.weight"]
    state, initial = model.state_dict(), fresh.state_dict()
    attention = [key for key in state if ATTENTION.search(key)]
    assert attention and set(report.new) == set(attention) | {"fc.weight", "fc.bias"}
    for key, value in state.items():
        if ATTENTION.search(key) or key.startswith("fc."):
            assert torch.equal(value, initial[key]), key  # left at the seeded initialisation
        else:
            assert torch.equal(value, file[key]), key
    summary = report.summary()
    assert summary["loaded"] == len(file) - 2 and summary["new"] == len(attention) + 2
    assert "layer1.0.attn" in summary["new_modules"] and "fc" in summary["new_modules"]
    assert "fc: 1000 -> 7 classes, new" in report.describe()


def test_timm_seresnet50_gives_the_same_logits(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = timm.create_model("seresnet50", pretrained=False).eval()
    _randomise_norm_statistics(reference)
    torch.save(reference.state_dict(), tmp_path / "seresnet50.pth")
    model = create_model("resnet50_se", num_classes=1000, pretrained=tmp_path / "seresnet50.pth").eval()
    assert model.transfer_report.format == "timm" and not model.transfer_report.new
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        # timm's SE is made of 1x1 convs, ours of linear layers: the same sums, another rounding order.
        torch.testing.assert_close(model(images), reference(images), rtol=1e-4, atol=1e-4)


def test_the_authors_release_loads_into_another_class_count(tmp_path):
    state = official_state_dict("official_keys_CIFAR10_resnet18_CBAM.txt", seed=4)
    torch.save({"arch": "resnet", "epoch": 90, "state_dict": {f"module.{k}": v for k, v in state.items()}},
               tmp_path / "release.pth.tar")
    model = create_model("cifar_resnet18_cbam", num_classes=5, pretrained=tmp_path / "release.pth.tar")
    report = model.transfer_report
    assert report.format == "official" and report.head == "fc: 10 -> 5 classes, new"
    ours = model.state_dict()
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        assert torch.equal(ours[official_to_ours(key)], value), key
    assert report.new == ["fc.weight", "fc.bias"]


def _unchanged(model: torch.nn.Module, before: dict) -> bool:
    return all(torch.equal(value, before[key]) for key, value in model.state_dict().items())


@pytest.mark.parametrize(
    "source,target,needle",
    [
        ("resnet18", "resnet34", "another depth"),
        ("resnet18_cbam", "resnet18_se", "another attention block"),
        ("resnet18", "cifar_resnet18", "7x7 stem"),
    ],
)
def test_mismatched_files_are_refused_with_the_cause_and_nothing_is_loaded(tmp_path, source, target, needle):
    torch.save(create_model(source, num_classes=10).state_dict(), tmp_path / "file.pth")
    model = create_model(target, num_classes=10)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    with pytest.raises(CheckpointError) as error:
        load_pretrained(model, tmp_path / "file.pth")
    message = str(error.value)
    assert needle in message and "Nothing was loaded" in message and "\n" not in message
    assert _unchanged(model, before)


class Payload:
    def __reduce__(self):
        return (print, ("this ran while loading",))


def test_foreign_and_unsafe_files_are_refused(tmp_path):
    model = create_model("cifar_resnet18", num_classes=10)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    torch.save({"model": {"conv1.weight": torch.zeros(1)}, "extra": Payload()}, tmp_path / "unsafe.pth")
    with pytest.raises(CheckpointError, match="arbitrary code"):
        load_pretrained(model, tmp_path / "unsafe.pth")
    torch.save({"weights": [1, 2, 3], "note": "not a network"}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError):
        load_pretrained(model, tmp_path / "foreign.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_pretrained(model, tmp_path / "text.pth")
    assert _unchanged(model, before)


def test_freezing_keeps_the_frozen_part_and_its_norm_statistics(tmp_path):
    torch.manual_seed(0)
    model = create_model("cifar_resnet18_cbam", num_classes=4)
    assert frozen_modules(model, "stage2") == ["conv1", "bn1", "layer1", "stage_attn.0", "layer2", "stage_attn.1"]
    norms = freeze_(model, "stage2")
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(name.split(".")[0] in ("conv1", "bn1", "layer1", "layer2", "stage_attn") for name in frozen)
    assert all(p.requires_grad for name, p in model.named_parameters() if name.startswith(("layer3", "layer4", "fc")))
    before = {key: value.clone() for key, value in model.state_dict().items()}
    optimizer = torch.optim.SGD(parameter_groups(model, 1e-4, True), lr=0.1, momentum=0.9)
    model.train()
    FrozenNormsInEval(norms).on_train_epoch_start(None, 0)
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 3, 16, 16)), torch.arange(8) % 4)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.state_dict()
    for key, value in after.items():
        is_frozen = key.split(".")[0] in ("conv1", "bn1", "layer1", "layer2")
        if is_frozen:
            assert torch.equal(value, before[key]), key  # weights and running statistics alike
    assert not torch.equal(after["layer3.0.bn1.running_mean"], before["layer3.0.bn1.running_mean"])
    assert not torch.equal(after["fc.weight"], before["fc.weight"])


def test_head_lr_scale_puts_the_classifier_in_its_own_group():
    model = create_model("cifar_resnet18", num_classes=4)
    groups = parameter_groups(model, 5e-4, True, lr=0.1, head_lr_scale=10.0)
    head = {id(model.fc.weight), id(model.fc.bias)}
    for group in groups:
        ids = {id(p) for p in group["params"]}
        if ids & head:
            assert ids <= head and group["lr"] == pytest.approx(1.0)
        else:
            assert group["lr"] == pytest.approx(0.1)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    decayed = parameter_groups(model, 5e-4, True, lr=0.1, layer_decay=0.5, head_lr_scale=10.0)
    fc_groups = [g for g in decayed if {id(p) for p in g["params"]} & head]
    assert all(g["lr"] == pytest.approx(1.0) for g in fc_groups)  # the head is the top layer: lr * 1 * 10
    assert min(g["lr"] for g in decayed) < 0.1


def _applied_lrs(monkeypatch, names: tuple[str, ...]) -> dict[str, list[float]]:
    """Record, at every optimizer step of a run, the lr each named parameter was moved by.

    SGD moves a parameter by ``lr * momentum buffer`` (weight decay included in the buffer), so the
    step's change divided by the buffer is the lr that step applied, whatever the groups say.
    """
    applied = {name: [] for name in names}
    original = Trainer._optimizer_step

    def step_and_measure(self):
        params = dict(self.model.named_parameters())
        before = {name: params[name].detach().clone() for name in names}
        original(self)
        for name in names:
            buffer = self.optimizer.state[params[name]]["momentum_buffer"]
            moved = before[name] - params[name].detach()
            applied[name].append(float((moved * buffer).sum() / (buffer * buffer).sum()))

    monkeypatch.setattr(Trainer, "_optimizer_step", step_and_measure)
    return applied


def test_head_lr_scale_is_the_lr_the_classifier_trains_at_in_a_run(tmp_path, monkeypatch):
    applied = _applied_lrs(monkeypatch, ("fc.weight", "fc.bias", "layer4.1.conv2.weight"))
    train(compose_train([*FAST, "data.train_size=24", "optim.head_lr_scale=10", "sched=constant"]), tmp_path)
    assert len(applied["fc.weight"]) == 3  # 24 images in batches of 8
    for name in ("fc.weight", "fc.bias"):
        assert applied[name] == pytest.approx([1.0] * 3, rel=1e-4), name  # optim.lr 0.1 x 10
    assert applied["layer4.1.conv2.weight"] == pytest.approx([0.1] * 3, rel=1e-4)


def test_model_names():
    names = list_models()
    assert "resnet50_cbam" in names and "cifar_resnet18_se" in names and "resnet101" in names
    assert len(names) == len(set(names))
    assert parse_model_name("cifar_resnet18_cbam") == {"network_type": "CIFAR10", "depth": 18, "att_type": "CBAM"}
    with pytest.raises(ValueError, match="Did you mean resnet50_cbam"):
        create_model("resnet50_cbma")
    with pytest.raises(ValueError, match="depth 18/34/50/101"):
        create_model("resnet42")
    model = create_model("cifar_resnet18_se", num_classes=3, reduction=8)
    assert model.conv1.kernel_size == (3, 3) and model.fc.out_features == 3
    assert model.layer1[0].attn.fc1.out_features == 64 // 8


def test_init_record_survives_a_checkpoint_round_trip():
    record = InitRecord({"source": "a.pt", "loaded": 3})
    restored = InitRecord()
    restored.load_state_dict(record.state_dict())
    assert restored.summary == {"source": "a.pt", "loaded": 3}


# ------------------------------------------------------------------ end to end through train.py
@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    """A digits run on five of the ten digits, with a weight average: the pretrained checkpoint."""
    run_dir = tmp_path_factory.mktemp("pretrain")
    result = run_script("train.py", [
        "data=digits", "data.image_size=16", "data.classes=[0,1,2,3,4]", "data.train_subset=300",
        "trainer.epochs=2", "trainer.progress=false", "trainer.ema_decay=0.9", "model.depth=18",
        f"hydra.run.dir={run_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_fine_tune_on_another_class_count_from_a_trained_run(pretrained_run, tmp_path):
    source = pretrained_run / "checkpoints" / "best.pt"
    run_dir = tmp_path / "finetune"
    result = run_script("train.py", [*FAST, "data.num_classes=3", "data.image_size=16", "model.att_type=CBAM",
                                     f"model.init_from={source}", "model.freeze=stage1", "optim.head_lr_scale=10",
                                     f"hydra.run.dir={run_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    log = (run_dir / "train.log").read_text()
    assert "fc: 5 -> 3 classes, new" in log and "ema weights" in log
    results = json.loads((run_dir / "results.json").read_text())
    init = results["init_from"]
    assert init["format"] == "ours" and init["weights"] == "ema" and init["head"] == "fc: 5 -> 3 classes, new"
    assert init["new"] > 2 and "layer1.0.attn" in init["new_modules"]
    pretrained = load_training_checkpoint(source)["callbacks"]["ema"]["weights"]
    tuned = load_training_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert tuned["callbacks"]["init_from"]["head"] == "fc: 5 -> 3 classes, new"  # kept for a resume
    for key, value in tuned["model"].items():
        if key.startswith(("conv1.", "bn1.", "layer1.")) and not ATTENTION.search(key):
            assert torch.equal(value, pretrained[key]), key  # frozen: weights and BN statistics
    assert not torch.equal(tuned["model"]["layer3.0.conv1.weight"], pretrained["layer3.0.conv1.weight"])


def test_load_checkpoint_and_the_safetensors_round_trip(pretrained_run, tmp_path):
    path = pretrained_run / "checkpoints" / "best.pt"
    checkpoint = load_training_checkpoint(path)
    model, info = load_checkpoint(path)
    assert info.weights == "ema" and info.class_names == ["0", "1", "2", "3", "4"] and info.image_size == (16, 16)
    assert info.num_classes == 5 and info.config["data"]["classes"] == [0, 1, 2, 3, 4]
    plain, plain_info = load_checkpoint(path, weights="model")
    assert plain_info.weights == "model"
    assert all(torch.equal(v, checkpoint["model"][k]) for k, v in plain.state_dict().items())
    assert all(torch.equal(v, checkpoint["callbacks"]["ema"]["weights"][k]) for k, v in model.state_dict().items())

    save_weights(tmp_path / "w.safetensors", model.state_dict(), info.model_spec,
                 {"class_names": info.class_names, "mean": list(info.mean), "std": list(info.std),
                  "image_size": list(info.image_size)})
    tensors, metadata = read_weights(tmp_path / "w.safetensors")
    assert metadata["model_spec"] == info.model_spec and metadata["input"]["class_names"] == info.class_names
    again, again_info = load_checkpoint(tmp_path / "w.safetensors")
    assert again_info.source_format == "safetensors" and again_info.class_names == info.class_names
    assert again_info.mean == info.mean and again_info.image_size == info.image_size
    images = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(again(images), model(images))
    # model.init_from / pretrained= read the weights file back.
    tuned = create_model("cifar_resnet18_cbam", num_classes=2, pretrained=tmp_path / "w.safetensors")
    assert tuned.transfer_report.format == "ours" and tuned.transfer_report.head == "fc: 5 -> 2 classes, new"
    assert torch.equal(tuned.state_dict()["layer2.0.conv1.weight"], model.state_dict()["layer2.0.conv1.weight"])


def test_a_refused_init_file_stops_the_run_before_training(pretrained_run, tmp_path):
    run_dir = tmp_path / "refused"
    result = run_script("train.py", [*FAST, "model.depth=34", "data.image_size=16",
                                     f"model.init_from={pretrained_run / 'checkpoints' / 'best.pt'}",
                                     f"hydra.run.dir={run_dir}"])
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "another depth" in output and "Nothing was loaded" in output and "Traceback" not in output
    assert not (run_dir / "checkpoints").exists() or not any((run_dir / "checkpoints").iterdir())


def test_the_finetune_recipe_needs_its_file_and_feeds_an_imagenet_network(tmp_path):
    from attn_resnet.config.validate import ConfigError, validate_train_config

    from helpers import compose_train

    with pytest.raises(ConfigError, match="model.init_from is required"):
        validate_train_config(compose_train(["experiment=finetune_cifar10"]))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "w.pth")
    cfg = compose_train(["experiment=finetune_cifar10", f"model.init_from={tmp_path / 'w.pth'}"])
    validate_train_config(cfg)
    assert cfg.data.name == "cifar10" and cfg.data.stem == "imagenet" and cfg.data.image_size == 224
    assert cfg.optim.head_lr_scale > 1


# A digits run on five classes: small, one epoch.
DIGITS_FINETUNE = ["data=digits", "data.image_size=16", "data.train_subset=40", "data.val_subset=20",
                   "data.batch_size=8", "trainer.epochs=1", "trainer.progress=false"]


def test_a_head_of_other_classes_is_replaced_even_at_the_same_class_count(pretrained_run, tmp_path):
    source = pretrained_run / "checkpoints" / "best.pt"  # digits 0..4
    run_dir = tmp_path / "other_classes"
    result = run_script("train.py", [*DIGITS_FINETUNE, "data.classes=[5,6,7,8,9]", f"model.init_from={source}",
                                     f"hydra.run.dir={run_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    head = json.loads((run_dir / "results.json").read_text())["init_from"]["head"]
    assert head.startswith("fc: new") and "0, 1, 2, 3, 4" in head and "5, 6, 7, 8, 9" in head, head
    assert head in (run_dir / "train.log").read_text()


@pytest.mark.parametrize("classes,new_head,expected", [
    (["0", "1", "2", "3", "4"], "auto", "fc: loaded"),   # the same classes: the head means what it meant
    (["5", "6", "7", "8", "9"], "auto", "fc: new"),      # five other classes
    (["5", "6", "7", "8", "9"], False, "fc: loaded"),    # the user keeps it on purpose
    (["0", "1", "2", "3", "4"], True, "fc: new"),        # ... or replaces it on purpose
    (None, "auto", "fc: loaded"),                        # no names to compare: the class count decides
])
def test_new_head_decides_whether_the_files_classifier_is_kept(pretrained_run, classes, new_head, expected):
    source = pretrained_run / "checkpoints" / "best.pt"
    saved = load_training_checkpoint(source)["callbacks"]["ema"]["weights"]
    torch.manual_seed(0)
    model = create_model("cifar_resnet18", num_classes=5)
    fresh = model.fc.weight.detach().clone()
    report = load_pretrained(model, source, new_head=new_head, class_names=classes)
    assert report.head.startswith(expected), report.head
    kept = torch.equal(model.fc.weight, saved["fc.weight"])
    assert kept == (expected == "fc: loaded") and torch.equal(model.fc.weight, fresh) != kept
    assert ("fc.weight" in report.new) != kept and torch.equal(model.layer1[0].conv1.weight,
                                                               saved["layer1.0.conv1.weight"])


def test_new_head_false_cannot_keep_a_head_of_another_class_count(pretrained_run):
    model = create_model("cifar_resnet18", num_classes=3)
    with pytest.raises(CheckpointError, match=r"model.new_head=false.*5 classes.*3"):
        load_pretrained(model, pretrained_run / "checkpoints" / "best.pt", new_head=False)


def test_new_head_takes_auto_true_or_false():
    from attn_resnet.config.validate import ConfigError, validate_train_config

    for value in ("auto", "true", "false"):
        validate_train_config(compose_train([f"model.new_head={value}"]))
    with pytest.raises(ConfigError, match=r"model.new_head='maybe'. Valid choices: auto, true, false"):
        validate_train_config(compose_train(["model.new_head=maybe"]))
