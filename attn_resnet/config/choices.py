"""The valid values of every choice key, in one place and without importing torch.

Each list exists once: here, or derived here from its registry (attention blocks and
placements from ``attention_registry``, optimizers and schedules from ``optim_registry``).
The modules that implement a choice (models, data, engine) import their list from here, so
the config checks before torch and the code after it cannot disagree.
"""

from __future__ import annotations

from .. import dataset_registry, optim_registry
# Re-exported: the config checks read these as choices.<name> beside the fixed lists below.
from ..attention_registry import DEFAULT_PLACEMENT, NO_ATTENTION, canonical_attention, placement_choices  # noqa: F401

# depth -> (residual block, blocks per stage): the ResNet layouts (He et al., 2016), torch-free;
# ``models.resnet`` builds from this table, so a new depth is one line here.
RESNET_LAYOUTS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
                  50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}
DEPTHS = tuple(RESNET_LAYOUTS)
# The network's own model.* keys (conf/model/*.yaml); any other model.* key is an option of the block.
NETWORK_MODEL_KEYS = ("depth", "att_type", "att_placement", "stride_in_1x1", "zero_init_residual", "init",
                      "drop_path", "width", "cardinality", "width_per_group")
# model.* keys of a fine-tuning run's start (not part of the network: not in the checkpoints' model spec).
TRANSFER_MODEL_KEYS = ("init_from", "init_from_format", "new_head", "freeze", "freeze_bn_stats")
# model.* keys of how the network runs (not part of it: not in the checkpoints' model spec, free to change on resume).
EXECUTION_MODEL_KEYS = ("fused",)
# model.fused: SE's and CBAM's fused Triton kernels ("auto": on CUDA when Triton is importable).
FUSED_CHOICES = ("auto", True, False)
# model.init_from_format: the key names of the pretrained file.
INIT_FORMATS = ("auto", "ours", "official", "torchvision", "timm")
# model.new_head: a new classifier instead of the file's (auto: when the file's classes are not the data's).
NEW_HEAD_CHOICES = ("auto", True, False)
# model.init_from in a fine-tuning recipe: the user must give the file (a Hydra ??? cannot replace a default).
INIT_FROM_REQUIRED = "required"
# model.freeze: the last part of the network that does not train (each includes the ones before it).
FREEZE_CHOICES = ("none", "stem", "stage1", "stage2", "stage3", "stage4")
# data.stem; the older data.network_type (lower-case spelling -> canonical spelling) is read as its alias.
STEMS = dataset_registry.STEMS
NETWORK_TYPES = dataset_registry.NETWORK_TYPES
DATASETS = dataset_registry.dataset_names()  # the built-in ones; validation reads the registry itself
OPTIMIZERS = tuple(optim_registry.OPTIMIZERS)
SCHEDULES = tuple(optim_registry.SCHEDULES)
PRECISIONS = ("32", "bf16", "fp16")
INITS = ("reference", "torchvision")
CHECKPOINT_FORMATS = ("ours", "official")
LOADERS = ("auto", "device", "workers", "dali")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
EVAL_PRECISIONS = ("32", "bf16", "fp16", "same")
TTA_MODES = ("none", "flip", "flip_translate")
# predict.py --tta: the views whose probabilities it averages (no translations).
PREDICT_TTA_MODES = ("none", "flip")
LOSSES = ("ce", "bce")
AUG_POLICIES = ("none", "randaugment", "trivialaugment")
EVAL_WEIGHTS = ("model", "ema")  # evaluate.py weights=: the trained weights or the run's weight average
# load_checkpoint(weights=...), predict.py and export.py --weights: "auto" takes the average when the run kept one.
WEIGHT_CHOICES = ("auto", *EVAL_WEIGHTS)
# What train.py returns to a sweeper (optimized_metric).
OPTIMIZED_METRICS = ("val_acc1", "best_val_acc1", "val_loss")
