"""Exit codes and one-sentence error text: what a user reads when something fails.

Exit codes (DESIGN.md; the Job controller and ``launch local`` act on them): 0 done; 1 bad input
or usage (do not retry); 75 (EX_TEMPFAIL) preempted, or a peer or the storage was lost after a
checkpoint (retry the whole group); 130 interrupted by Ctrl-C (``launch local``).
"""

from __future__ import annotations

import errno
import os
import re

EXIT_OK, EXIT_USAGE, EXIT_RETRY, EXIT_INTERRUPTED = 0, 1, 75, 130


class UsageError(ValueError):
    """A value the user must change (a flag, a path, a folder's contents): exit 1. The message
    is one sentence naming the value and what to do."""


class NotThereYet(Exception):
    """What a run waits for did not come in time: the tf.data service dispatcher, or the
    training run an evaluator follows. Exit 75: a rerun (a Job's retry) waits again."""


def first_line(error: BaseException | str, limit: int = 200) -> str:
    """The first line of an error's text, cut to ``limit`` characters (the type's name when
    it has no text): library errors run to pages, a person needs the line that says why."""
    text = str(error).strip()
    if not text:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    return text.splitlines()[0][:limit]


_FULL = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded"}


def disk_full(error: BaseException) -> str | None:
    """The sentence for a write that found its disk full or over quota, naming the folder it
    wrote into; None for any other error. TensorFlow says it as a ResourceExhaustedError
    ("<file>; No space left on device"), Python as an OSError (ENOSPC, EDQUOT)."""
    if isinstance(error, OSError) and error.errno in _FULL:
        reason, path = _FULL[error.errno], error.filename
    elif type(error).__name__ == "ResourceExhaustedError":
        text = str(error)
        reason = next((r for r in _FULL.values() if r in text), None)
        if reason is None:  # out of memory, not of disk
            return None
        found = re.search(r"(\S+); " + re.escape(reason), text)
        path = found.group(1) if found else None
    else:
        return None
    where = f" writing into {os.path.dirname(str(path))}" if path else ""
    return f"the disk is full ({reason}){where}: free space there, or write elsewhere."
