"""`notecoder suggest`, `batch` and `evaluate` through the real CLI, database and pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import app

pytestmark = pytest.mark.slow

NOTE = "Assessment:\n1. Essential hypertension.\n2. Type 2 diabetes with CKD stage 3a.\nDenies chest pain.\n"


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    data = tmp_path_factory.mktemp("cli-data")
    return {"NOTECODER_DATA_DIR": str(data), "NOTECODER_USE_ENCODER": "false"}


def run(env: dict[str, str], *args: str, stdin: str | None = None):  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(app, list(args), env=env, input=stdin)
    return result


def test_suggest_json_is_the_api_response(cli_env: dict[str, str], tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text(NOTE)
    result = run(cli_env, "suggest", str(note), "--json", "--setting", "outpatient", "--age", "70", "--sex", "F")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout.strip().splitlines()[-1])
    codes = [s["code"] for s in body["suggestions"]]
    assert {"I12.9", "E11.22", "N18.31"} <= set(codes)
    assert "I10" not in codes
    for s in body["suggestions"]:
        assert all(NOTE[e["start"]:e["end"]] == e["text"] for e in s["evidence"])
    assert body["codeset_versions"]["icd10cm"]
    assert any(x["reason"] == "negated" for x in body["excluded"])


def test_suggest_from_stdin_prints_a_table(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "suggest", "-", stdin=NOTE)
    assert result.exit_code == 0, result.output
    assert "I12.9" in result.stdout


def test_suggest_rejects_a_bad_date(cli_env: dict[str, str], tmp_path: Path) -> None:
    note = tmp_path / "n.txt"
    note.write_text(NOTE)
    assert run(cli_env, "suggest", str(note), "--date", "2026-13-40").exit_code != 0


def test_batch_one_line_out_per_line_in_and_bad_lines_do_not_stop_it(cli_env: dict[str, str],
                                                                     tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    lines = [
        json.dumps({"id": "a", "text": NOTE}),
        "{not json",
        json.dumps({"id": "c", "text": "   "}),
        json.dumps({"id": "d", "text": NOTE, "setting": "nursing-home"}),
        json.dumps({"id": "e", "text": "ED note. Impression: Colles fracture of left radius.", "setting": "emergency"}),
    ]
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    result = run(cli_env, "batch", str(src), "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 5
    assert rows[0]["id"] == "a" and "I12.9" in {s["code"] for s in rows[0]["suggestions"]}
    assert rows[1]["error"]["code"] == "invalid_json"
    assert rows[2]["error"]["code"] == "empty_text"
    assert rows[3]["error"]["code"] == "invalid_request"
    assert "S52.532A" in {s["code"] for s in rows[4]["suggestions"]}


def test_evaluate_json_on_a_small_gold_file(cli_env: dict[str, str], tmp_path: Path) -> None:
    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({
        "id": "g1", "setting": "outpatient", "text": NOTE,
        "icd10cm": [{"code": "I12.9", "evidence": ["Essential hypertension"]}, {"code": "N18.31", "evidence": []},
                    {"code": "E11.22", "evidence": []}, {"code": "Z79.4", "evidence": []}],
        "must_not": ["I10"],
    }) + "\n")
    result = run(cli_env, "evaluate", str(gold), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    icd = report["systems"]["icd10cm"]
    assert icd["true_positives"] == 3 and icd["gold"] == 4
    assert report["trap_violations"] == 0
    assert report["evidence_valid_rate"] == 1.0


def _batch_input(tmp_path: Path, n: int) -> Path:
    src = tmp_path / "in.jsonl"
    notes = [{"id": f"n{i}", "text": NOTE if i % 2 else "Impression: Acute maxillary sinusitis. No fever."}
             for i in range(n)]
    src.write_text("".join(json.dumps(x) + "\n" for x in notes[:2]) + "{torn json\n"
                   + "".join(json.dumps(x) + "\n" for x in notes[2:]))
    return src


def test_batch_resume_codes_only_what_is_missing(cli_env: dict[str, str], tmp_path: Path) -> None:
    src = _batch_input(tmp_path, 6)
    full = tmp_path / "full.jsonl"
    assert run(cli_env, "batch", str(src), "--out", str(full)).exit_code == 0
    expected = [json.loads(x) for x in full.read_text().splitlines()]
    assert len(expected) == 7
    # A run that died after three lines, in the middle of writing the fourth.
    lines = full.read_text().splitlines(keepends=True)
    partial = tmp_path / "partial.jsonl"
    partial.write_text("".join(lines[:3]) + lines[3][:20])
    result = run(cli_env, "batch", str(src), "--out", str(partial), "--resume")
    assert result.exit_code == 0, result.output
    assert "3 already done" in result.output
    resumed = [json.loads(x) for x in partial.read_text().splitlines()]
    assert [r["id"] for r in resumed] == [r["id"] for r in expected]
    assert [sorted(s["code"] for s in r.get("suggestions", [])) for r in resumed] == [
        sorted(s["code"] for s in r.get("suggestions", [])) for r in expected
    ]
    # Nothing left to do: resuming again writes nothing.
    assert run(cli_env, "batch", str(src), "--out", str(partial), "--resume").exit_code == 0
    assert len(partial.read_text().splitlines()) == 7


def test_batch_workers_keep_input_order(cli_env: dict[str, str], tmp_path: Path) -> None:
    src = _batch_input(tmp_path, 8)
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    assert run(cli_env, "batch", str(src), "--out", str(one)).exit_code == 0
    result = run(cli_env, "batch", str(src), "--out", str(two), "--workers", "2")
    assert result.exit_code == 0, result.output
    strip = lambda rows: [(r["id"], sorted(s["code"] for s in r.get("suggestions", [])), r.get("error"))  # noqa: E731
                          for r in rows]
    assert strip([json.loads(x) for x in two.read_text().splitlines()]) == strip(
        [json.loads(x) for x in one.read_text().splitlines()])


@pytest.mark.timeout(600)
def test_batch_on_ray_matches_the_local_engine(cli_env: dict[str, str], tmp_path: Path) -> None:
    src = _batch_input(tmp_path, 5)
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert run(cli_env, "batch", str(src), "--out", str(local)).exit_code == 0
    result = run(cli_env, "batch", str(src), "--out", str(on_ray), "--engine", "ray", "--workers", "2")
    assert result.exit_code == 0, result.output
    strip = lambda rows: [(r["id"], sorted(s["code"] for s in r.get("suggestions", [])), r.get("error"))  # noqa: E731
                          for r in rows]
    assert strip([json.loads(x) for x in on_ray.read_text().splitlines()]) == strip(
        [json.loads(x) for x in local.read_text().splitlines()])


def test_batch_rejects_an_unknown_engine(cli_env: dict[str, str], tmp_path: Path) -> None:
    src = _batch_input(tmp_path, 1)
    result = run(cli_env, "batch", str(src), "--out", str(tmp_path / "o.jsonl"), "--engine", "spark")
    assert result.exit_code != 0 and "unknown engine" in result.output
