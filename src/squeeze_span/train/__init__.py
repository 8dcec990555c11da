"""The shared trainer: devices, precision, DDP, checkpoints, resume, logs."""

from squeeze_span.config import TrainingConfig
from squeeze_span.train.run import RunFolder, TrainingDiverged
from squeeze_span.train.trainer import Trainer

__all__ = ["RunFolder", "Trainer", "TrainingConfig", "TrainingDiverged"]
