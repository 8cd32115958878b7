"""Errors raised by the NLP pipeline, each with a stable `code` the API and CLI map to responses."""

from __future__ import annotations


class NlpError(Exception):
    """Base of pipeline errors; `code` is stable, `message` says what to do."""

    code = "nlp_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EmptyNote(NlpError):
    code = "empty_text"


class UnsupportedSetting(NlpError):
    code = "unsupported_setting"


class UnsupportedCodeSystem(NlpError):
    code = "unsupported_code_system"


class ResourceError(NlpError):
    """A versioned resource file in nlp/resources is missing or malformed."""

    code = "resource_error"


class PipelineOrderError(NlpError):
    """A component requires something no earlier component assigns."""

    code = "pipeline_order"
