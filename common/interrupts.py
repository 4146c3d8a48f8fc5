"""Ctrl-C (SIGINT) and SIGTERM, once or repeated (as process managers and
schedulers send them), without lost work or half-written files: a command
takes the first signal where stopping is safe, holds it while a file is
being written, and notes the later ones. Standard library only, so that a
command can install it before its heavy imports."""
import contextlib
import os
import signal
import sys
import threading

INTERRUPTS = (signal.SIGINT, signal.SIGTERM)

class Signals:
    """A command's handling of SIGINT and SIGTERM: the first one raises
    KeyboardInterrupt where nothing is being written (building nets, a
    step, scoring); inside `held()` it waits until the block ends. Once one
    has been raised, or the work is done (`finish`), later ones are only
    noted: the command finishes what it writes and says so, whatever comes
    next."""

    def __init__(self):
        self.received = None  # the first signal's number
        self.done = False     # raised already, or nothing left to lose
        self.previous = {}

    def install(self):
        self.received, self.done = None, False
        self.previous = {s: signal.signal(s, self._handle) for s in INTERRUPTS}

    def restore(self):
        """The handlers from before `install`, for callers in the same
        process. In a command's own process (stop_while_loading's before)
        signals are ignored from now on: it is ending, and Python would
        reset a handler of its own to the default as it shuts down, ending
        the process by the signal after the command's last line."""
        for signum, handler in self.previous.items():
            signal.signal(signum, signal.SIG_IGN if handler is _loading_interrupted else handler)
        self.previous = {}

    def _handle(self, signum, frame):
        if self.received is None:
            self.received = signum
        if not self.done:
            self.done = True
            raise KeyboardInterrupt

    def finish(self):
        """The work is complete: signals from now on change nothing."""
        self.done = True

    @property
    def exit_code(self):
        """128 + the signal's number, as a shell reports a process ended by
        it: 130 for Ctrl-C, 143 for SIGTERM."""
        return 128 + (self.received or signal.SIGINT)


@contextlib.contextmanager
def held(deliver=True):
    """Hold SIGINT and SIGTERM while the block runs, so that what it writes
    is whole; one that came meanwhile is delivered when the block ends
    (`deliver`), or dropped (when the command is ending anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals go to the main thread only
        return
    came = []
    previous = {s: signal.signal(s, lambda signum, frame: came.append(signum)) for s in INTERRUPTS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if came and deliver:
        signal.raise_signal(came[0])


def stop_while_loading():
    """Until the command installs its Signals: Ctrl-C or SIGTERM ends the
    process at once, with one line and the status a shell gives a process
    the signal ended (128 + its number), instead of a traceback from the
    middle of an import. Nothing is written while modules load. Called
    first thing by a command's script (a model folder's solve.py)."""
    signal.signal(signal.SIGINT, _loading_interrupted)
    signal.signal(signal.SIGTERM, _loading_interrupted)


def _loading_interrupted(signum, frame):
    print(f'\n{os.path.basename(sys.argv[0])}: interrupted while loading; nothing was written',
          file=sys.stderr, flush=True)
    os._exit(128 + signum)
