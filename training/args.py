"""Arguments of one encoder training run: a dataclass, filled from a TOML file per experiment."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A training config names an unknown field or a value of the wrong kind."""

    code = "training_config_invalid"


@dataclass
class TrainingArguments:
    """Everything that decides a training run; relative paths are resolved against the repository root."""

    # Defaults write a scratch model, never over the committed one (its TOML names nlp/models/... itself).
    version: str = "minilm-icd-lora-dev"
    output_dir: str = "var/models/minilm-icd-lora-dev"
    seed: int = 13
    threads: int = 2

    # Data: the tabular (simple-icd-10-cm) is always used; these add more phrases.
    index_csv: str | None = None
    codiesp_train: str | None = None
    abbreviation_files: list[str] = field(
        default_factory=lambda: ["training/resources/clinical_abbreviations.csv", "nlp/resources/abbreviations.csv"]
    )
    synonym_files: list[str] = field(default_factory=lambda: ["nlp/resources/synonyms.csv"])
    max_abbreviation_variants: int = 25
    max_codiesp_pairs: int = 3000
    # Clause pairs from CodiEsp train (training/data.py: codiesp_clause_pairs): the first this many documents
    # (0: none); the later ones stay unseen for calibrating the pipeline floor. A clause is paired with a gold
    # code of its document when the base model's cosine reaches codiesp_clause_min_cosine.
    codiesp_clause_docs: int = 0
    codiesp_clause_min_cosine: float = 0.45
    # Times each pair of a source appears per epoch (index_softmax): the few abbreviation and synonym pairs
    # would otherwise be seen less than once in a short run.
    source_weights: dict[str, int] = field(default_factory=dict)

    # Held-out linking split: whole 3-character categories the model never sees.
    test_family_fraction: float = 0.08
    # Second held-out set: this share of the training families' index/inclusion phrases (unseen wordings of
    # trained codes), at most max_test_queries.
    test_term_fraction: float = 0.0
    max_test_queries: int = 2000

    # Objective: "index_softmax" trains a phrase (query) tower against the frozen base-model index of all
    # targets; "in_batch" trains one tower for both sides with in-batch + sibling hard negatives (MNRL).
    objective: str = "index_softmax"
    cache_dir: str = "var/cache"

    # Optimisation.
    batch_size: int = 64
    max_steps: int = 1500
    time_budget_s: float = 1200.0
    learning_rate: float = 5e-4
    warmup_steps: int = 50
    weight_decay: float = 0.0
    scale: float = 20.0
    hard_negatives: bool = True
    max_length: int = 64

    # LoRA adapter (PEFT).
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: ["query", "key", "value", "dense"])
    lora_layers: list[int] | None = None  # transformer layers to adapt (None: all six)

    # The pipeline's cosine floor for this model, written to model.json as "min_cosine" (None: the rules'
    # default). Replaced by the calibration below when that runs.
    pipeline_min_cosine: float | None = None
    # After training, calibrate the model in the pipeline (training/calibrate.py) on this many CodiEsp train
    # documents following the first codiesp_clause_docs (0: no calibration); the code sets come from this
    # database (created and filled on first use).
    calibration_docs: int = 0
    calibration_database_url: str = "sqlite:///var/notecoder.db"

    # Linking evaluation before and after training (embeds every target twice: a few minutes).
    evaluate: bool = True
    eval_batch_size: int = 128

    def resolve(self, path: str | None) -> Path | None:
        """`path` as an absolute path (relative ones against the repository root)."""
        if path is None:
            return None
        p = Path(path).expanduser()
        return p if p.is_absolute() else REPO_ROOT / p

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_toml(cls, path: Path, **overrides: Any) -> TrainingArguments:
        """Read a TOML file whose top-level keys are field names; `overrides` win over the file."""
        with Path(path).open("rb") as fh:
            values = tomllib.load(fh)
        values.update(overrides)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown training argument(s) {', '.join(unknown)}")
        args = cls(**values)
        if args.objective not in ("index_softmax", "in_batch"):
            raise ConfigError(f"{path}: objective must be 'index_softmax' or 'in_batch', not {args.objective!r}")
        if args.calibration_docs > 0 and args.codiesp_clause_docs <= 0:
            # Calibration reads the CodiEsp documents after the first codiesp_clause_docs, the ones kept out of
            # training; without that cut it would calibrate on documents the model was trained on.
            raise ConfigError(f"{path}: calibration_docs needs codiesp_clause_docs > 0 (the documents kept out of "
                              "training start after them)")
        return args
