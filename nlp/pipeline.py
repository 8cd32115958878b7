"""build_pipeline: the one place where components are ordered. Pipeline.code: note in, coded result out.

Order (each component declares what it requires and assigns; the order is checked at build time):
sentences -> doc -> sections -> mentions -> [encoder mentions] -> context -> coding -> ranking -> [services].
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from nlp.components.coding import Coder
from nlp.components.context import ContextAssertions, DocMaker
from nlp.components.dictionary import Dictionary
from nlp.components.mentions import DictionaryMentions, EncoderMentions
from nlp.components.ranking import Ranker
from nlp.components.sections import Sectionizer
from nlp.components.sentences import SentenceSplitter
from nlp.components.state import Component, NoteState
from nlp.config import PipelineConfig
from nlp.errors import EmptyNote, NlpError, PipelineOrderError, UnsupportedCodeSystem, UnsupportedSetting
from nlp.resources import Resources, load_resources
from nlp.rules.codetree import CodeTree
from nlp.text import Normalizer, load_abbreviations
from nlp.types import SETTINGS, CandidateSource, CodingRequest, CodingResult, Mention, Scorer

log = logging.getLogger(__name__)
PIPELINE_VERSION = "nlp-0.1"


class NoteTooLong(NlpError):
    code = "note_too_long"


@dataclass(frozen=True)
class StartupReport:
    seconds: float
    phrase_count: int
    dictionary_cached: bool


class Pipeline:
    """Codes notes. Built once; `code` is safe to call from several threads at once."""

    def __init__(
        self,
        components: Sequence[Component],
        ranker: Ranker,
        candidate_source: CandidateSource,
        resources: Resources,
        config: PipelineConfig,
        scorer: Scorer | None,
        service_detector: Any | None,
        startup: StartupReport,
    ) -> None:
        self.components = list(components)
        self.ranker = ranker
        self.source = candidate_source
        self.resources = resources
        self.config = config
        self.scorer = scorer
        self.service_detector = service_detector
        self.startup = startup
        self.rules_version = resources.version
        self.model_version = f"{PIPELINE_VERSION}+{scorer.version}" if scorer is not None else PIPELINE_VERSION
        # spaCy docs and medSpaCy matchers are not documented as thread-safe; the guarded part is ~20 ms.
        self._lock = threading.Lock()
        self._version_cache: dict[tuple[str, Any], tuple[str, bool]] = {}

    def mentions(self, request: CodingRequest) -> list[Mention]:
        """The asserted mentions of a note (for review tools and tests)."""
        state = self._run(request)
        return [
            Mention(s.start, s.end, s.text, s.section, s.assertion, s.codes, s.source, s.sentence[0], s.sentence[1])
            for s in state.spans
        ]

    def _validate(self, request: CodingRequest) -> None:
        if not request.text or not request.text.strip():
            raise EmptyNote("the note text is empty; send the note's plain text")
        if len(request.text) > self.config.max_note_chars:
            raise NoteTooLong(
                f"note exceeds {self.config.max_note_chars} characters; split it or use the batch command")
        if request.setting not in SETTINGS:
            raise UnsupportedSetting(f"setting {request.setting!r} is not one of {', '.join(SETTINGS)}")
        unknown = [s for s in request.code_systems if s not in ("icd10cm", "cpt")]
        if unknown:
            raise UnsupportedCodeSystem(f"code system(s) {', '.join(unknown)} are not supported; use icd10cm, cpt")

    def _run(self, request: CodingRequest) -> NoteState:
        self._validate(request)
        state = NoteState(request=request, text=request.text)
        with self._lock:
            for component in self.components:
                component(state)
        return state

    def _codeset(self, system: str, request: CodingRequest) -> tuple[str, bool]:
        key = (system, request.date_of_service)
        if key not in self._version_cache:
            version = self.source.codeset_version(system, request.date_of_service)
            in_force = request.date_of_service is None or self.source.is_in_force(system, request.date_of_service)
            self._version_cache[key] = (version, in_force)
        return self._version_cache[key]

    def code(self, request: CodingRequest) -> CodingResult:
        """Code one note: ranked suggestions with evidence, what was left out and why, versions."""
        state = self._run(request)
        suggestions = []
        warnings = list(state.warnings)
        versions: dict[str, str] = {}
        if "icd10cm" in request.code_systems:
            suggestions = self.ranker.suggestions(state, request.max_suggestions)
        for system in request.code_systems:
            if system == "cpt" and self.service_detector is None:
                continue
            version, in_force = self._codeset(system, request)
            versions[system] = version
            if not in_force:
                warnings.append(
                    f"date of service {request.date_of_service} is outside the loaded {system} version "
                    f"{version}; codes may differ from those in force on that date")
        excluded = list(state.excluded)
        if "cpt" in request.code_systems and self.service_detector is not None:
            services, left_out = self.service_detector.detect(request.text, state.sections, request.setting)
            # One threshold for every system: a suggestion below it is not worth a coder's look.
            suggestions.extend(s for s in services if s.score >= self.ranker.threshold)
            excluded.extend(left_out)
        suggestions = [replace(s, rank=i + 1) for i, s in enumerate(suggestions[: request.max_suggestions])]
        return CodingResult(
            suggestions=tuple(suggestions),
            excluded=tuple(excluded),
            warnings=tuple(warnings),
            model_version=self.model_version,
            rules_version=self.rules_version,
            codeset_versions=versions,
        )


def _check_order(components: Sequence[Component]) -> None:
    have: set[str] = set()
    for c in components:
        missing = [r for r in c.requires if r not in have]
        if missing:
            raise PipelineOrderError(f"component {c.name} requires {', '.join(missing)}, which no earlier one assigns")
        have.update(c.assigns)


def _dictionary(
    candidate_source: CandidateSource, resources: Resources, normalizer: Normalizer, config: PipelineConfig,
    codes: Any,
) -> tuple[Dictionary, bool]:
    version = candidate_source.codeset_version("icd10cm")
    terms = list(candidate_source.terms("icd10cm"))
    key = hashlib.sha256(f"{version}|{resources.version}|{len(codes)}|{len(terms)}".encode()).hexdigest()[:16]
    path = config.cache_dir / f"dictionary-{key}.pkl" if config.cache_dir else None
    if path is not None and path.exists():
        with path.open("rb") as fh:
            automaton, count = pickle.load(fh)
        return Dictionary(automaton, normalizer, count), True
    dictionary = Dictionary.build(normalizer, codes, terms, resources.synonyms, resources.medications, resources.rules)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A name of this process's own: several workers may build the same cache at once; the last
        # atomic rename wins and every reader sees a whole file.
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        with tmp.open("wb") as fh:
            pickle.dump((dictionary._automaton, dictionary.phrase_count), fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
    return dictionary, False


def build_pipeline(
    config: PipelineConfig | None,
    candidate_source: CandidateSource,
    scorer: Scorer | None = None,
    service_detector: Any | None = None,
) -> Pipeline:
    """Build the pipeline once: resources, dictionary (cached under config.cache_dir), medSpaCy
    sectionizer and ConText, coding rules. `scorer` (the encoder) and `service_detector` (CPT) are optional."""
    import spacy

    t0 = time.perf_counter()
    config = config or PipelineConfig()
    resources = load_resources(config.resource_dir)
    normalizer = Normalizer(load_abbreviations(resources.abbreviations))
    codes = candidate_source.codes("icd10cm")
    tree = CodeTree(codes)
    dictionary, cached = _dictionary(candidate_source, resources, normalizer, config, codes)
    nlp = spacy.blank("en")
    components: list[Component] = [
        SentenceSplitter(),
        DocMaker(nlp),
        Sectionizer(nlp, resources.sections),
        DictionaryMentions(dictionary, resources.patterns),
    ]
    if scorer is not None:
        # The model's calibrated cosine floor (model.json), else the rules' default; a deployment's
        # encoder_min_cosine only moves the cut, an uncalibrated score still counts from the model's floor.
        floor = scorer.min_cosine or float(resources.rules["thresholds"]["encoder_min_cosine"])
        min_cos = config.encoder_min_cosine or floor
        billable = {c for c, info in codes.items() if info.is_billable}
        components.append(EncoderMentions(scorer, billable, min_cos, config.encoder_sections, floor=floor,
                                          skip_leading_words=resources.rules.get("encoder_skip_leading_words", ())))
    components.append(ContextAssertions(nlp, resources.context_rules_path))
    components.append(Coder(tree, resources.rules, resources.history_codes))
    _check_order(components)
    excludes1 = candidate_source.instructions("icd10cm", "excludes1")
    ranker = Ranker(tree, resources.rules, excludes1, config.threshold)
    startup = StartupReport(time.perf_counter() - t0, dictionary.phrase_count, cached)
    log.info("pipeline ready in %.1f s (%d phrases, cached=%s)", startup.seconds, startup.phrase_count, cached)
    return Pipeline(components, ranker, candidate_source, resources, config, scorer, service_detector, startup)
