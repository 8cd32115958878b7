"""Softmax over the whole frozen target index: every other code, siblings included, is a negative."""

from __future__ import annotations

import torch


class IndexSoftmaxLoss(torch.nn.Module):
    """Cross-entropy of each phrase embedding against all target embeddings (fixed, unit length).

    With the code side frozen (embedded once by the base model), scoring against all ~33k training targets
    costs one matrix product, so every sibling code is a hard negative in every step.
    """

    def __init__(self, targets: torch.Tensor, scale: float = 20.0) -> None:
        super().__init__()
        self.register_buffer("targets", targets, persistent=False)
        self.scale = scale

    def forward(self, anchors: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
        scores = self.scale * anchors @ self.targets.T
        return torch.nn.functional.cross_entropy(scores, gold)
