"""Counting a long command's finished items so a person can follow it: on a
terminal, tqdm's bar on stderr (disable=None: a bar only where stderr is a
terminal); off a terminal (a log file, a batch job), a line on stdout every
EVERY_S seconds saying how many are done, how fast, and about how long is
left, and a closing line (stderr holds only a failure's or a signal's one
line). The one home of progress lines' pace and durations: infer.py and
score.py (in one process or on a cluster, cluster.py) count with Progress,
training.py's log lines use EVERY_S and duration.
"""
import sys
import time

from tqdm import tqdm

EVERY_S = 30.0  # off a terminal: a progress line at least this often


def duration(seconds):
    """'42 s', '12 min', '3.5 h'."""
    if seconds < 100:
        return f'{seconds:.0f} s'
    return f'{seconds / 60:.0f} min' if seconds < 6000 else f'{seconds / 3600:.1f} h'


class Progress:
    """Finished items of `total`, named `desc` (e.g. 'voc-fcn8s') and counted
    in `unit`s. `enabled=False` shows nothing (a caller's --quiet). `file`:
    where both bar and lines go (default: the bar on stderr, lines on stdout)."""

    def __init__(self, total, desc='', unit='image', every=EVERY_S, enabled=True, file=None):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.file = file or sys.stdout
        self.done = 0
        self.start = self.last_line = time.monotonic()
        self.bar = tqdm(total=total, desc=desc, unit=unit, file=file or sys.stderr,
                        disable=None if enabled else True)  # None: on a terminal only
        self.lines = enabled and self.bar.disable  # off a terminal: lines instead
        self.closed = False

    def rate(self):
        """Items per second since the start."""
        elapsed = time.monotonic() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self):
        """'desc: 12/100 images, 3.4 images/s, about 26 s left'."""
        rate = self.rate()
        left = f', about {duration((self.total - self.done) / rate)} left' if rate else ''
        prefix = f'{self.desc}: ' if self.desc else ''
        return f'{prefix}{self.done}/{self.total} {self.unit}s, {rate:.2f} {self.unit}s/s{left}'

    def update(self, n=1):
        self.done += n
        self.bar.update(n)
        self.tick()

    def tick(self):
        """Off a terminal: a progress line if EVERY_S has passed since the
        last (callers waiting on work call it now and then)."""
        now = time.monotonic()
        if self.lines and now - self.last_line >= self.every and self.done < self.total:
            self.last_line = now
            print(self.line(), file=self.file, flush=True)

    def write(self, text, file=None):
        """A line of its own that leaves the bar intact."""
        self.bar.write(text, file=file or sys.stdout)

    def close(self, finished=True):
        """End the bar; off a terminal, the closing line (items done, time,
        rate) if `finished` (an interrupted command says what it did in its
        own one line)."""
        if self.closed:
            return
        self.closed = True
        self.bar.close()
        if self.lines and self.total and finished:
            prefix = f'{self.desc}: ' if self.desc else ''
            print(f'{prefix}{self.done}/{self.total} {self.unit}s in '
                  f'{duration(time.monotonic() - self.start)} ({self.rate():.2f} {self.unit}s/s)',
                  file=self.file, flush=True)
