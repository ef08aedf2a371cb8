"""Progress bars that suit a terminal and a log file alike.

Why: tqdm redraws a bar ten times a second. On a terminal each redraw overwrites the last; in a file
(a scheduler's log, ``nohup ... > run.log``) every redraw is kept, and a day-long experiment's log
grows by a line a second. So a bar redraws at most every ``TERMINAL_SECONDS`` on a terminal and every
``LOG_SECONDS`` into anything else; it always draws its last state when it closes.
"""
import sys

from tqdm import tqdm

TERMINAL_SECONDS = 0.1     # tqdm's own interval: smooth on a screen
LOG_SECONDS = 60.0         # a line a minute: a 12-hour run writes about 720


def redraw_seconds(stream):
    """The least time between two redraws of a bar written to ``stream``."""
    isatty = getattr(stream, "isatty", None)
    return TERMINAL_SECONDS if isatty is not None and isatty() else LOG_SECONDS


def progress_bar(*, enabled=True, stream=None, **options):
    """A tqdm bar on ``stream`` (the standard error by default), off when not ``enabled``; ``options``
    are tqdm's (total, desc, unit, ...). tqdm's monitor thread also redraws a busy bar every
    ``maxinterval`` seconds (10 by default), so that is held to the same least time."""
    stream = sys.stderr if stream is None else stream
    seconds = redraw_seconds(stream)
    return tqdm(file=stream, disable=not enabled, mininterval=seconds, maxinterval=max(seconds, 10.0),
                **options)
