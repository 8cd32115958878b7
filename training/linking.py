"""Held-out linking accuracy (Acc@1, Acc@5) of an encoder over the full target index."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nlp.encoder import OnnxEmbedder, ProgressFn, export_onnx_int8
from training.data import Pair

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class LinkingMetrics:
    """Accuracy of the top-1 and top-5 codes against the gold code of each held-out phrase."""

    acc_at_1: float
    acc_at_5: float
    n_queries: int
    n_targets: int
    seconds: float

    def as_dict(self) -> dict[str, float | int]:
        return {"acc@1": round(self.acc_at_1, 4), "acc@5": round(self.acc_at_5, 4), "queries": self.n_queries,
                "targets": self.n_targets, "seconds": round(self.seconds, 1)}


def linking_accuracy(
    query_vectors: np.ndarray, gold: Sequence[str], target_vectors: np.ndarray, target_codes: Sequence[str]
) -> tuple[float, float]:
    """Acc@1 and Acc@5 of nearest-target search by cosine (vectors are unit length)."""
    if len(gold) == 0:
        return 0.0, 0.0
    position = {c: i for i, c in enumerate(target_codes)}
    gold_idx = np.asarray([position[g] for g in gold])
    hit1 = hit5 = 0
    for start in range(0, len(gold), 256):
        scores = query_vectors[start : start + 256] @ target_vectors.T
        top5 = np.argpartition(-scores, 4, axis=1)[:, :5]
        best = scores.argmax(axis=1)
        g = gold_idx[start : start + 256]
        hit1 += int((best == g).sum())
        hit5 += int((top5 == g[:, None]).any(axis=1).sum())
    return hit1 / len(gold), hit5 / len(gold)


def heldout_metrics(
    embed: Callable[[Sequence[str]], np.ndarray],
    sets: Mapping[str, Sequence[Pair]],
    target_vectors: np.ndarray,
    target_codes: Sequence[str],
) -> dict[str, dict[str, float | int]]:
    """Acc@1/Acc@5 of each non-empty held-out set, its phrases embedded by `embed`, every target a candidate."""
    out: dict[str, dict[str, float | int]] = {}
    for name, pairs in sets.items():
        if not pairs:
            continue
        t0 = time.perf_counter()
        acc1, acc5 = linking_accuracy(embed([p.anchor for p in pairs]), [p.code for p in pairs], target_vectors,
                                      target_codes)
        out[name] = LinkingMetrics(acc1, acc5, len(pairs), len(target_codes), time.perf_counter() - t0).as_dict()
    return out


def evaluate_linking(
    model: torch.nn.Module,
    targets: Mapping[str, str],
    sets: Mapping[str, Sequence[Pair]],
    *,
    max_length: int,
    batch_size: int = 128,
    progress: ProgressFn | None = None,
) -> dict[str, dict[str, float | int]]:
    """Accuracy of `model` (embedding phrases and targets alike) through the shipped inference path (int8
    ONNX), for each held-out set."""
    with tempfile.TemporaryDirectory(prefix="nc-linking-") as tmp:
        path = export_onnx_int8(model, Path(tmp) / "model.int8.onnx")
        embedder = OnnxEmbedder(path, max_length=max_length)
        codes = list(targets)
        target_vectors = embedder.embed([targets[c] for c in codes], batch_size=batch_size, progress=progress)
        return heldout_metrics(lambda texts: embedder.embed(texts, batch_size=batch_size), sets, target_vectors,
                               codes)
