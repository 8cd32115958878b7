"""Evidence highlighting for the review UI: overlapping, nested, adjacent and invalid spans."""

from __future__ import annotations

from app.ui.highlight import Span, segments


def joined(parts: list) -> str:  # type: ignore[type-arg]
    return "".join(p.text for p in parts)


def test_overlapping_spans_split_into_pieces_covering_each_code() -> None:
    text = "type 2 diabetes mellitus with polyneuropathy today"
    parts = segments(text, [Span(0, 24, "icd10cm:E11.9"), Span(0, 44, "icd10cm:E11.42"), Span(16, 24, "cpt:X")])
    assert joined(parts) == text
    assert [(p.text, p.codes) for p in parts] == [
        ("type 2 diabetes ", ("icd10cm:E11.9", "icd10cm:E11.42")),
        ("mellitus", ("icd10cm:E11.9", "icd10cm:E11.42", "cpt:X")),
        (" with polyneuropathy", ("icd10cm:E11.42",)),
        (" today", ()),
    ]
    assert parts[1].code_values == "E11.9 E11.42 X"


def test_excluded_and_evidence_spans_are_kept_apart() -> None:
    text = "no asthma; pneumonia"
    parts = segments(text, [Span(3, 9, "negated", is_excluded=True), Span(11, 20, "icd10cm:J18.9")])
    assert [(p.text, p.codes, p.excluded) for p in parts] == [
        ("no ", (), ()), ("asthma", (), ("negated",)), ("; ", (), ()), ("pneumonia", ("icd10cm:J18.9",), ()),
    ]


def test_adjacent_spans_of_one_code_merge_and_bad_spans_are_dropped() -> None:
    text = "abcdef"
    parts = segments(text, [Span(0, 3, "c:A"), Span(3, 6, "c:A"), Span(4, 99, "c:B"), Span(5, 2, "c:C"),
                            Span(-1, 2, "c:D")])
    assert [(p.text, p.codes) for p in parts] == [("abcdef", ("c:A",))]
    assert segments("", [Span(0, 1, "c:A")]) == []
    assert [(p.text, p.is_marked) for p in segments("plain", [])] == [("plain", False)]
