"""Speed benchmarks: our attention ResNets beside their torchvision/timm peers, the data path and the trainer."""
