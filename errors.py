"""Exceptions that fxopt raises on purpose.

Every error a user can cause is an :class:`FxoptError` whose message is one line naming the file, node or
pass involved and what to do. The CLI prints that line and exits with :attr:`FxoptError.exit_code`.
"""


class FxoptError(Exception):
    """Base class for fxopt's deliberate errors; ``exit_code`` is what the CLI exits with."""

    exit_code = 2


class InputError(FxoptError):
    """Bad input from the user: a missing file, an unknown pass, a bad option, an untraceable model."""

    exit_code = 2


class VerificationError(FxoptError):
    """A pass changed the program's numerics or broke the graph; names the pass and the output."""

    exit_code = 1


class BackendError(FxoptError):
    """A backend could not lower or run a program (e.g. an op it does not support)."""

    exit_code = 2


def first_line(text: str) -> str:
    """The first non-blank line of ``text``, stripped (``""`` when there is none): how an error from a library
    becomes part of fxopt's one-line message."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")
