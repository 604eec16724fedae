"""The loader interface: every loader is a ``BatchLoader`` over the same keys, and a new loader that
only says how it makes a batch trains through the trainer exactly as the workers path does."""

import pytest
import torch

from attn_resnet.data import (BatchLoader, DeviceImageLoader, EpochBatchSampler, SampledDeviceLoader, build_loader,
                              build_prefetched_loader, build_splits)
from attn_resnet.data.common import normalize_uint8

from helpers import tiny_dataset, write_imagefolder
from test_trainer_fast import BATCH, make_trainer


def _loaders(tmp_path, **sampling):
    """Each loader kind over a 10-image split, built with the same shared arguments."""
    cifar_like = tiny_dataset(10)
    made = {"workers": build_loader(cifar_like, num_workers=0, **sampling),
            "prefetcher": build_prefetched_loader(cifar_like, num_workers=0, **sampling),
            "device": DeviceImageLoader(cifar_like, **sampling)}
    try:
        from attn_resnet.data.dali import DaliImageLoader
        from attn_resnet.optional import dali_available
    except ImportError:
        return made
    if dali_available():
        root = write_imagefolder(tmp_path / "folders", classes=2, per_class=5, size=24)
        made["dali"] = DaliImageLoader(build_splits("imagefolder", root=str(root), image_size=16).train, **sampling)
    return made


@pytest.mark.parametrize("sampling", [dict(batch_size=4, train=True, seed=3),
                                      dict(batch_size=4, train=False),
                                      dict(batch_size=3, train=True, seed=1, drop_last=False, num_replicas=2, rank=1)],
                         ids=["train", "eval", "sharded"])
def test_every_loader_is_a_batch_loader_drawing_the_same_keys(tmp_path, sampling):
    loaders = _loaders(tmp_path, **sampling)
    keys = {}
    for name, loader in loaders.items():
        assert isinstance(loader, BatchLoader), name
        assert isinstance(loader.batch_sampler, EpochBatchSampler), name
        loader.batch_sampler.set_epoch(2)
        loader.batch_sampler.set_start_batch(1)
        keys[name] = list(loader.batch_sampler)
        assert len(loader) == len(keys[name]), name
    first = keys.pop("workers")
    assert first and all(other == first for other in keys.values()), keys


class TensorLoader(SampledDeviceLoader):
    """A new loader written against the interface: the constructor is the shared one; it says only how
    a batch is made from its keys (the split's normalized images, indexed)."""

    def _prepare(self, dataset) -> None:
        images = torch.stack([dataset[index][0] for index in range(len(dataset))])
        self.images, self.labels = images.to(self.device, self.dtype), dataset.labels.to(self.device)

    def __iter__(self):
        for keys in self.batch_sampler:
            index = torch.tensor([key[0] for key in keys])
            yield self.images[index], self.labels[index]


def test_a_new_loader_trains_exactly_as_the_workers_path(tmp_path):
    # tiny_dataset does not augment, so the same keys are the same images: the trainer, driving either
    # loader through set_epoch / set_start_batch / len / iter, must reach the same weights.
    dataset = tiny_dataset(3 * BATCH + 2)
    assert torch.equal(torch.stack([dataset[i][0] for i in range(2)]),
                       normalize_uint8(dataset.images[:2], *_constants(dataset)))
    weights = {}
    for name, loader in (("workers", build_loader(dataset, BATCH, train=True, seed=0, num_workers=0)),
                         ("new", TensorLoader(dataset, BATCH, train=True, seed=0))):
        trainer = make_trainer(tmp_path / name, loader=loader, epochs=2)
        trainer.fit()
        weights[name] = [p.detach().clone() for p in trainer.model.parameters()]
        assert trainer.global_step == 2 * (len(dataset) // BATCH)
    assert all(torch.equal(a, b) for a, b in zip(weights["workers"], weights["new"]))
    initial = make_trainer(tmp_path / "initial").model.parameters()
    assert not all(torch.equal(a, b) for a, b in zip(weights["new"], initial))  # it did train


def _constants(dataset):
    from attn_resnet.data.common import normalization_constants

    return normalization_constants(dataset.mean, dataset.std)
