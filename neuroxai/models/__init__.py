"""Models: architectures (``MODELS``), training loop, checkpoints, bring-your-own models and
model-parameter randomization. Imports nothing above it (attribution, scoring, protocol)."""
from .byo import check_input_shape, load_user_model
from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .nets import MODELS
from .train import TrainConfig, TrainResult, evaluate, predict, train_model

__all__ = ["MODELS", "TrainConfig", "TrainResult", "check_input_shape", "evaluate", "load_checkpoint",
           "load_user_model", "predict", "read_checkpoint", "save_checkpoint", "train_model"]
