import torch


class BasicBlock(torch.nn.Module):
    """Placeholder: never instantiated by neuroxai's tests."""


class Bottleneck(torch.nn.Module):
    """Placeholder: never instantiated by neuroxai's tests."""
