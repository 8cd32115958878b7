"""Training objectives, one per module."""

from training.losses.index_softmax import IndexSoftmaxLoss
from training.losses.mnrl import MultipleNegativesRankingLoss

__all__ = ["IndexSoftmaxLoss", "MultipleNegativesRankingLoss"]
