"""Where a run's metrics go: TensorBoard, a CSV file, MLflow, W&B, or a logger of one's own (docs/logging.md).

Each is chosen in the ``logger`` config group and built with Hydra's ``instantiate``; the
modules import their libraries only when a run starts, so this package is torch-free.
"""

from .base import EPOCH_SCALARS, STATE_FILE, Logger, LoggerList, RunInfo, epoch_scalars, flatten_hparams
from .csv_logger import CSVLogger
from .mlflow_logger import MLflowLogger
from .tensorboard_logger import TensorBoardLogger
from .wandb_logger import WandbLogger

__all__ = ["CSVLogger", "EPOCH_SCALARS", "Logger", "LoggerList", "MLflowLogger", "RunInfo", "STATE_FILE", "TensorBoardLogger",
           "WandbLogger", "epoch_scalars", "flatten_hparams"]
