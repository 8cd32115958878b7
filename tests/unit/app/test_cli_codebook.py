from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import app


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The embedded default: a SQLite file under a data dir of this test's own, filled on first use."""
    return {"NOTECODER_DATA_DIR": str(tmp_path_factory.mktemp("var")), "NOTECODER_DATABASE_URL": ""}


def run(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_lookup_fills_the_database_on_first_use(env: dict[str, str]) -> None:
    output = run(env, "codebook", "lookup", "E11.40")
    assert "Type 2 diabetes mellitus with diabetic neuropathy, unspecified" in output
    assert "| billable" in output
    assert (Path(env["NOTECODER_DATA_DIR"]) / "notecoder.db").is_file()


def test_lookup_category_is_not_billable(env: dict[str, str]) -> None:
    assert "not billable" in run(env, "codebook", "lookup", "E11.4")


def test_search_lists_code_in_first_five_rows(env: dict[str, str]) -> None:
    output = run(env, "codebook", "search", "type 2 diabetes neuropathy", "--limit", "5")
    assert "E11.40" in output


def test_lookup_cpt_prints_project_wording(env: dict[str, str]) -> None:
    from codebooks.loaders.cpt import curated_path, parse_cpt_file

    wording = {r["code"]: r["long"] for r in parse_cpt_file(curated_path())}["99213"]
    output = run(env, "codebook", "lookup", "99213", "--json")
    assert wording in output


def test_list_and_unknown_code(env: dict[str, str]) -> None:
    listing = run(env, "codebook", "list")
    assert "FY2026-04" in listing and "notecoder-2026" in listing
    result = CliRunner().invoke(app, ["codebook", "lookup", "Q99.99X"], env=env)
    assert result.exit_code == 1
    assert "not in version" in result.output


def test_load_reports_already_loaded(env: dict[str, str]) -> None:
    assert "already loaded" in run(env, "codebook", "load")
