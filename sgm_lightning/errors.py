"""Errors the ``sgm`` command reports as one line (no traceback), and the exit code of each.

* ``ValueError`` / ``FileNotFoundError``: bad input (a config value, an argument, a file): exit 2.
* ``OSError`` (disk full, read-only folder, permission): exit 2, the message names the path.
* :class:`RunFailed`: the run itself went wrong (a non-finite loss): its ``exit_code`` (1).
* :class:`Interrupted`: Ctrl-C, after the last state was saved: exit 130 (128 + SIGINT).

Kept free of torch and Lightning imports so the command line can catch them cheaply.
"""

from __future__ import annotations


class RunFailed(RuntimeError):
    """A run that cannot go on (e.g. the loss became NaN); the message says why and what to do."""

    exit_code = 1


class Interrupted(RuntimeError):
    """Training stopped by Ctrl-C after saving ``last.ckpt``."""

    exit_code = 130


def one_line(err: BaseException) -> str:
    """The message of ``err`` as one line. An error re-raised from a DataLoader worker carries the
    worker's whole traceback; its last line holds the original message."""
    text = str(err)
    if "Original Traceback" in text:
        last = [ln for ln in text.splitlines() if ln.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].isidentifier() else last
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    return " ".join(text.split("\n")).strip() or type(err).__name__
