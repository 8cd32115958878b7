"""Deployment settings: the only place that reads the environment (prefix NOTECODER_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOTECODER_", env_file=None, extra="ignore")

    data_dir: Path = Field(default=Path("var"), description="Folder for the SQLite file, caches and note store")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty means SQLite under data_dir")
    max_note_chars: int = Field(default=200_000, ge=1)
    max_suggestions: int = Field(default=20, ge=1, le=200)
    suggestion_threshold: float = Field(
        default=0.4, ge=0.0, le=1.0, description="Suggestions scoring below it are left out (0.4: best dev-set F1)"
    )
    encryption_key: str = Field(default="", description="Fernet key; when set, stored note text is encrypted")
    note_retention_days: int = Field(default=90, ge=0)
    log_level: str = Field(default="INFO")
    use_encoder: bool = Field(default=True, description="Link unmatched problem phrases with the encoder")
    encoder_model: str = Field(
        default="", description="Encoder adapter folder; empty: the committed fine-tuned model, 'base': the "
        "plain all-MiniLM-L6-v2 (for comparisons)"
    )
    metrics_public: bool = Field(default=False, description="Serve /metrics without an admin API key")
    session_secret: str = Field(default="", description="Signs UI session cookies; empty: a random secret "
                                "kept in data_dir/ui_session_secret, shared by all workers")

    @field_validator("log_level")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'notecoder.db').as_posix()}"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"
