"""Exceptions whose message is one line a user can act on (the CLI prints just that)."""


class ItmOnnxError(Exception):
    """A runtime failure with a one-line explanation (CLI exit code 1)."""


class CheckpointError(ItmOnnxError):
    """A checkpoint that is missing, unreadable, or of another architecture or version."""


class ExportError(ItmOnnxError):
    """Export failed, or its parity check did not hold."""


class UsageError(ItmOnnxError):
    """Bad arguments or input the user must change (CLI exit code 2)."""
