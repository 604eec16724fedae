"""The attention-block registry: a block's name and where its class lives.

Torch-free, so that the config layer can check ``model.att_type`` before torch is imported.
Adding a block is one file under ``attn_resnet/models/attention/`` plus one line here; the
block declares its own options (its constructor's keyword arguments), placements and init,
and ``attn_resnet.models.attention`` resolves these names to classes.
"""

from __future__ import annotations

NO_ATTENTION = "none"

# name -> "module:Class" under attn_resnet.models.attention
BLOCKS: dict[str, str] = {
    "SE": "se:SE",
    "CBAM": "cbam:CBAM",
    "BAM": "bam:BAM",
    "ECA": "eca:ECA",
    "SEVar": "se_variants:SEVar",
    "GC": "gc:GC",
    "CoordAtt": "coord:CoordAtt",
    "SK": "sk:SK",
    "SA": "shuffle:SA",
    "PSA": "psa:PSA",
    "Triplet": "triplet:Triplet",
}

# Where a block can go in the network (model.att_placement); "default" takes the block's own.
#   residual: in every residual block, on the branch before the addition (SE's and CBAM's place)
#   post_add: in every residual block, after the addition and its ReLU
#   stage:    on the outputs of stages 1-3 (BAM's place)
#   head:     once, after the last stage, before the global pooling
PLACEMENTS = ("residual", "post_add", "stage", "head")
DEFAULT_PLACEMENT = "default"


def attention_names() -> tuple[str, ...]:
    """Every valid ``att_type`` in its canonical spelling, "none" first."""
    return (NO_ATTENTION, *BLOCKS)


def canonical_attention(value) -> str | None:
    """The canonical spelling of an ``att_type`` (case-insensitive; None means "none"), or None if unknown."""
    if value is None:
        return NO_ATTENTION
    if isinstance(value, str):
        for name in attention_names():
            if name.lower() == value.lower():
                return name
    return None
