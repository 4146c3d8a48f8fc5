"""What every command shares on its command line, and how every command
ends: option types that check a number's range as argparse reads it, the
options several commands take (model, weights, engine, gpu, a Ray cluster), and the one
runner, `run(prog, work, interrupted)`, that every command's main goes
through: a stop signal (once or repeated) ends it in one line with 130/143,
a bad input in one line `prog: error: ...` with exit status 1, never a
traceback.

Signals: Python turns SIGINT (Ctrl-C) into KeyboardInterrupt, which a
command can clean up after, but SIGTERM (what process managers, schedulers
and `kill` send) and SIGHUP end the process at once, leaving its temporary
files behind. Within `stop_on_signals()` all three raise Interrupted, so the
same cleanup runs (temporary outputs removed, every output file whole or
absent) and the command ends with one line and the shell's status for that
signal (128 + its number: 130 for SIGINT, 143 for SIGTERM).
"""
import argparse
import contextlib
import math
import os
import signal
import sys
import threading
import traceback

from common import caffe_setup

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class InputError(ValueError):
    """A bad input the user must act on (a file, an option, a model); the
    message (one line) names it and what to do. The commands' own errors
    derive from it, so that the runner reports them all alike."""


DEFAULT_MODEL = 'voc-fcn8s'  # what infer.py and export.py run without --model


# ------------------------------------------------------------------ option types
def number(kind=int, minimum=None, maximum=None, above=None):
    """An argparse type: a `kind` (int or float) number, finite, at least
    `minimum` / above `above` / at most `maximum` where given. A value out of
    range is argparse's one-line error naming the option, the range and the
    value."""
    noun = 'an integer' if kind is int else 'a number'

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{noun} expected, got {text!r}') from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f'a finite number expected, got {text!r}')
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f'must be {minimum} or more, got {text}')
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f'must be more than {above}, got {text}')
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f'must be {maximum} or less, got {text}')
        return value
    return parse


def gpu_id(text):
    """An argparse type for --gpu: a device id (0 or more) on a Caffe built
    with CUDA; on a CPU-only build Caffe would abort the process at
    set_mode_gpu, so the option is refused here, naming the way out."""
    gpu = number(int, minimum=0)(text)
    try:
        caffe_setup.check_device(gpu)
    except caffe_setup.DeviceError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return gpu


# ------------------------------------------------------------------ signals
class Interrupted(KeyboardInterrupt):
    """A signal asked the command to stop. A KeyboardInterrupt, so that code
    catching Ctrl-C catches SIGTERM alike and `except Exception` does not."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self):
        return signal.Signals(self.signum).name

    @property
    def exit_status(self):
        """What a shell reports for a process ended by this signal."""
        return 128 + self.signum


def _handled_signals():
    """The stop signals this process may handle: those not ignored (under
    nohup, or a shell's background job, a signal stays ignored)."""
    return [s for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]


def quit_while_starting(prog):
    """Until stop_on_signals() takes over: a stop signal ends the process at
    once with one line. For a command's start (importing Caffe takes
    seconds), before it has written anything; Ctrl-C there would otherwise
    print the traceback of whatever import it cut."""
    def handler(signum, frame):
        os.write(2, f'{prog}: interrupted ({signal.Signals(signum).name}) while starting; '
                    'nothing was written\n'.encode())
        os._exit(128 + signum)
    handler.while_starting = True  # stop_on_signals() does not put it back
    if threading.current_thread() is threading.main_thread():
        for s in _handled_signals():
            signal.signal(s, handler)


@contextlib.contextmanager
def stop_on_signals():
    """Within: the first stop signal raises Interrupted in the main thread;
    later ones are ignored while the command cleans up, reports and exits,
    so that a second Ctrl-C, or a process manager's repeated SIGTERM, cannot
    cut the cleanup short (SIGKILL still ends a cleanup that hangs). The
    previous handlers come back on leaving, unless a signal came (the
    process is then ending) or they were quit_while_starting()'s: the work
    is done then, and the signals are ignored while the process exits."""
    if threading.current_thread() is not threading.main_thread():
        yield []  # signal handlers belong to the main thread
        return
    received = []  # yielded: the signal that came, if one did

    def handler(signum, frame):
        if not received:
            received.append(signum)
            # Later ones do nothing. A Python handler for now: another
            # signal may be pending already (SIGTERM right after Ctrl-C),
            # and CPython reports one whose handler became SIG_IGN in the
            # meantime ("ignored due to race condition") with a traceback.
            for s in previous:
                signal.signal(s, _ignore)
            if _deferral['depth']:
                _deferral['held'] = signum  # raised where signals_deferred() ends
                return
            raise Interrupted(signum)
    previous = {s: signal.signal(s, handler) for s in _handled_signals()}
    try:
        yield received
    finally:
        for s, old in previous.items():
            if received or getattr(old, 'while_starting', False):
                # Ignored by the kernel while the process ends: the
                # interpreter's shutdown resets Python handlers to the
                # default (which would kill the process with a second signal
                # after its one line), but keeps ignored signals ignored.
                signal.signal(s, signal.SIG_IGN)
            else:
                signal.signal(s, old)


def _ignore(signum, frame):
    """A stop signal after the first: the command is stopping already."""


_deferral = {'depth': 0, 'held': None}  # signals_deferred()'s state (the main thread's)


@contextlib.contextmanager
def signals_deferred():
    """Within: a stop signal (under stop_on_signals) waits, and is raised as
    Interrupted when the outermost such block ends. For a few quick steps
    that must happen together or not at all, e.g. renaming one image's
    outputs into place."""
    _deferral['depth'] += 1
    try:
        yield
    finally:
        _deferral['depth'] -= 1
    if not _deferral['depth'] and _deferral['held'] is not None:
        signum, _deferral['held'] = _deferral['held'], None
        raise Interrupted(signum)


def report_interrupted(prog, interrupted, what):
    """One line `prog: interrupted (SIGNAL): what` on stderr for
    `interrupted` (an Interrupted or a plain KeyboardInterrupt); returns the
    signal's exit status."""
    signum = getattr(interrupted, 'signum', signal.SIGINT)
    print(f'{prog}: interrupted ({signal.Signals(signum).name}): {what}', file=sys.stderr)
    return 128 + signum


def exit_interrupted(prog, interrupted, what):
    """report_interrupted, then exit with the signal's status."""
    sys.exit(report_interrupted(prog, interrupted, what))


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, with usage errors in one line (`prog: error:
    what`, exit status 2) like every other error of the commands; the usage
    is one --help away."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message} (see --help)\n')


# ------------------------------------------------------------------ shared options
def add_model_options(parser, model_required=False, weights_help=None):
    """--model and --weights as every command that runs a model folder's net
    takes them."""
    if model_required:
        parser.add_argument('--model', required=True,
                            help='a model (e.g. voc-fcn8s) or a path to a model folder')
    else:
        parser.add_argument('--model', default=DEFAULT_MODEL,
                            help=f'a model (e.g. voc-fcn8s) or a path to a model folder '
                                 f'(default {DEFAULT_MODEL})')
    parser.add_argument('--weights', help=weights_help or "caffemodel (default: the model's "
                                                          'published weights, else its latest snapshot)')
    parser.add_argument('--allow-module', action='append', default=[], metavar='MODULE',
                        help='let a prototxt\'s Python layers import MODULE too (by default only '
                             "the project's data layers, under their own or the release's names)")


def add_engine_options(parser, engines, what='run the net', precisions=None):
    """--engine (one of `engines`, the rows of engines.ENGINES), --gpu, and
    with `precisions` ({engine: its precisions}, engines.PRECISIONS)
    --precision; check_engine_options refuses what does not go together."""
    parser.add_argument('--gpu', type=gpu_id, help='GPU id (default: CPU)')
    parser.add_argument('--engine', choices=list(engines), default='caffe',
                        help=f'{what} in Caffe (default) or another engine: '
                             f'{", ".join(e for e in engines if e != "caffe")} '
                             '(exported once to ONNX, cached beside the weights)')
    if precisions:
        choices = sorted({p for ps in precisions.values() for p in ps})
        parser.add_argument('--precision', choices=choices,
                            help=f'arithmetic of --engine {" or ".join(precisions)} (default: the '
                                 "CPU's fastest that keeps the labels: bf16 where the CPU computes in "
                                 'it, else f32; f32: exact)')


def check_engine_options(parser, args, precisions=None):
    """A usage error (parser.error, one line) for --gpu with an engine that
    runs on the CPU, or --precision with an engine that has no choice of
    arithmetic (`precisions`, as add_engine_options took it): refused, not
    ignored, so that no figure is read as another precision's."""
    if args.engine != 'caffe' and args.gpu is not None:
        parser.error(f'--engine {args.engine} runs on the CPU: not with --gpu')
    precision = getattr(args, 'precision', None)
    if precision is not None and args.engine not in (precisions or {}):
        parser.error(f'--precision {precision} is an option of --engine {" or ".join(precisions or {})}; '
                     f'--engine {args.engine} computes in f32 only')


def add_cluster_options(parser, what='the images', skip_done=False):
    """--ray ADDRESS (cluster.py spreads `what` over a Ray cluster's
    workers) and, with `skip_done`, --skip-done (common/finished.py)."""
    parser.add_argument('--ray', metavar='ADDRESS',
                        help=f"spread {what} over a Ray cluster's CPU workers: 'local' (a cluster "
                             "started on this machine), 'auto' (the one `ray start` or RAY_ADDRESS "
                             'gives) or host:port (docs/cluster.md)')
    if skip_done:
        parser.add_argument('--skip-done', action='store_true',
                            help=f'do only {what} whose outputs are missing or not whole '
                                 '(a rerun after an interruption; with or without --ray)')


def check_cluster_options(parser, args):
    """A usage error for --ray with --gpu: the cluster's workers run on CPUs."""
    if getattr(args, 'ray', None) and getattr(args, 'gpu', None) is not None:
        parser.error('--ray workers run on the CPU: not with --gpu')


# ------------------------------------------------------------------ the one way a command ends
def one_line(error):
    """An exception's message on one line; an OSError as 'file: reason'."""
    if isinstance(error, OSError) and error.strerror:
        names = ' -> '.join(str(f) for f in (error.filename, error.filename2) if f is not None)
        text = f'{names}: {error.strerror}' if names else error.strerror
    else:
        text = str(error) or type(error).__name__
    return ' '.join(text.split())


# Exceptions that are a bad input or a failing disk, not a bug: their
# message is the line. Anything else is reported in one line too, named as
# unexpected (DEBUG_VARIABLE=1 shows its traceback).
INPUT_ERRORS = (ValueError, OSError, LookupError, RuntimeError, MemoryError)
DEBUG_VARIABLE = 'FCN_TRACEBACK'


def run(prog, work, interrupted=None):
    """Run `work()` (a command's work, its arguments parsed) the one way
    every command ends: stop signals raise cli.Interrupted within
    (stop_on_signals); a KeyboardInterrupt ends in one line `prog:
    interrupted (SIGNAL): what` (`interrupted(exception)` says what was
    kept; default: nothing was written) and exit status 128 + the signal;
    any error in one line `prog: error: message` and exit status 1.
    Returns what `work` returns (an exit status, or None)."""
    try:
        with stop_on_signals() as received:  # a signal as it ends is caught below too
            try:
                return work()
            except KeyboardInterrupt as e:
                if received and not isinstance(e, Interrupted):
                    # The signal's Interrupted turned into a plain
                    # KeyboardInterrupt by a library that caught it (Ray's
                    # waits do): still the signal that came, with what the
                    # work set on it (done, total).
                    signalled = Interrupted(received[0])
                    signalled.__dict__.update(e.__dict__)
                    raise signalled from None
                raise
            except SystemExit:
                raise
            except Exception:
                if received:  # what the signal caused (an import it cut: an ImportError)
                    raise Interrupted(received[0]) from None
                raise
    except KeyboardInterrupt as e:
        what = interrupted(e) if interrupted else None
        exit_interrupted(prog, e, what or 'stopped; nothing was written')
    except INPUT_ERRORS as e:
        if os.environ.get(DEBUG_VARIABLE):
            traceback.print_exc()
        raise SystemExit(f'{prog}: error: {one_line(e)}') from None
    except Exception as e:  # noqa: BLE001 -- a bug still ends in one line
        if os.environ.get(DEBUG_VARIABLE):
            traceback.print_exc()
        raise SystemExit(f'{prog}: error: unexpected {type(e).__name__}: {one_line(e)} '
                         f'({DEBUG_VARIABLE}=1 shows where)') from None
