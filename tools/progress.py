"""Progress display for long CLI commands: one spinner line on stderr naming the current stage, and a
``✓`` line per finished stage. It is drawn only when both stdout and stderr are terminals, so piped or
logged output stays free of control codes and progress chatter."""
from __future__ import annotations

# local imports: commands import torch and the compiler only when they run, so `fxopt --help` and argument errors answer without them (startup cost)
import contextlib
import sys
import time
from typing import Iterator

from rich.console import Console
from rich.markup import escape


def interactive() -> bool:
    """True when stdout and stderr are both terminals (the only case in which progress is drawn)."""
    try:
        return sys.stdout.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


class Progress:
    """A stage-by-stage status display on stderr; every method is a no-op when ``enabled`` is false.

    Use :meth:`stage` as a context manager around each stage, :meth:`update` to change the spinner's text
    within one, :meth:`done` to print a finished line, and :meth:`close` (or ``with Progress(...)``) at the
    end so the spinner is gone before anything else is printed.
    """

    def __init__(self, enabled: bool | None = None, console: Console | None = None):
        """``enabled``: draw or not (default: :func:`interactive`); ``console``: where (default stderr)."""
        self.enabled = interactive() if enabled is None else enabled
        self.console = console or Console(file=sys.stderr, highlight=False)
        self._status = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, text: str) -> None:
        """Show ``text`` (plain, not markup) next to the spinner."""
        if not self.enabled:
            return
        message = escape(text) + "…"
        if self._status is None:
            self._status = self.console.status(message, spinner="dots")
            self._status.start()
        else:
            self._status.update(message)

    def done(self, text: str) -> None:
        """Print a finished-stage line ``✓ text`` above the spinner."""
        if self.enabled:
            self.console.print(f"[green]✓[/green] {escape(text)}")

    @contextlib.contextmanager
    def stage(self, text: str, done: str | None = None) -> Iterator[dict]:
        """Show ``text`` while the block runs; afterwards print ``done`` (default ``text``) with the time.

        Yields a dict; set ``info["done"]`` inside the block to change the finished line (e.g. to add
        counts known only at the end). Nothing is printed when the block raises."""
        info: dict = {"done": done or text}
        start = time.perf_counter()
        self.update(text)
        yield info
        info["seconds"] = time.perf_counter() - start
        from fxopt.tools.report import human_seconds

        self.done(f"{info['done']} ({human_seconds(info['seconds'])})")

    def close(self) -> None:
        """Remove the spinner (idempotent)."""
        if self._status is not None:
            self._status.stop()
            self._status = None
