"""The shared trainer: devices, precision, DDP, checkpoints, resume, logs."""

from squeeze_span.config import TrainingConfig
from squeeze_span.train.trainer import Trainer, TrainingDiverged

__all__ = ["Trainer", "TrainingConfig", "TrainingDiverged"]
