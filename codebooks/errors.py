"""Errors raised by the code-set layer, each with a stable code the API maps to an HTTP status."""

from __future__ import annotations


class CodebookError(Exception):
    code = "codebook_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownCodeSystem(CodebookError):
    code = "unknown_code_system"


class CodeNotFound(CodebookError):
    code = "code_not_found"


class CodeSetNotLoaded(CodebookError):
    code = "codeset_not_loaded"


class ImportFormatError(CodebookError):
    """A file handed to an importer does not have the layout the importer expects."""

    code = "import_format_error"
