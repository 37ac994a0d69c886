"""Errors raised by surfmap.

Every error is a :class:`SurfmapError` and also subclasses the matching built-in, so
``except ValueError`` keeps working for callers that do not know surfmap. Messages name the
file or argument, what was expected, what was found, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "SurfmapError",
    "FormatError",
    "MeshError",
    "MetricError",
    "MaskError",
    "TemplateError",
    "ConvergenceError",
    "InputFileNotFoundError",
    "ParameterError",
    "ArgumentTypeError",
    "BatchError",
]


class SurfmapError(Exception):
    """Root of every error raised by surfmap."""


class InputFileNotFoundError(SurfmapError, FileNotFoundError):
    """An input file does not exist."""


class FormatError(SurfmapError, ValueError):
    """A file is of an unknown or unsupported format, truncated or corrupt."""


class MeshError(SurfmapError, ValueError):
    """A mesh is malformed or does not have the topology an algorithm needs."""


class MetricError(SurfmapError, ValueError):
    """A per-vertex metric does not match its mesh or holds invalid values."""


class MaskError(SurfmapError, ValueError):
    """A vertex mask is empty, full, or does not match its mesh."""


class TemplateError(SurfmapError, ValueError):
    """An unknown template name or hemisphere, or a template's data is missing."""


class ParameterError(SurfmapError, ValueError):
    """An argument (a tolerance, an option name, a size) is out of its allowed range."""


class ArgumentTypeError(ParameterError, TypeError):
    """An argument of the wrong type (a ParameterError that is also a TypeError)."""


class BatchError(SurfmapError, ValueError):
    """A cohort source that cannot be listed (no subjects, unknown layout, bad table)."""


class ConvergenceError(SurfmapError, RuntimeError):
    """An iterative solver did not reach its tolerance."""
