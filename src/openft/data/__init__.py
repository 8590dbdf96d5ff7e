"""Training-file formats, validation, token counting and statistics."""

from openft.data.codes import CODES, Severity
from openft.data.report import Distribution, LineError, OpenAITokenCount, Stats, ValidationReport
from openft.data.validate import MIN_EXAMPLES, validate_file, validate_lines, validate_stream

__all__ = [
    "CODES",
    "MIN_EXAMPLES",
    "Distribution",
    "LineError",
    "OpenAITokenCount",
    "Severity",
    "Stats",
    "ValidationReport",
    "validate_file",
    "validate_lines",
    "validate_stream",
]
