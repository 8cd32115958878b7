"""Link calibration and floor sweep of training/calibrate.py: the isotonic fit on hand-made points, and the
whole fit through the real pipeline and code set with a scorer whose links are known to be right or wrong."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from codebooks.repository import CodebookRepository
from training.calibrate import (
    MemoScorer,
    best_floor,
    calibrate,
    fit_calibration,
    isotonic_knots,
    sweep,
    write_calibration,
)
from training.evaluate import parse_gold_line


def test_isotonic_knots_pool_violators_and_cap_the_precision() -> None:
    points = [(0.30 + i / 1000, False) for i in range(25)]  # bin 1: 0 of 25 right
    points += [(0.40 + i / 1000, i < 10) for i in range(25)]  # bin 2: 10 of 25
    points += [(0.50 + i / 1000, i < 5) for i in range(25)]  # bin 3: 5 of 25, violates the order
    points += [(0.80 + i / 1000, True) for i in range(25)]  # bin 4: all right
    knots = isotonic_knots(points, min_bin=25, max_precision=0.9)
    cos = [c for c, _ in knots]
    prec = [p for _, p in knots]
    assert cos == sorted(cos) and prec == sorted(prec)
    assert len(knots) == 3  # bins 2 and 3 pooled
    assert prec[0] == 0.0 and prec[1] == pytest.approx(15 / 50) and prec[2] == 0.9
    assert isotonic_knots([]) == []
    # A short last bin joins the one before it.
    assert len(isotonic_knots([(0.5, True)] * 30, min_bin=25)) == 1


class TableScorer:
    """Links phrases by a keyword table: (keyword, code, cosine)."""

    version = "table-1"
    min_cosine: float | None = 0.3
    calibration: list[tuple[float, float]] | None = None

    def __init__(self, table: Sequence[tuple[str, str, float]]) -> None:
        self.table = table
        self.calls = 0

    def link(self, phrases: Sequence[str], k: int = 5) -> list[list[tuple[str, float]]]:
        self.calls += 1
        out = []
        for p in phrases:
            hit = next(((code, cos) for word, code, cos in self.table if word in p.lower()), ("R69", 0.05))
            out.append([hit])
        return out


def _note(i: int, text: str, codes: list[str]) -> object:
    return parse_gold_line({"id": f"c{i}", "text_en": text, "icd10cm": codes}, i)


# Case-report style notes (no section header: every clause goes to the encoder). "colonic diverticular flare"
# is linked right (K57.92 is gold), "strange renal reserve" wrongly (N18.30 is not).
NOTES = [
    _note(1, "The patient had a colonic diverticular flare. She was discharged.", ["K57.92"]),
    _note(2, "He presented a strange renal reserve finding on admission.", ["I10"]),
    _note(3, "A colonic diverticular flare was described later on.", ["K57.92"]),
    _note(4, "There was a strange renal reserve pattern on imaging.", ["E11.9"]),
]
TABLE = [("diverticular", "K57.92", 0.8), ("renal reserve", "N18.30", 0.5)]


def test_fit_judges_the_pipelines_similarity_links_against_gold(codebook_repository: CodebookRepository) -> None:
    memo = MemoScorer(TableScorer(TABLE))
    knots, n_links = fit_calibration(codebook_repository, memo, NOTES, min_bin=1)
    assert n_links == 4
    # One pooled knot per distinct level: the 0.5 links were all wrong, the 0.8 links all right (capped).
    assert knots[0] == (0.5, 0.0) and knots[-1] == (0.8, 0.95)


def test_sweep_and_calibrate_report_f1_and_map_per_floor(codebook_repository: CodebookRepository,
                                                         tmp_path: Path) -> None:
    scorer = TableScorer(TABLE)
    none = sweep(codebook_repository, None, NOTES, [0.4])
    assert len(none) == 1 and none[0]["f1"] == 0.0 and none[0]["map"] == 0.0
    rows = sweep(codebook_repository, scorer, NOTES, [0.4, 0.9], calibration=[(0.5, 0.1), (0.8, 0.6)],
                 threshold=0.25)
    by_floor = {r["floor"]: r for r in rows}
    # At 0.4 both links are kept: K57.92 scores 0.3 (its 0.6 capped by the weight of a similarity link outside
    # any section; shown at 0.25, right), N18.30 0.1 (hidden, wrong).
    assert by_floor[0.4]["precision"] == 1.0 and by_floor[0.4]["recall"] == pytest.approx(0.5)
    assert by_floor[0.4]["map"] == pytest.approx(0.5)
    assert by_floor[0.9]["f1"] == 0.0 and by_floor[0.9]["suggestions"] == 0
    assert best_floor(rows) == 0.4
    assert scorer.calls == len(NOTES)  # once per note for the first floor, reused for the second

    report = calibrate(codebook_repository, TableScorer(TABLE), NOTES, [0.4, 0.6], min_bin=1)
    assert report["best_floor"] == 0.6 and report["links"] == 4  # equal rows: the higher floor wins
    (tmp_path / "model.json").write_text(json.dumps({"version": "x"}))
    write_calibration(tmp_path, report["best_floor"], report["link_calibration"], {"notes": 4})
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["min_cosine"] == 0.6 and meta["link_calibration"][-1] == [0.8, 0.95]
    assert meta["version"] == "x" and meta["calibration_report"] == {"notes": 4}
    # A fit that found no similarity links leaves the model uncalibrated rather than writing an empty curve.
    write_calibration(tmp_path, 0.6, [], {"notes": 4, "links": 0})
    meta = json.loads((tmp_path / "model.json").read_text())
    assert "link_calibration" not in meta and meta["min_cosine"] == 0.6
