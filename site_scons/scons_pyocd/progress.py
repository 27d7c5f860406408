"""Progress of an operation's phases, drawn for a person at a terminal or written for a log.

The phases that can take more than about a second each get a start and steps:
``connecting`` (finding the probe, opening the session, checking the chip),
``comparing`` (the chip's pages against the image), ``blank check`` (the flash outside
the image, before a mass erase), ``erasing``, ``programming``, ``verifying``.

:class:`Progress` is what the pyOCD layer (:mod:`.session`) calls: ``phase(name,
total)`` when a phase starts (``total`` steps of the phase's own kind, 0 when unknown),
``advance(n)`` after steps, ``check()`` between steps (Ctrl-C: raises
:class:`~scons_pyocd.errors.Interrupted`), ``done()`` when the phase ends. pyOCD's own
progress callbacks (a fraction from 0 to 1) are accepted too: the object is callable,
and ``phase(name)`` returns it. It draws through one of two views:

- :class:`BarView` (a terminal): one bar per phase on stderr with tqdm (elapsed time,
  rate, remaining time), erased when the phase ends, so the result line is all that stays.
  tqdm was chosen over pyOCD's own bar (no phase name, no time, leaves one line per
  phase), enlighten (takes over the bottom of the terminal, two more dependencies) and
  rich (a large dependency, a refresh thread): it is small, has no dependencies, and
  copes with terminal width and several bars.
- :class:`LineView` (a log, e.g. CI): one line per phase start, then one each time
  another 10 % is done or 5 s passed, so a long flash is never silent for long and a
  short one prints a few lines.

No pyOCD and no SCons here.
"""

import os
import sys
import time
from typing import Callable, Optional, TextIO

from .errors import Interrupted

#: Every phase name, in the order an operation goes through them.
PHASES = ("connecting", "comparing", "blank check", "erasing", "programming", "verifying")
#: A log line at least every this many percent of a phase...
LINE_PERCENT_STEP = 10
#: ...or every this many seconds, whichever comes first.
LINE_SECONDS = 5.0


class View:
    """How progress is shown; this one shows nothing."""

    def start(self, phase: str, total: int) -> None:
        pass

    def update(self, count: int, total: int) -> None:
        pass

    def finish(self) -> None:
        pass


class LineView(View):
    """Lines for a log: ``<label>: <phase> ...`` at the start of a phase, then
    ``<label>: <phase> 40% (8 of 20), 2.1 s`` at every :data:`LINE_PERCENT_STEP` % or
    :data:`LINE_SECONDS`. ``clock`` is for tests."""

    def __init__(self, label: str, stream: Optional[TextIO] = None, clock: Callable[[], float] = time.monotonic):
        self.label = label
        self.stream = stream
        self.clock = clock
        self.phase = ""
        self._started = self._last_time = 0.0
        self._last_percent = 0
        self._counted = False

    def _write(self, text: str) -> None:
        stream = self.stream or sys.stderr
        stream.write(f"{self.label}: {text}\n")
        stream.flush()

    def start(self, phase: str, total: int) -> None:
        self.phase = phase
        self._started = self._last_time = self.clock()
        self._last_percent = 0
        self._counted = total > 0
        self._write(f"{phase}" + (f" ({total} steps)" if total > 1 else "") + " ...")

    def update(self, count: int, total: int) -> None:
        now = self.clock()
        percent = min(100, count * 100 // total) if total else None
        due_percent = percent is not None and percent >= self._last_percent + LINE_PERCENT_STEP
        if not (due_percent or now - self._last_time >= LINE_SECONDS):
            return
        if percent is not None:
            self._last_percent = percent - percent % LINE_PERCENT_STEP if due_percent else self._last_percent
            what = f"{percent}%" + (f" ({count} of {total})" if self._counted else "")
        else:
            what = "still going"
        self._last_time = now
        self._write(f"{self.phase} {what}, {now - self._started:.1f} s")


class BarView(View):
    """A tqdm bar on stderr per phase, removed when the phase ends."""

    def __init__(self, label: str, stream: Optional[TextIO] = None):
        self.label = label
        self.stream = stream
        self._bar = None
        self._count = 0

    def start(self, phase: str, total: int) -> None:
        self.finish()
        from tqdm import tqdm
        known = total > 0
        stream = self.stream or sys.stderr
        sized = _columns(stream) != 0       # --progress=bar on a terminal of no width: 80 columns
        self._bar = tqdm(
            total=total if known else None, desc=f"{self.label}: {phase}", leave=False,
            file=stream, dynamic_ncols=sized, ncols=None if sized else 80, mininterval=0.1,
            bar_format=("{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]"
                        if known else "{desc} ... {elapsed}"))
        self._count = 0

    def update(self, count: int, total: int) -> None:
        if self._bar is not None and self._bar.total is None and total:     # pyOCD's fractions
            self._bar.total = total
            self._bar.bar_format = "{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]"
        if self._bar is not None and count > self._count:
            self._bar.update(count - self._count)
            self._count = count

    def finish(self) -> None:
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.close()


def _columns(stream: TextIO) -> Optional[int]:
    """The width the terminal ``stream`` writes to reports (None when it cannot be asked). A
    pseudo-terminal whose size was never set (e.g. ``script`` run without a terminal)
    reports 0 columns, and tqdm draws nothing at width 0:
    such a terminal gets lines."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return None


def view_for(mode: str, label: str, stream: Optional[TextIO] = None) -> View:
    """The view for ``PYOCD_PROGRESS``: auto (a bar when ``stream``, default stderr, is a
    terminal, lines otherwise), bar, lines or none."""
    stream_ = stream or sys.stderr
    if mode == "auto":
        try:
            mode = "bar" if stream_.isatty() and _columns(stream_) != 0 else "lines"
        except (AttributeError, ValueError):
            mode = "lines"
    if mode == "bar":
        return BarView(label, stream)
    if mode == "lines":
        return LineView(label, stream)
    return View()


#: Steps a phase is divided into when its total is unknown and pyOCD reports fractions.
_FRACTION_STEPS = 100


class Progress:
    """The progress of one operation: phases, steps, Ctrl-C (see the module docstring).

    ``should_stop`` is polled at every step; when it returns True, :class:`Interrupted`
    is raised (the operation stops between two steps).
    """

    def __init__(self, view: Optional[View] = None, should_stop: Optional[Callable[[], bool]] = None):
        self.view = view or View()
        self.should_stop = should_stop
        self.name = ""
        self.total = 0
        self.count = 0
        self._open = False

    # -- the executor's interface -----------------------------------------------------------
    def phase(self, name: str, total: int = 0) -> "Progress":
        """Start phase ``name`` of ``total`` steps (0: unknown). Returns self, which also takes
        pyOCD's progress callbacks (a fraction)."""
        if self._open and name == self.name and (total == self.total or
                                                  (total == 0 and self.total == _FRACTION_STEPS)):
            return self              # the same phase again (pyOCD restarts one per flash region)
        self.done()
        self.name, self.total, self.count = name, max(0, int(total)), 0
        self._open = True
        self.check()
        self.view.start(name, self.total)
        return self

    def check(self) -> None:
        """Raise Interrupted if the caller asked to stop (Ctrl-C)."""
        if self.should_stop is not None and self.should_stop():
            phase = self.name or "working"
            self.done()
            raise Interrupted(f"interrupted (Ctrl-C) while {phase}: the operation stopped between two "
                              "pages. The board is not recorded as flashed; run the command again to "
                              "finish.")

    def advance(self, n: int = 1) -> None:
        self.count += n
        self.check()
        if self._open:
            self.view.update(self.count, self.total)

    def __call__(self, fraction: float) -> None:
        """pyOCD's progress callback: ``fraction`` of the phase done."""
        if not self.total:
            self.total = _FRACTION_STEPS
        self.advance(max(0, int(min(1.0, fraction) * self.total) - self.count))

    def done(self) -> None:
        if self._open:
            self._open = False
            self.view.finish()
