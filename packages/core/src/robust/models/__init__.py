"""Base models registered by the core: MLP, a small CNN, CIFAR ResNet-20, torchvision ResNets."""

from robust.models.classifier import Classifier

__all__ = ["Classifier"]
