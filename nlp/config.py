"""Pipeline behaviour that deployments may tune (the rest is versioned data in nlp/resources)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ENCODER_SECTIONS: tuple[str, ...] = ("assessment", "indication", "problem_list")


@dataclass(frozen=True)
class PipelineConfig:
    """Knobs of `build_pipeline`.

    threshold: suggestions scoring below it go unreported (Settings.suggestion_threshold).
    encoder_min_cosine: the encoder's top code is used only at or above this cosine (None: the floor calibrated
        for the model, model.json "min_cosine", else rules.json thresholds.encoder_min_cosine).
    resource_dir: alternative nlp/resources folder (tests, site-specific rules).
    cache_dir: where the built dictionary is cached between start-ups (None: no cache).
    """

    threshold: float = 0.35
    max_note_chars: int = 200_000
    encoder_min_cosine: float | None = None
    encoder_sections: tuple[str, ...] = ENCODER_SECTIONS
    resource_dir: Path | None = None
    cache_dir: Path | None = None
