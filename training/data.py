"""Training and held-out linking pairs (phrase -> ICD-10-CM target code) for the encoder.

Sources: the tabular's inclusion terms and category includes (simple-icd-10-cm), the Alphabetic Index (a term
with its parent terms, turned into a clinician-style phrase), abbreviation/synonym files (direct pairs, and
variants of other phrases with the expansion replaced by the abbreviation), and CodiEsp train sentences weakly
aligned to their document's codes. The held-out split takes whole 3-character categories, so its phrases and
codes are never seen in training.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from nlp.encoder import is_seventh_character_code, select_targets
from nlp.types import CodeInfo

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Pair:
    """A phrase naming `code` (an encoder target), and where it came from."""

    anchor: str
    code: str
    source: str


@dataclass
class LinkingData:
    """Targets (code -> embedded text), training and held-out pairs, and siblings for hard negatives."""

    targets: dict[str, str]
    train: list[Pair]
    test: list[Pair]
    held_out_families: set[str] = field(default_factory=set)
    # Unseen wordings of trained codes: phrases taken out of training whose code keeps other training phrases.
    test_terms: list[Pair] = field(default_factory=list)
    siblings: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def family(code: str) -> str:
    """The 3-character category a code belongs to."""
    return code[:3]


# ---- ICD-10-CM tabular ------------------------------------------------------------------------------------


def load_icd10cm() -> tuple[dict[str, CodeInfo], set[str], dict[str, list[tuple[str, str]]]]:
    """Codes, seventh-character owners, and per-code phrases (text, source) from simple-icd-10-cm."""
    import simple_icd_10_cm as cm

    codes: dict[str, CodeInfo] = {}
    owners: set[str] = set()
    phrases: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for code in dict.fromkeys(cm.get_all_codes(True)):
        is_billable = not cm.is_chapter(code) and not cm.is_block(code) and cm.is_leaf(code)
        parent = cm.get_parent(code) or None
        codes[code] = CodeInfo("icd10cm", code, cm.get_description(code), is_billable, parent)
        if cm.get_seven_chr_def(code):
            owners.add(code)
        for text in cm.get_inclusion_term(code):
            phrases[code].append((text, "inclusion"))
        for text in cm.get_includes(code):
            phrases[code].append((text, "includes"))
    return codes, owners, dict(phrases)


class TargetMap:
    """Maps any code named by a source to the encoder target it belongs to (or None)."""

    def __init__(self, codes: Mapping[str, CodeInfo], owners: set[str]) -> None:
        self.codes = codes
        self.owners = owners
        self.targets = select_targets(codes, owners)

    def __call__(self, code: str) -> str | None:
        code = code.strip().upper()
        if len(code) > 3 and "." not in code:
            code = f"{code[:3]}.{code[3:]}"
        if code in self.targets:
            return code
        info = self.codes.get(code)
        if info is not None and is_seventh_character_code(info, self.codes, self.owners):
            return info.parent
        # A non-billable category with a single billable target below it (rare) is still unambiguous.
        return None


_PAREN = re.compile(r"\s*\([^)]*\)")
_NEC = re.compile(r"\b(NEC|NOS)\b")
_SPACES = re.compile(r"\s+")


def clean_phrase(text: str) -> str:
    """Drop parenthesised nonessential modifiers and NEC/NOS, squeeze spaces."""
    text = _NEC.sub("", _PAREN.sub("", text))
    return _SPACES.sub(" ", text).strip(" ,;:-")


_CONNECTIVES = (
    "with", "without", "due to", "in", "of", "from", "by", "following", "after", "during", "complicating",
    "affecting", "involving", "on", "at", "to", "as", "and", "or", "secondary to", "associated with",
    "caused by", "resulting from", "except", "not", "for", "into", "under", "over", "between", "within",
)


def index_phrase(path: Sequence[str]) -> str:
    """Turn an index path (main term, subterms...) into the phrase a clinician would write.

    Adjective-like subterms go before the main term, nearest first ("Failure > heart > congestive" ->
    "congestive heart failure"); from the first prepositional subterm on, the rest follows it
    ("Diabetes > type 2 > with > neuropathy" -> "type 2 diabetes with neuropathy").
    """
    main = clean_phrase(path[0].split(",")[0])
    before: list[str] = []
    after: list[str] = []
    for raw in path[1:]:
        sub = clean_phrase(raw)
        if not sub:
            continue
        low = sub.lower()
        if after or any(low == c or low.startswith(c + " ") for c in _CONNECTIVES):
            after.append(sub)
        else:
            before.insert(0, sub)
    return _SPACES.sub(" ", " ".join([*before, main, *after])).strip()


def index_pairs(path: Path, to_target: TargetMap) -> list[Pair]:
    """Phrases from the Alphabetic Index CSV (flattened: RowID, Letter, Level, Term, ..., Code)."""
    from codebooks.loaders.icd10cm_index import PATH_SEPARATOR, parse_index_csv

    out: list[Pair] = []
    for row in parse_index_csv(path):
        target = to_target(row["code"])
        if target is None:
            continue
        phrase = index_phrase(row["text"].split(PATH_SEPARATOR))
        if phrase:
            out.append(Pair(phrase, target, "index"))
    return out


# ---- abbreviations and synonyms ---------------------------------------------------------------------------

_ABBR_COLUMNS = ("abbreviation", "abbr", "short", "short_form", "synonym", "variant", "term", "text", "phrase")
_EXPANSION_COLUMNS = ("expansion", "long", "long_form", "canonical", "preferred", "meaning", "expands_to", "full")
_CODE_COLUMNS = ("code", "icd10cm", "icd10", "icd_code")


def read_phrase_table(path: Path) -> list[tuple[str, str, str]]:
    """(short form, expansion, code) rows of a CSV whose columns are named in one of the usual ways.

    Either the expansion or the code may be empty. Files of other shapes give no rows.
    """
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(line for line in fh if not line.lstrip().startswith("#"))
        if reader.fieldnames is None:
            return []
        names = {n.strip().lower(): n for n in reader.fieldnames}

        def pick(options: Iterable[str]) -> str | None:
            return next((names[o] for o in options if o in names), None)

        short, long_, code = pick(_ABBR_COLUMNS), pick(_EXPANSION_COLUMNS), pick(_CODE_COLUMNS)
        if short is None or (long_ is None and code is None):
            return []
        rows = []
        for row in reader:
            s = (row.get(short) or "").strip()
            e = (row.get(long_) or "").strip() if long_ else ""
            c = (row.get(code) or "").strip() if code else ""
            if s and (e or c):
                rows.append((s, e, c))
        return rows


def abbreviation_pairs(
    table: Sequence[tuple[str, str, str]],
    base_pairs: Sequence[Pair],
    to_target: TargetMap,
    *,
    max_variants: int,
    rng: random.Random,
) -> list[Pair]:
    """Direct (short form -> code) pairs, plus phrases of `base_pairs` with the expansion replaced by the
    short form ("acute on chronic diastolic congestive heart failure" -> "acute on chronic diastolic CHF")."""
    out: list[Pair] = []
    for short, expansion, code in table:
        target = to_target(code) if code else None
        if target is not None:
            out.append(Pair(short, target, "abbreviation"))
            if expansion:
                out.append(Pair(expansion, target, "abbreviation"))
        if not expansion or expansion.lower() == short.lower():
            continue
        pattern = re.compile(rf"\b{re.escape(expansion)}\b", re.IGNORECASE)
        hits = [p for p in base_pairs if pattern.search(p.anchor)]
        rng.shuffle(hits)
        for p in hits[:max_variants]:
            out.append(Pair(pattern.sub(short, p.anchor, count=1), p.code, "abbreviation_variant"))
    return out


# ---- CodiEsp weak alignment -------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z]+")
_STOP = frozenset(
    "the and with without other unspecified due for from not of in on to by as at or part type site specified "
    "classified elsewhere diseases disease disorder disorders condition conditions".split()
)


def _stem(word: str) -> str:
    word = word.lower()
    return "" if word in _STOP or len(word) < 3 else word[:7]


def codiesp_pairs(documents: Iterable[tuple[str, Sequence[str]]], to_target: TargetMap, targets: Mapping[str, str],
                  *, limit: int) -> list[Pair]:
    """Weak pairs from CodiEsp train (English translation): for each document code, the shortest run of
    words in one sentence that covers every content word of the code's description (7-letter prefixes), if one
    exists and is at most three words longer than the description's content.

    Evidence spans exist only for the Spanish text, so alignment is lexical; requiring full coverage keeps
    the pairs precise at the cost of recall. `documents`: (English text, codes), as `read_codiesp` gives them.
    """
    out: list[Pair] = []
    if limit <= 0:
        return out
    for raw_text, raw_codes in documents:
        text = raw_text.lower()
        sentences = [m for m in re.finditer(r"[^.;:\n]+", text) if m.group().strip()]
        words = [[(w.start() + s.start(), w.end() + s.start(), _stem(w.group())) for w in _WORD.finditer(s.group())]
                 for s in sentences]
        for raw in raw_codes:
            target = to_target(raw)
            if target is None:
                continue
            need = {st for st in (_stem(w) for w in _WORD.findall(targets[target].lower())) if st}
            if not need or len(need) > 4:
                continue
            best: tuple[int, int] | None = None
            for sent in words:
                if not need <= {st for _, _, st in sent}:
                    continue
                for i, (start, _, st) in enumerate(sent):
                    if st not in need:
                        continue
                    seen: set[str] = set()
                    for j in range(i, min(len(sent), i + len(need) + 3)):
                        seen.add(sent[j][2])
                        if need <= seen:
                            if best is None or sent[j][1] - start < best[1] - best[0]:
                                best = (start, sent[j][1])
                            break
            if best is not None:
                out.append(Pair(text[best[0] : best[1]], target, "codiesp"))
            if len(out) >= limit:
                return out
    return out


def read_codiesp(path: Path, *, docs: int | None = None) -> list[tuple[str, list[str]]]:
    """(English text, ICD-10-CM codes) of the first `docs` documents of a CodiEsp JSONL file (all if None)."""
    out: list[tuple[str, list[str]]] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            if docs is not None and len(out) >= docs:
                break
            doc = json.loads(line)
            out.append((doc.get("text_en") or "", list(doc.get("icd10cm") or [])))
    return out


def case_report_clauses(text: str) -> list[str]:
    """The clauses of a note without sections, cut as the pipeline cuts them (nlp EncoderMentions, before it drops
    clauses a dictionary term covers and plan statements)."""
    from nlp.components.mentions import problem_clauses
    from nlp.components.sentences import split_sentences

    return [p for s, e in split_sentences(text) for _, _, p in problem_clauses(text, s, e, True)]


def codiesp_clause_pairs(
    documents: Sequence[tuple[str, Sequence[str]]],
    to_target: TargetMap,
    targets: Mapping[str, str],
    embed: Callable[[Sequence[str]], np.ndarray],
    *,
    min_cosine: float,
) -> list[Pair]:
    """Document-level supervision turned into clause pairs: each document is cut into clauses by the function the
    pipeline uses for a note without sections (every clause is kept; the pipeline also skips those a dictionary
    term covers and plan statements), and each of its gold codes is paired with the clause closest to the code's
    description by `embed` (the base model), if that cosine reaches `min_cosine` and no other gold code of the
    document is closer to the same clause. The gold codes constrain the choice; the model learns how case
    reports word the findings that CodiEsp coders coded.
    """
    import numpy as np

    per_doc: list[tuple[list[str], list[str]]] = []
    for text, raw_codes in documents:
        codes = list(dict.fromkeys(t for t in (to_target(c) for c in raw_codes) if t is not None))
        clauses = list(dict.fromkeys(case_report_clauses(text)))
        if codes and clauses:
            per_doc.append((clauses, codes))
    if not per_doc:
        return []
    all_clauses = [c for clauses, _ in per_doc for c in clauses]
    all_codes = list(dict.fromkeys(c for _, codes in per_doc for c in codes))
    clause_vectors = embed(all_clauses)
    code_vectors = embed([targets[c] for c in all_codes])
    code_row = {c: i for i, c in enumerate(all_codes)}
    out: list[Pair] = []
    offset = 0
    for clauses, codes in per_doc:
        sims = clause_vectors[offset : offset + len(clauses)] @ code_vectors[[code_row[c] for c in codes]].T
        offset += len(clauses)
        closest_code = np.argmax(sims, axis=1)
        for j, code in enumerate(codes):
            i = int(np.argmax(sims[:, j]))
            if sims[i, j] >= min_cosine and int(closest_code[i]) == j:
                out.append(Pair(clauses[i], code, "codiesp_clause"))
    return out


# ---- assembly ---------------------------------------------------------------------------------------------


def _phrase_key(phrase: str) -> str:
    return _SPACES.sub(" ", phrase.lower()).strip()


def add_training_only(train: Sequence[Pair], extra: Iterable[Pair], *, held_out_families: Collection[str],
                      held_out_pairs: Iterable[Pair]) -> list[Pair]:
    """`train` followed by the pairs of `extra` that belong to no held-out family and repeat no phrase (case and
    spacing ignored) of training, of a held-out set or of an earlier extra pair: added after the split, they
    cannot leak into either held-out set."""
    out = list(train)
    seen = {_phrase_key(p.anchor) for p in [*out, *held_out_pairs]}
    for p in extra:
        key = _phrase_key(p.anchor)
        if family(p.code) not in held_out_families and key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _dedupe(pairs: Iterable[Pair], targets: Mapping[str, str]) -> list[Pair]:
    """One pair per (phrase, code); phrases naming several codes and phrases equal to the target's own text
    are dropped (the first would be false negatives in a batch, the second teaches nothing)."""
    by_phrase: dict[str, dict[str, Pair]] = defaultdict(dict)
    for p in pairs:
        key = _phrase_key(p.anchor)
        if not key or key == targets[p.code].lower():
            continue
        by_phrase[key].setdefault(p.code, p)
    return [next(iter(v.values())) for v in by_phrase.values() if len(v) == 1]


def build_siblings(codes: Iterable[str]) -> dict[str, list[str]]:
    """Codes sharing a parent prefix (one character shorter, dots ignored) are each other's hard negatives."""
    groups: dict[str, list[str]] = defaultdict(list)
    for code in codes:
        flat = code.replace(".", "")
        groups[flat[:-1] if len(flat) > 3 else flat[:2]].append(code)
    out: dict[str, list[str]] = {}
    for members in groups.values():
        if len(members) > 1:
            for code in members:
                out[code] = [c for c in members if c != code]
    return out


def split_pairs(
    pairs: Sequence[Pair], targets: Mapping[str, str], *, test_fraction: float, max_test: int, rng: random.Random
) -> tuple[list[Pair], list[Pair], set[str]]:
    """Hold out whole families: their phrases form the test set, and nothing of theirs is trained on."""
    families = sorted({family(c) for c in targets})
    n_test = max(1, round(len(families) * test_fraction)) if test_fraction > 0 else 0
    held_out = set(rng.sample(families, n_test))
    train = [p for p in pairs if family(p.code) not in held_out]
    test = [p for p in pairs if family(p.code) in held_out]
    rng.shuffle(test)
    return train, test[:max_test], held_out


def split_terms(
    train: Sequence[Pair],
    *,
    fraction: float,
    max_test: int,
    rng: random.Random,
    sources: Collection[str] = ("index", "inclusion"),
) -> tuple[list[Pair], list[Pair]]:
    """Hold out single phrases (of `sources`) whose code keeps at least one other training phrase.

    This measures what the shipped model does with a new wording of a condition it was trained on, next to the
    family split, which measures conditions it never saw at all.
    """
    if fraction <= 0 or max_test <= 0:
        return list(train), []
    n_test = min(max_test, round(len(train) * fraction))
    left: dict[str, int] = defaultdict(int)
    for p in train:
        left[p.code] += 1
    order = list(range(len(train)))
    rng.shuffle(order)
    chosen: set[int] = set()
    for i in order:
        if len(chosen) >= n_test:
            break
        p = train[i]
        if p.source in sources and left[p.code] > 1:
            left[p.code] -= 1
            chosen.add(i)
    return [p for i, p in enumerate(train) if i not in chosen], [train[i] for i in sorted(chosen)]


def build_linking_data(
    *,
    index_csv: Path | None = None,
    codiesp_train: Path | None = None,
    phrase_tables: Sequence[Path] = (),
    max_abbreviation_variants: int = 25,
    max_codiesp_pairs: int = 3000,
    test_family_fraction: float = 0.08,
    test_term_fraction: float = 0.0,
    max_test_queries: int = 2000,
    seed: int = 13,
    clause_embed: Callable[[Sequence[str]], np.ndarray] | None = None,
    codiesp_clause_docs: int = 0,
    codiesp_clause_min_cosine: float = 0.45,
) -> LinkingData:
    """All pairs from the configured sources, deduplicated and split by code family.

    With `clause_embed` (the base model) and `codiesp_clause_docs` > 0, the first that many CodiEsp train
    documents also give clause pairs (`codiesp_clause_pairs`). They are added to training only, after both
    held-out sets are drawn (so those stay the same with or without them), and never for a held-out family or
    with a phrase of a held-out set."""
    rng = random.Random(seed)
    codes, owners, tabular = load_icd10cm()
    to_target = TargetMap(codes, owners)
    targets = to_target.targets
    pairs: list[Pair] = []
    for code, items in tabular.items():
        target = to_target(code)
        if target is not None:
            pairs.extend(Pair(clean_phrase(t) or t, target, src) for t, src in items)
    if index_csv is not None:
        pairs.extend(index_pairs(index_csv, to_target))
    table = [row for path in phrase_tables for row in read_phrase_table(path)]
    pairs.extend(abbreviation_pairs(table, pairs, to_target, max_variants=max_abbreviation_variants, rng=rng))
    documents = read_codiesp(codiesp_train) if codiesp_train is not None else []
    # Pairs of the first codiesp_clause_docs documents, then of the rest (the calibration documents): one pass,
    # in document order, under one limit.
    first = max(codiesp_clause_docs, 0)
    early = codiesp_pairs(documents[:first], to_target, targets, limit=max_codiesp_pairs)
    pairs.extend(early)
    pairs.extend(codiesp_pairs(documents[first:], to_target, targets, limit=max_codiesp_pairs - len(early)))
    pairs = _dedupe(pairs, targets)
    train, test, held_out = split_pairs(
        pairs, targets, test_fraction=test_family_fraction, max_test=max_test_queries, rng=rng
    )
    train, test_terms = split_terms(train, fraction=test_term_fraction, max_test=max_test_queries, rng=rng)
    if documents and codiesp_clause_docs > 0:
        # The documents after the first codiesp_clause_docs stay unseen (they calibrate the pipeline). They are
        # dropped from training only after the split, so the held-out sets stay the same with or without them.
        kept = {(p.anchor, p.code) for p in early}
        train = [p for p in train if p.source != "codiesp" or (p.anchor, p.code) in kept]
    if documents and clause_embed is not None and codiesp_clause_docs > 0:
        clauses = _dedupe(codiesp_clause_pairs(documents[:first], to_target, targets, clause_embed,
                                               min_cosine=codiesp_clause_min_cosine), targets)
        train = add_training_only(train, clauses, held_out_families=held_out, held_out_pairs=[*test, *test_terms])
    rng.shuffle(train)
    train_codes = [c for c in targets if family(c) not in held_out]
    counts: dict[str, int] = defaultdict(int)
    for p in train:
        counts[f"train_{p.source}"] += 1
    for p in test:
        counts[f"test_{p.source}"] += 1
    for p in test_terms:
        counts[f"test_terms_{p.source}"] += 1
    return LinkingData(targets, train, test, held_out, test_terms, build_siblings(train_codes),
                       dict(sorted(counts.items())))
