"""Models: architectures, training loop, checkpoints, bring-your-own models, randomization."""
from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .nets import MODELS
from .train import TrainConfig, TrainResult, evaluate, predict, train_model

__all__ = ["MODELS", "TrainConfig", "TrainResult", "evaluate", "load_checkpoint", "predict",
           "read_checkpoint", "save_checkpoint", "train_model"]
