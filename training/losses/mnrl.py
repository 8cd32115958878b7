"""Multiple-negatives ranking loss: in-batch negatives plus one hard negative per anchor."""

from __future__ import annotations

import torch


class MultipleNegativesRankingLoss(torch.nn.Module):
    """Cross-entropy of each anchor against every positive and hard negative of the batch.

    Embeddings must be L2-normalised; `scale` is the inverse temperature on cosine. Candidates that name the
    anchor's own code (another anchor of the same code, in the same batch) are masked out rather than
    counted as negatives.
    """

    def __init__(self, scale: float = 20.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(
        self,
        anchors: torch.Tensor,
        positives: torch.Tensor,
        negatives: torch.Tensor | None = None,
        *,
        anchor_codes: list[str] | None = None,
        candidate_codes: list[str] | None = None,
    ) -> torch.Tensor:
        candidates = positives if negatives is None else torch.cat([positives, negatives], dim=0)
        scores = self.scale * anchors @ candidates.T
        labels = torch.arange(anchors.shape[0], device=anchors.device)
        if anchor_codes is not None and candidate_codes is not None:
            same = torch.tensor(
                [[a == c for c in candidate_codes] for a in anchor_codes], dtype=torch.bool, device=scores.device
            )
            same[labels, labels] = False
            scores = scores.masked_fill(same, float("-inf"))
        return torch.nn.functional.cross_entropy(scores, labels)
