"""`notecoder suggest`, `batch` and `evaluate`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the coding commands to `app`."""
