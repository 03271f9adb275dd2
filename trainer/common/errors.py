"""Exit codes and one-sentence error text: what a user reads when something fails.

Exit codes (DESIGN.md; the Job controller and ``launch local`` act on them): 0 done; 1 bad input
or usage (do not retry); 75 (EX_TEMPFAIL) preempted, or a peer or the storage was lost after a
checkpoint (retry the whole group); 130 interrupted by Ctrl-C (``launch local``).
"""

from __future__ import annotations

EXIT_OK, EXIT_USAGE, EXIT_RETRY, EXIT_INTERRUPTED = 0, 1, 75, 130


class UsageError(ValueError):
    """A value the user must change (a flag, a path, a folder's contents): exit 1. The message
    is one sentence naming the value and what to do."""


def first_line(error: BaseException | str, limit: int = 200) -> str:
    """The first line of an error's text, cut to ``limit`` characters (the type's name when
    it has no text): library errors run to pages, a person needs the line that says why."""
    text = str(error).strip()
    if not text:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    return text.splitlines()[0][:limit]
