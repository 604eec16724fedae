"""Train an attention ResNet: ``python train.py model.att_type=CBAM`` (see README.md; also ``attn-resnet train``)."""

from attn_resnet.commands.train import main

if __name__ == "__main__":
    main()
