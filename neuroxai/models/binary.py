"""Single-output binary classifiers: one logit ``z`` per subject (``BCEWithLogitsLoss`` style).

A binary classifier trained with ``BCEWithLogitsLoss`` returns ``(B, 1)`` or ``(B,)`` logits with
sigmoid semantics: ``P(class 1) = sigmoid(z)``. The pipeline speaks in class outputs, so
:class:`SingleLogitBinary` presents such a model as two class scores ``[−z, z]``:

* explaining **class 1** explains the logit ``z`` (the evidence for the signal class);
* explaining **class 0** explains ``−z`` (the evidence for class 0, i.e. against class 1).

For a method that is linear in the explained output (gradient, SmoothGrad, Integrated Gradients,
occlusion, every LRP rule) the class-0 map is exactly the negated class-1 map; Grad-CAM keeps only
positive evidence (a ReLU over the weighted activations), so its class-0 map is the CAM of ``−z``.
The predicted class is ``z > 0`` (sigmoid(z) > 0.5) and :meth:`SingleLogitBinary.probabilities`
gives ``[1 − sigmoid(z), sigmoid(z)]``, which evaluation (AUROC, accuracy) uses — not a softmax of
``[−z, z]``, which would be ``sigmoid(2z)``.

The wrapper holds the user's model as its child ``model`` (module paths gain the prefix
``model.``, e.g. a Grad-CAM ``layer: model.features.3``) and never modifies it. The negation is
the :class:`Negate` module, so LRP carries the relevance of ``−z`` through it unchanged (its rule
is ``pass``: the whole of ``−z`` is the contribution of ``z``), and LRP's graph check sees no
operation outside a module.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import ModelError


class Negate(nn.Module):
    """``y = −x``: a parameter-free linear map; LRP's rule for it is ``pass`` (``R_x = R_y``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -x


class SingleLogitBinary(nn.Module):
    """Wraps a model returning one logit ``z`` per subject as class scores ``(B, 2) = [−z, z]``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.negate = Negate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        if isinstance(z, (tuple, list)):
            z = z[0]
        z = z.reshape(z.shape[0], 1)
        return torch.cat([self.negate(z), z], 1)

    @staticmethod
    def probabilities(out: torch.Tensor) -> torch.Tensor:
        """``[1 − sigmoid(z), sigmoid(z)]`` from this wrapper's ``(B, 2)`` output."""
        p1 = torch.sigmoid(out[:, 1].float())
        return torch.stack([1 - p1, p1], 1)


def is_single_logit(out_shape: Sequence[int]) -> bool:
    """Whether a model output of ``out_shape`` holds one value per subject: ``(B,)`` or ``(B, 1)``."""
    return len(out_shape) == 1 or (len(out_shape) == 2 and out_shape[1] == 1)


def adapt_classifier(model: nn.Module, out_shape: Sequence[int], kind: str, n_classes: int) -> nn.Module:
    """``model`` as the pipeline needs it for a task of ``kind`` with ``n_classes`` classes:
    a single-logit model on a binary classification task is wrapped in :class:`SingleLogitBinary`;
    any other model is returned as it is. ``out_shape``: the model's output shape (from
    :func:`~neuroxai.models.byo.check_input_shape`)."""
    if kind != "classification" or not is_single_logit(out_shape):
        return model
    if n_classes != 2:
        raise ModelError("a model with one output per subject can only be a binary classifier",
                         expected=f"(B, {n_classes}) class logits for this {n_classes}-class task",
                         found=f"output {tuple(out_shape)}",
                         fix="return one logit per class, or use a binary task")
    return SingleLogitBinary(model)


def class_probabilities(model: nn.Module, out: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(B, C)`` of ``model``'s output ``out``: sigmoid semantics for a
    :class:`SingleLogitBinary`, softmax otherwise."""
    if isinstance(model, SingleLogitBinary):
        return model.probabilities(out)
    return torch.softmax(out, 1)
