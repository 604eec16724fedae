"""ImageNet-style folders through NVIDIA DALI: JPEG decoding on the GPU with the random crop fused into it.

``DaliImageLoader`` is ``data.loader=dali`` for ``imagenet`` / ``imagefolder``. Its batches come
from the same ``ResumableBatchSampler`` as every other loader (order, sharding across ranks,
mid-epoch resume, a last val batch without padding), so only the decoding and the transforms
move to DALI: the files' bytes are read on the host and fed with ``fn.external_source``;
the train images get DALI's RandomResizedCrop (``fn.decoders.image_random_crop``: area
in the dataset's ``crop_scale``, 0.08-1 by default, aspect 3/4-4/3, decoded only inside the
crop), a resize to ``image_size`` and a random flip; the val images a resize of the shorter
side to ``image_size / crop_pct`` (0.875 by default) and a center crop; both are normalized
with the dataset's mean and std (ImageNet's by default), as the workers path does.
The random crops come from DALI's generator, seeded per (seed, epoch, rank): a run is
repeatable, but a mid-epoch resume draws other crops than the uninterrupted run would have.

On CUDA the decoder is DALI's "mixed" one (nvJPEG); on the CPU every operator runs on the
CPU (DALI's CPU mode, used by the tests and for comparison).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..dataset_registry import DEFAULT_CROP_PCT, DEFAULT_CROP_SCALE
from ..optional import DALI_INSTALL, dali_available
from .common import DataError
from .imagefolder import eval_resize
from .interface import SampledDeviceLoader
from .loader import available_cores
from .sampler import mix_seed

def _read(path: str) -> np.ndarray:
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise DataError(f"Cannot read image file {path} ({error.strerror or error}). Restore the file or remove "
                        f"it from the data set folder.") from error


class DaliImageLoader(SampledDeviceLoader):
    """Batches ``(images, targets)`` of a class-folder dataset, decoded and transformed by DALI on ``device``.

    A ``BatchLoader`` with ``SampledDeviceLoader``'s constructor: ``batch_sampler`` (``set_epoch``,
    ``set_start_batch``), ``len()``, and batches already normalized on ``device`` as ``dtype`` (channels_last on
    request: DALI then writes HWC, which is that memory format), targets int64.
    """

    def __init__(self, dataset, *args, num_threads: int | None = None, **kwargs):
        """``SampledDeviceLoader``'s arguments, and ``num_threads`` for DALI's CPU stages (default: up to 4)."""
        self.num_threads = int(num_threads or max(1, min(4, available_cores())))
        super().__init__(dataset, *args, **kwargs)

    def _accept(self, dataset) -> None:
        if not dali_available():
            raise DataError(DALI_INSTALL)
        if getattr(dataset, "samples", None) is None or not hasattr(dataset, "image_size"):
            raise DataError(f"data.loader=dali reads image files from class folders (imagenet, imagefolder); "
                            f"{type(dataset).__name__} is not such a data set. Use data.loader=auto for it.")

    def _prepare(self, dataset) -> None:
        self.files = [str(path) for path, _ in dataset.samples]
        self.labels = np.asarray([label for _, label in dataset.samples], dtype=np.int64)
        self.augment = bool(getattr(dataset, "train", self.train))  # the split's own transform, as the workers path
        self.height, self.width = dataset.image_size
        self.resize_shorter = eval_resize(dataset.image_size, getattr(dataset, "crop_pct", DEFAULT_CROP_PCT))
        self.crop_scale = [float(value) for value in getattr(dataset, "crop_scale", DEFAULT_CROP_SCALE)]
        self.mean = [255 * float(value) for value in dataset.mean]
        self.std = [255 * float(value) for value in dataset.std]

    def _feed(self, batches: Iterator[list[tuple[int, int]]]):
        for keys in batches:
            indices = [index for index, _ in keys]
            yield [_read(self.files[index]) for index in indices], [self.labels[index:index + 1] for index in indices]

    def _pipeline(self, batches: Iterator[list[tuple[int, int]]]):
        from nvidia.dali import fn, pipeline_def, types

        on_gpu = self.device.type == "cuda"
        decoder = "mixed" if on_gpu else "cpu"
        layout = "HWC" if self.channels_last else "CHW"
        seed = mix_seed(self.seed, self.batch_sampler.epoch, self.rank) % (2**31 - 1)

        policy = getattr(self.dataset, "augment", None)
        policy = policy if self.augment and policy is not None and policy.policy != "none" else None

        @pipeline_def(batch_size=self.batch_sampler.batch_size, num_threads=self.num_threads,
                      device_id=(self.device.index or 0) if on_gpu else None, seed=seed, prefetch_queue_depth=2,
                      enable_conditionals=policy is not None)  # DALI's auto-augment branches per sample
        def pipeline():
            jpegs, labels = fn.external_source(source=self._feed(batches), num_outputs=2, batch=True,
                                               dtype=[types.UINT8, types.INT64])
            if self.augment:
                images = fn.decoders.image_random_crop(jpegs, device=decoder, output_type=types.RGB,
                                                       random_area=self.crop_scale, random_aspect_ratio=[3 / 4, 4 / 3],
                                                       num_attempts=10)
                images = fn.resize(images, resize_x=self.width, resize_y=self.height,
                                   interp_type=types.INTERP_LINEAR, antialias=True)
                if policy is not None:
                    images = _dali_policy(images, policy, (self.height, self.width))
                mirror = fn.random.coin_flip(probability=0.5)
                images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout=layout, mean=self.mean,
                                                  std=self.std, mirror=mirror)
            else:
                images = fn.decoders.image(jpegs, device=decoder, output_type=types.RGB)
                images = fn.resize(images, resize_shorter=self.resize_shorter, interp_type=types.INTERP_LINEAR,
                                   antialias=True)
                images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout=layout,
                                                  crop=(self.height, self.width), crop_pos_x=0.5, crop_pos_y=0.5,
                                                  mean=self.mean, std=self.std)
            return images, labels.gpu() if on_gpu else labels

        return pipeline()

    def _to_torch(self, output, dtype: torch.dtype) -> torch.Tensor:
        tensor = output.as_tensor()
        if self.device.type == "cuda":
            from nvidia.dali.plugin.pytorch import feed_ndarray

            target = torch.empty(tensor.shape(), dtype=dtype, device=self.device)
            return feed_ndarray(tensor, target, cuda_stream=torch.cuda.current_stream(self.device))
        return torch.from_numpy(np.array(tensor))  # a copy: DALI reuses its output buffers

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        total = len(self)
        if total == 0:
            return
        batches = iter(self.batch_sampler)
        pipeline = self._pipeline(batches)
        pipeline.build()
        try:
            for _ in range(total):
                try:
                    images, labels = pipeline.run()
                except StopIteration:
                    return
                except RuntimeError as error:
                    raise DataError(f"DALI could not decode a batch of {type(self.dataset).__name__} images: "
                                    f"{str(error).strip().splitlines()[0]} A file is corrupt or not an image: "
                                    f"find it with data.loader=workers, which names it.") from error
                images = self._to_torch(images, torch.float32)
                if self.channels_last:
                    images = images.permute(0, 3, 1, 2)  # NHWC storage seen as NCHW: channels_last
                yield images.to(self.dtype), self._to_torch(labels, torch.int64).reshape(-1).to(self.device)
        finally:
            del pipeline


def _dali_policy(images, spec, shape: tuple[int, int]):
    """``aug.policy`` in the DALI pipeline: DALI's own RandAugment / TrivialAugmentWide (``nvidia.dali.auto_aug``),
    with the same op counts and magnitude bins as torchvision's; its draws come from the pipeline's seed."""
    from nvidia.dali.auto_aug import rand_augment, trivial_augment

    if spec.policy == "randaugment":
        return rand_augment.rand_augment(images, n=spec.num_ops, m=spec.magnitude, num_magnitude_bins=31, shape=shape,
                                         fill_value=0)
    return trivial_augment.trivial_augment_wide(images, num_magnitude_bins=31, shape=shape, fill_value=0)
