"""Evaluate a checkpoint: ``python evaluate.py checkpoint=outputs/.../checkpoints/best.pt`` (also ``attn-resnet
evaluate``)."""

from attn_resnet.commands.evaluate import main

if __name__ == "__main__":
    main()
