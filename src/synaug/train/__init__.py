"""Train stage: models, batched augmentation, the trainer, cRT and checkpoints."""

from synaug.train.augment import BatchAugment
from synaug.train.checkpoint import load_checkpoint, load_train_result, save_checkpoint
from synaug.train.crt import ClassBalancedSampler, retrain_classifier
from synaug.train.inference import extract_features, infer
from synaug.train.models import MODELS, Normalizer, build_model, resnet32, resnet50, small_resnet
from synaug.train.trainer import RECIPES, TrainConfig, TrainResult, recipe, train_classifier

__all__ = [
    "MODELS",
    "RECIPES",
    "BatchAugment",
    "ClassBalancedSampler",
    "Normalizer",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "extract_features",
    "infer",
    "load_checkpoint",
    "load_train_result",
    "recipe",
    "resnet32",
    "resnet50",
    "retrain_classifier",
    "save_checkpoint",
    "small_resnet",
    "train_classifier",
]
