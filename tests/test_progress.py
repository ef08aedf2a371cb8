"""Progress bars (minimf/progress.py): a log file gets a line a minute, a terminal a smooth bar."""
import io
import time

from minimf.progress import LOG_SECONDS, TERMINAL_SECONDS, progress_bar, redraw_seconds


class Terminal(io.StringIO):
    def isatty(self):
        return True


def redraws_over_an_hour(stream):
    """How many times a bar updated once a second for an hour draws itself into ``stream``."""
    clock = [time.time()]
    with progress_bar(stream=stream, total=3600, desc="runs") as bar:
        bar._time = lambda: clock[0]          # tqdm reads its clock here: an hour passes at once
        for _ in range(3600):
            clock[0] += 1.0
            bar.update()
    return stream.getvalue().count("\r")


def test_a_log_file_gets_a_line_a_minute():
    draws = redraws_over_an_hour(io.StringIO())
    print(f"{draws} draws for an hour of updates once a second into a file")
    assert draws <= 60 + 2          # the first, one a minute, the last


def test_the_monitor_thread_keeps_to_a_minute_too():
    """tqdm's monitor thread redraws a busy bar after ``maxinterval`` seconds whatever ``mininterval``
    says (a real-time effect, not seen with the fake clock above)."""
    with progress_bar(stream=io.StringIO(), total=1) as bar:
        assert bar.maxinterval >= LOG_SECONDS and bar.mininterval == LOG_SECONDS


def test_a_terminal_redraws_every_update():
    assert redraws_over_an_hour(Terminal()) >= 3600
    assert redraw_seconds(Terminal()) == TERMINAL_SECONDS
    assert redraw_seconds(object()) == LOG_SECONDS   # a stream without isatty is not a terminal


def test_a_disabled_bar_writes_nothing():
    stream = io.StringIO()
    with progress_bar(stream=stream, enabled=False, total=3) as bar:
        bar.update(3)
    assert stream.getvalue() == ""
