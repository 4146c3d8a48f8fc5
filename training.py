"""Train a model folder: the one training loop every <model>/solve.py uses.

    cd voc-fcn8s && python solve.py [--gpu 0[,1...] | --cpu] [--weights W]
        [--max-iter N] [--test-interval N] [--resume [SOLVERSTATE]]

Defaults reproduce the reference release: start from the previous stage's
trained weights (or the convolutionalized ILSVRC net), fill every upsampling
layer with bilinear weights, train with the folder's solver.prototxt, and
every test interval score the val split and snapshot.

Snapshots go to <folder>/snapshot/ (train_iter_N.caffemodel/.solverstate);
`snapshot/latest.json` names the newest *complete* pair and is replaced
atomically after both files are on disk, so a crash mid-write never leaves a
corrupt "latest". `--resume` restarts from it at its iteration; the data
order and Caffe's random state are re-derived from the iteration, so a
resumed run ends with the same weights as an uninterrupted one.
Progress: snapshot/log.jsonl (one JSON object per line) and
snapshot/curves.png (loss and mean IU against iteration); on stdout a
header, the scorings in percent, a closing line naming the weights, and
where it is not a terminal progress lines instead of a bar (Log).
"""
import argparse
import contextlib
import errno
import fcntl
import io
import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
from tqdm import tqdm

from common import caffe_setup

caffe_setup.quiet_caffe_log()  # before nets imports caffe

import caffe  # noqa: E402
from google.protobuf import text_format  # noqa: E402

import layers  # noqa: E402
import loading  # noqa: E402
import nets  # noqa: E402
import report  # noqa: E402
import score  # noqa: E402
import surgery  # noqa: E402
from common import cli, locations, outputs, prototxts, weightfiles  # noqa: E402
from common.catalog import ILSVRC_NETS  # noqa: E402
from common.locations import SNAPSHOT_DIR  # noqa: E402
from common.metrics import METRICS  # noqa: E402
from common.snapshots import Snapshots, SnapshotError  # noqa: E402
from nets import SEED  # noqa: E402


class TrainingError(cli.InputError):
    """A problem the user must act on; the message says what to do."""


class Diverged(TrainingError):
    pass


class Interrupted(cli.Interrupted):
    """Training stopped by a stop signal (Ctrl-C, SIGTERM, SIGHUP: number
    `signum`) after snapshotting `entry`; `what` says so."""

    def __init__(self, entry, signum):
        super().__init__(signum)
        self.entry = entry
        self.what = kept(entry)


def kept(entry):
    """What an interrupted run says it kept: the snapshot `entry`."""
    return f'at iteration {entry["iteration"]}: snapshot {entry["solverstate"]}; continue with --resume'


def load_model(folder):
    """The Model of a folder's net.py, loaded the one way (loading.model:
    a mistake in net.py named by file and line)."""
    return loading.model(folder)


# ------------------------------------------------------------------ weights
def init_folder(model, name):
    """The folder of model `name` that `model` starts from: its sibling where
    one exists (a user's own models laid out side by side), else the
    repository's model folder of that name."""
    sibling = os.path.join(os.path.dirname(model.folder), name)
    return sibling if os.path.isfile(os.path.join(sibling, 'net.py')) else locations.model_dir(name)


def trained_weights(folder):
    """The trained weights of a model folder, the latest complete snapshot
    first (weightfiles.resolve)."""
    try:  # the log's header names them
        return weightfiles.resolve(folder, prefer='snapshot', announce=False)
    except (weightfiles.WeightsError, SnapshotError) as e:
        raise TrainingError(str(e)) from None


def start_weights(model):
    """{stream suffix: caffemodel path} the model starts from (reference
    defaults): ILSVRC nets for first stages, the previous stage otherwise,
    the single-modality nets for late fusion."""
    if not model.init:
        return {}
    paths = []
    for source in model.init:
        if source in ILSVRC_NETS:
            path = locations.ilsvrc_weights(source)
            if not os.path.isfile(path):
                raise TrainingError(
                    f'missing start weights {path}: the ILSVRC {source} net, convolutionalized. '
                    f'Get it with `python -m fetch weights {source}` (which runs '
                    f'`python surgery.py convert --net {source} ...` where it has fc layers).')
            paths.append(path)
        else:
            paths.append(trained_weights(init_folder(model, source)))
    if len(paths) == 1:
        return {'': paths[0]}
    return dict(zip(model.stream_suffixes, paths))


def initialize(solver, model, weights):
    """Load start weights into the solver's net and fill upsampling layers."""
    net = solver.net
    upsampling = [k for k in net.params if k.startswith('upscore')]
    for suffix, path in weights.items():
        if not os.path.isfile(path):
            raise TrainingError(f'start weights {path} do not exist')
        source_proto = weightfiles.net_for_weights(path)
        try:
            if not suffix and model.source.fusion != 'early':
                weightfiles.load_weights(net, path, _fresh_layers(net, source_proto, upsampling))
                continue
            # Streams (late fusion) and the 4-channel early-fusion conv need the
            # source weights in a net of their own.
            if not (source_proto and os.path.isfile(source_proto)):
                raise TrainingError(f'start weights {path}: no net definition {source_proto} '
                                    'to read them with')
            source_net = caffe.Net(source_proto, caffe.TEST)
            weightfiles.load_weights(source_net, path, net_name=source_proto)
        except weightfiles.CheckError as e:
            raise TrainingError(f'start weights: {e}') from e
        if suffix:
            surgery.transplant(net, source_net, suffix=suffix)
        else:
            surgery.transplant(net, source_net)
            surgery.init_early_fusion(net, source_net)
    surgery.interp(net, upsampling)


def _fresh_layers(net, source_proto, upsampling):
    """The learned layers start weights may leave alone: the upsampling
    layers (interp fills them) and the layers the start net lacks, which
    begin from their fillers (a new score layer); where the start net's
    definition is unknown, every layer (only the shapes are checked)."""
    if not (source_proto and os.path.isfile(source_proto)):
        return set(net.params)
    start = prototxts.layer_names(source_proto)
    return set(upsampling) | {k for k in net.params if k not in start}


# --------------------------------------------------------------- progress
class Progress:
    """log.jsonl (one JSON object per line) and curves.png, kept current.
    Nothing is written before the first record (a failed start leaves no
    files)."""

    def __init__(self, folder, resume_iter=None):
        self.folder = folder
        self.log_path = os.path.join(folder, 'log.jsonl')
        self.plot_path = os.path.join(folder, 'curves.png')
        self.records = []
        if resume_iter is not None and os.path.exists(self.log_path):
            try:
                with open(self.log_path) as f:  # drop what came after the snapshot
                    self.records = [r for r in map(json.loads, f) if r['iteration'] <= resume_iter]
            except (ValueError, KeyError, TypeError) as e:
                raise TrainingError(f'{os.path.abspath(self.log_path)}: not a training log '
                                    f'({e}); move it away to start a new one') from None

    def add(self, record):
        self.records.append(record)
        os.makedirs(self.folder, exist_ok=True)
        outputs.write_atomically(self.log_path, ''.join(json.dumps(r) + '\n' for r in self.records),
                         what='training log')

    def plot(self, title):
        import matplotlib  # deferred: a second to load, and only plotting needs it
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        losses = [(r['iteration'], r['loss']) for r in self.records if 'loss' in r]
        ious = [(r['iteration'], m['mean_iu']) for r in self.records
                for m in r.get('metrics', {}).values() if m['mean_iu'] is not None]
        fig, ax = plt.subplots(figsize=(7, 4))
        if losses:
            ax.plot(*zip(*losses), color='tab:blue', label='training loss')
        ax.set_xlabel('iteration')
        ax.set_ylabel('loss', color='tab:blue')
        if ious:
            ax2 = ax.twinx()
            ax2.plot(*zip(*ious), 'o-', color='tab:red', label='mean IU')
            ax2.set_ylabel('val mean IU', color='tab:red')
        ax.set_title(title)
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format='png')
        plt.close(fig)
        outputs.write_atomically(self.plot_path, png.getvalue(), what='plot', mode='wb')


# ------------------------------------------------------------------ solver
def make_solver(model, test_interval, max_iter):
    """The solver of the folder's solver.prototxt (SGD unless it names
    another type), checked first (prototxts.read_solver); Caffe's own snapshots are
    turned off because this loop writes them (atomically)."""
    param = prototxts.read_solver(os.path.abspath('solver.prototxt'))
    param.snapshot = 0
    param.max_iter = max_iter
    param.random_seed = SEED
    # Caffe takes a solver from a file only: a folder of its own, outside the
    # model folder, which nothing leaves behind there even if Caffe aborts.
    # The net paths stay relative to the current directory, the model folder.
    with tempfile.TemporaryDirectory(prefix='fcn-solver-') as tmp:
        path = os.path.join(tmp, 'solver.prototxt')
        with open(path, 'w') as f:
            f.write(text_format.MessageToString(param))
        solver = caffe.get_solver(path)
    return solver, param  # pycaffe exposes few of the solver's settings


def data_layers(net):
    """The Python layers whose draws follow the examples served: the data
    layers, and loss sampling's (anything with seek(); data layers first,
    as nets list them)."""
    return [layer for layer in net.layers if hasattr(layer, 'seek')]


def position_data(solver, param, iteration):
    """Put the training data where an uninterrupted run is at `iteration`
    (each data layer's draws depend on the examples served so far only)."""
    for layer in data_layers(solver.net):
        layer.seek(iteration * param.iter_size)


def seed_step(iteration):
    """Derive Caffe's random state (dropout) from the iteration about to
    run, so that a run resumed from a snapshot at any iteration draws what
    an uninterrupted one does."""
    caffe.set_random_seed(SEED + iteration)


def val_examples(solver, limit=None):
    """The val split's examples, in the test net's data layer's order."""
    layers = data_layers(solver.test_nets[0]) if solver.test_nets else []
    examples = list(layers[0].examples) if layers else []
    return examples[:limit] if limit else examples


# What each scoring logs per head: the paper's metrics and the mean loss.
SCALAR_METRICS = tuple(key for key, _ in METRICS) + ('loss',)


def evaluate(solver, model, examples, details=None):
    """Score every head on the val split: {head name: scalar metrics}.
    `details`, a dict, receives {score blob: (metrics with 'hist' and
    'excluded', report.ImageScores)} for the report."""
    for layer in data_layers(solver.test_nets[0]):
        layer.seek(0)  # every scoring sees the same images
    split = model.source.val_split
    results = {}
    for head in model.source.heads:
        collector = None
        if details is not None:
            collector = report.Collector()
        # The reference's '>>>' lines print fractions; the log has Log.scores' percent.
        with contextlib.redirect_stdout(io.StringIO()):
            result = score.seg_tests(solver, False, examples, layer=head.score, gt=head.label,
                                     loss=head.loss, class_names=head.classes,
                                     exclude=head.excluded(split), on_image=collector)
        if collector is not None:
            details[head.score] = ({**result, 'excluded': list(head.excluded(split))},
                                   collector.outputs[0] if collector.outputs else None)
        results[head.name] = {
            k: (None if not math.isfinite(result[k]) else float(result[k])) for k in SCALAR_METRICS}
    return results


def write_report(model, entry, details, images, progress):
    """The report of the latest scoring (report.py) into the progress
    folder, beside curves.png, which it shows: `details` as evaluate fills
    it, for the snapshot `entry` just written (its weights and sha256)."""
    scoring = dict(model=model.name, weights=entry['caffemodel'], split=model.source.val_split,
                   images=images, iteration=entry['iteration'],
                   heads={blob: result for blob, (result, _) in details.items()})
    try:
        report.write(progress.folder, scoring, {blob: i for blob, (_, i) in details.items()},
                     sha256=entry['caffemodel_sha256'], curves=progress.plot_path)
    except OSError as e:
        raise TrainingError(f'cannot write the report into {os.path.abspath(progress.folder)}: '
                            f'{e.strerror or e}') from None
    # outputs.OutputError (a failed atomic write) names the file itself


def resume_point(snapshots, resume):
    """The solverstate to resume from (`resume` True: the latest complete
    snapshot; or a path), its files verified against their manifest."""
    if resume is True:
        entry = snapshots.latest(full=True)
        if entry is None:
            raise TrainingError(f'no complete snapshot in {snapshots.folder}: '
                                'start without --resume')
        return entry['solverstate']
    state = os.path.abspath(resume)
    if not os.path.isfile(state):
        raise TrainingError(f'--resume {state}: no such solverstate')
    entry = snapshots.for_solverstate(state)
    if entry is not None:
        if os.path.abspath(entry['solverstate']) != state:
            raise TrainingError(f'--resume {state}: not a solverstate; resume with the '
                                f"snapshot's solverstate {entry['solverstate']}")
        snapshots.check(entry)
    return state


def start(solver, param, model, snapshots, weights=None, resume=None):
    """Load where training starts: a snapshot (`resume` True: the latest
    complete one; or a solverstate path), else the start weights (`weights`,
    or the model's reference start) with the upsampling layers filled; then
    put the data where that iteration is. Returns where it started, in words
    (the log's header)."""
    if resume:
        state = resume_point(snapshots, resume)
        try:
            weightfiles.check_solverstate(state, solver.net, param.type)
        except weightfiles.CheckError as e:
            raise TrainingError(f'cannot resume: {e}') from e
        solver.restore(state)
        where = f'resumes from {os.path.abspath(state)} at iteration {solver.iter}'
    else:
        paths = {'': weights} if weights else start_weights(model)
        initialize(solver, model, paths)
        where = 'starts from ' + (', '.join(os.path.abspath(p) for p in paths.values()) or
                                  f'scratch ({model.trunk_filler or "default"} fillers)')
    position_data(solver, param, solver.iter)
    return where


def say(line):
    """A line of the log on stdout, above a progress bar if one is shown."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def duration(seconds):
    """'42 s', '12 min', '3.5 h'."""
    if seconds < 100:
        return f'{seconds:.0f} s'
    return f'{seconds / 60:.0f} min' if seconds < 6000 else f'{seconds / 3600:.1f} h'


def learning_rate(param, iteration):
    """The rate Caffe's SGD-family solvers use at `iteration` under the
    solver's lr_policy (None for a policy not computed here)."""
    base, policy = param.base_lr, param.lr_policy
    if policy == 'fixed':
        return base
    if policy == 'poly':
        return base * (1 - iteration / param.max_iter) ** param.power
    if policy == 'step':
        return base * param.gamma ** (iteration // param.stepsize)
    if policy == 'exp':
        return base * param.gamma ** iteration
    if policy == 'inv':
        return base * (1 + param.gamma * iteration) ** -param.power
    return None


# Where no bar is shown, a progress line at least every PROGRESS_SECONDS,
# and every `display` iterations (or a tenth of the test interval, if more)
# if that comes first.
PROGRESS_SECONDS = 30
PROGRESS_PER_INTERVAL = 10


class Log:
    """What training prints for a person reading it afterwards: progress
    lines (iteration, loss, learning rate, speed, time left) where no bar is
    shown (`lines`), and the scorings in percent, as score.py prints them."""

    def __init__(self, model, param, max_iter, test_interval, start_iter, quiet, lines):
        self.model, self.param, self.max_iter = model, param, max_iter
        self.quiet, self.lines = quiet, lines
        self.every = max(param.display or 1, test_interval // PROGRESS_PER_INTERVAL)
        self.start_iter = self.last_iter = start_iter
        self.t0 = self.last_time = time.time()
        self.losses = []

    def step(self, iteration, loss):
        self.losses.append(loss)
        now = time.time()
        if self.quiet or not self.lines or not (
                iteration - self.last_iter >= self.every or now - self.last_time >= PROGRESS_SECONDS):
            return
        rate = (iteration - self.start_iter) / max(now - self.t0, 1e-9)
        lr = learning_rate(self.param, iteration)
        say(f'{self.model.name}: iteration {iteration}/{self.max_iter}, loss {np.mean(self.losses):.4g}'
            + (f', lr {lr:.3g}' if lr is not None else '')
            + f', {rate:.3g} it/s, {duration((self.max_iter - iteration) / rate) if rate else "?"} left')
        self.last_iter, self.last_time, self.losses = iteration, now, []

    def scoring(self, iteration, images):
        """Where no bar is shown: that a scoring begins (it may take long)."""
        if not self.quiet and self.lines:
            say(f'{self.model.name}: iteration {iteration}: scoring {images} '
                f'{self.model.source.val_split} images')

    def scores(self, iteration, metrics, images):
        """One line per head: the paper's metrics in percent, and the loss."""
        if self.quiet:
            return
        for head, result in metrics.items():
            values = ', '.join(f'{title} {_percent(result[key])}' for key, title in METRICS)
            loss = result.get('loss')
            say(f'{self.model.name}: iteration {iteration}, {head} on {images} '
                f'{self.model.source.val_split} images (%): {values}'
                + (f', loss {loss:.4g}' if loss is not None else ''))


def _percent(fraction):
    return '-' if fraction is None else f'{100 * fraction:.2f}'


def step_loop(solver, param, model, snapshots, progress, examples, max_iter, test_interval,
              leader=True, quiet=False):
    """Step the solver to `max_iter`: every `test_interval` iterations the
    leader scores the val examples, logs and snapshots. A stop signal
    (cli.stop_on_signals; plain Ctrl-C alike) snapshots the work done so
    far, and Interrupted names it; while a snapshot and its log are being
    written a signal waits (cli.signals_deferred)."""
    losses = [h.loss for h in model.source.heads]
    t0 = time.time()
    # The bar only on a terminal (None); elsewhere Log's progress lines.
    bar = tqdm(total=max_iter, initial=solver.iter, desc=model.name, unit='it',
               disable=True if quiet or not leader else None, dynamic_ncols=True)
    log = Log(model, param, max_iter, test_interval, solver.iter,
              quiet=quiet or not leader, lines=not sys.stdout.isatty())
    window = []
    try:
        while solver.iter < max_iter:
            stop = min(max_iter, (solver.iter // test_interval + 1) * test_interval)
            while solver.iter < stop:
                seed_step(solver.iter)
                solver.step(1)
                loss = sum(float(solver.net.blobs[b].data) for b in losses)
                if not math.isfinite(loss):
                    last = snapshots.latest(full=True)
                    kept = f'the last good snapshot is {last["caffemodel"]} (iteration {last["iteration"]})' \
                        if last else 'no snapshot was written yet'
                    raise Diverged(f'loss is {loss} at iteration {solver.iter}: training stopped; {kept}. '
                                   'Lower base_lr in solver.prototxt (or check the data) and --resume.')
                window.append(loss)
                bar.update(1)
                bar.set_postfix(loss=f'{loss:.4g}')
                log.step(solver.iter, loss)
                if param.display and solver.iter % param.display == 0:
                    with cli.signals_deferred():
                        progress.add(dict(iteration=solver.iter, loss=float(np.mean(window)),
                                          seconds=round(time.time() - t0, 3)))
                    window = []
            if not leader:
                continue
            # Log before snapshotting: a kill in between resumes from the
            # previous snapshot and drops this record with the work.
            details = {}
            if examples:
                log.scoring(solver.iter, len(examples))
            metrics = evaluate(solver, model, examples, details) if examples else {}
            log.scores(solver.iter, metrics, len(examples))
            with cli.signals_deferred():  # the snapshot, its log and report whole, then a signal
                progress.add(dict(iteration=solver.iter, loss=float(np.mean(window)) if window else None,
                                  metrics=metrics, seconds=round(time.time() - t0, 3)))
                entry = snapshots.save(solver, param.type)
                window = []
                progress.plot(model.name)
                if details:
                    write_report(model, entry, details, len(examples), progress)
    except KeyboardInterrupt as e:  # cli.Interrupted too
        if not leader:
            raise
        # Keep the work done so far (under stop_on_signals later signals are
        # ignored meanwhile): this iteration's snapshot if it is whole
        # already, else a new one.
        bar.close()
        entry = snapshots.current(solver.iter) or snapshots.save(solver, param.type)
        raise Interrupted(entry, getattr(e, 'signum', signal.SIGINT)) from None
    finally:
        bar.close()


def train(folder, weights=None, max_iter=None, test_interval=None, resume=None, gpu=None,
          val_limit=None, quiet=False, nccl=None):
    """Train the model in `folder` on GPU `gpu` (None: the CPU). Returns the
    Progress records. With `nccl` = (uid, rank, solver count), this process
    is one of Caffe's data-parallel solvers (see train_parallel): only rank
    0 scores, snapshots and logs. Paths given relative to the current
    directory stay so; the current directory is restored on return."""
    model = nets.load(folder)
    weights = weights and os.path.abspath(weights)
    resume = os.path.abspath(resume) if isinstance(resume, str) else resume
    caffe_setup.use_device(gpu)
    if nccl is not None:
        caffe.set_solver_count(nccl[2])
        caffe.set_solver_rank(nccl[1])
        caffe.set_multiprocess(True)
    test_interval = test_interval or model.source.test_interval
    max_iter = max_iter or model.training_length
    with locations.working_dir(model.folder):  # prototxt paths are relative to the folder
        solver, param = make_solver(model, test_interval, max_iter)
        snapshots = Snapshots(SNAPSHOT_DIR, param.snapshot_prefix)
        where = start(solver, param, model, snapshots, weights, resume)
        if solver.iter > max_iter:
            raise TrainingError(f'--max-iter {max_iter}: training resumes at iteration {solver.iter}, '
                                'past it; give a larger --max-iter')
        if nccl is not None:  # Caffe's data parallelism: share weights, sum gradients
            reducer = caffe.NCCL(solver, nccl[0])
            reducer.bcast()
            solver.add_callback(reducer)
            if solver.param.layer_wise_reduce:
                solver.net.after_backward(reducer)
        progress = Progress(SNAPSHOT_DIR, resume_iter=solver.iter if resume else None)
        leader = nccl is None or nccl[1] == 0
        examples = val_examples(solver, val_limit)
        if leader and not quiet:
            say(f'{model.name}: FCN-{model.stride}s, {model.trunk} x{model.trunk_width:g}, '
                f'{sum(h.num_classes for h in model.source.heads)} classes; {where}; '
                f'{"CPU" if gpu is None else f"GPU {gpu}"}; iterations {solver.iter} to '
                f'{max_iter}, scoring {len(examples)} {model.source.val_split} images and '
                f'snapshotting every {test_interval}; log {os.path.abspath(progress.log_path)}')
        started = time.time()
        step_loop(solver, param, model, snapshots, progress, examples,
                  max_iter, test_interval, leader=leader, quiet=quiet)
        latest = snapshots.latest()
        if leader and not quiet and latest:
            report_path = os.path.join(progress.folder, 'report.html')
            say(f'{model.name}: done at iteration {latest["iteration"]} in '
                f'{duration(time.time() - started)}: weights {os.path.abspath(latest["caffemodel"])}'
                + (f'; report {os.path.abspath(report_path)}' if os.path.exists(report_path) else ''))
    return progress.records


def _parallel_worker(folder, gpus, rank, uid, args):
    with cli.stop_on_signals():
        try:
            train(folder, weights=args.weights, max_iter=args.max_iter,
                  test_interval=args.test_interval, resume=args.resume, gpu=gpus[rank],
                  val_limit=args.val_limit, nccl=(uid, rank, len(gpus)))
        except TrainingError as e:
            sys.exit(f'solve.py (GPU {gpus[rank]}): {e}')
        except Interrupted as e:
            cli.exit_interrupted('solve.py', e, e.what)
        except KeyboardInterrupt as e:
            sys.exit(128 + getattr(e, 'signum', signal.SIGINT))


def train_parallel(folder, gpus, args):
    """Caffe's own multi-GPU training (as its python/train.py): one process
    per GPU, NCCL summing gradients; each Python data layer reads its share
    of the sequence (layers.py: every solver_count-th example). A signal to
    this process goes on to the workers (a terminal's Ctrl-C reaches them
    all; a scheduler's SIGTERM only this one); the first one's snapshot
    line is the message, and this process exits as it did."""
    uid = caffe.NCCL.new_uid()
    context = multiprocessing.get_context('spawn')  # a fresh CUDA context per process
    procs = [context.Process(target=_parallel_worker, args=(folder, gpus, rank, uid, args))
             for rank in range(len(gpus))]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt as e:  # cli.Interrupted too
        signum = getattr(e, 'signum', signal.SIGINT)
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signum)
        for p in procs:
            p.join()
        raise SystemExit(128 + signum) from None
    failed = [gpus[i] for i, p in enumerate(procs) if p.exitcode]
    if failed:
        raise TrainingError(f'training failed on GPU(s) {failed}')


# Caffe counts iterations in 32-bit integers.
MAX_ITERATIONS = 2**31 - 1


def parse_args(argv):
    parser = cli.ArgumentParser(prog='solve.py',
                                description='Train this model folder (FCN reference settings).')
    device = parser.add_mutually_exclusive_group()
    device.add_argument('--gpu', type=gpu_ids,
                        help='GPU id(s), e.g. 0 or 0,1 (several: NCCL data parallelism)')
    device.add_argument('--cpu', action='store_true', help='train on the CPU (default without --gpu)')
    parser.add_argument('--weights', help='start weights (default: the reference start for this model)')
    iterations = cli.number(int, minimum=1, maximum=MAX_ITERATIONS)
    parser.add_argument('--max-iter', type=iterations,
                        help='stop at this iteration (default: solver max_iter)')
    parser.add_argument('--test-interval', type=iterations,
                        help='iterations between scoring and snapshots (default: dataset reference)')
    parser.add_argument('--resume', nargs='?', const=True, metavar='SOLVERSTATE',
                        help='continue from the latest complete snapshot (or the one given)')
    parser.add_argument('--val-limit', type=cli.number(int, minimum=1),
                        help='score only the first N val images')
    parser.add_argument('--verbose', action='store_true', help="show Caffe's own log")
    parser.add_argument('--allow-module', action='append', default=[], metavar='MODULE',
                        help="let the nets' Python layers import MODULE too")
    args = parser.parse_args(argv)
    if args.weights and args.resume:
        parser.error("--weights and --resume: a resumed run continues with its snapshot's "
                     'weights; give one of them')
    args.gpus = args.gpu or []
    return args  # paths stay as typed: train() reads them from the current directory


def gpu_ids(text):
    """An argparse type for --gpu: GPU ids (0 or more), each once, on a
    Caffe with CUDA (cli.gpu_id), several only with NCCL, each one Caffe can
    open (it aborts on one it cannot: asked in a process of its own)."""
    ids = [cli.number(int, minimum=0)(g) for g in text.split(',')]
    if len(set(ids)) < len(ids):
        raise argparse.ArgumentTypeError(f'{text}: a GPU named twice; give each id once')
    cli.gpu_id(str(ids[0]))  # the build has CUDA
    if len(ids) > 1 and not caffe.has_nccl():
        raise argparse.ArgumentTypeError(f'{text}: several GPUs need a Caffe built with NCCL '
                                         '(USE_NCCL=ON); this build has none: train on one GPU')
    for gpu in ids:
        probe = subprocess.run([sys.executable, '-c', f'import caffe; caffe.set_device({gpu})'],
                               capture_output=True)
        if probe.returncode != 0:
            raise argparse.ArgumentTypeError(f'Caffe cannot open GPU {gpu} (`nvidia-smi -L` lists '
                                             'the GPUs of this machine)')
    return ids


def check_prototxts(model):
    """Before any net is built: the folder's net prototxts are what its
    net.py defines (loading.check_fresh). solver.prototxt is left out:
    users edit it by hand (base_lr after a divergence)."""
    loading.check_fresh(model, model.net_files().values())


def check_net_modules(model, param, allow=()):
    """The Python layers of the nets the solver names import only the
    project's modules (loading.check_modules), before Caffe imports them."""
    names = [param.train_net, param.net] + list(param.test_net)
    for name in filter(None, names):
        path = os.path.join(model.folder, name)
        loading.check_modules(path, prototxts.read_net(path), allow)


def check_snapshot_folders(model, param):
    """Before training: where snapshots go (the snapshot folder, and the
    folder of the solver's snapshot_prefix) is a folder, or can be one,
    that this process can write. Writes nothing: an existing folder is
    probed with a file that has no name (O_TMPFILE), which works for root
    and read-only mounts alike, where permission bits do not tell."""
    folders = [os.path.join(model.folder, SNAPSHOT_DIR)]
    # The run's own files there: never written through a link planted at one.
    outputs.guard([(os.path.join(folders[0], name), f'the training {what}') for name, what in (
        ('latest.json', 'pointer'), ('log.jsonl', 'log'), ('curves.png', 'curves'),
        ('report.json', 'report'), ('report.html', 'report'))])
    prefix_folder = os.path.dirname(os.path.join(model.folder, param.snapshot_prefix))
    held = {os.path.realpath(model.folder), os.path.realpath(folders[0])}  # snapshot/ may be a link
    if not any(os.path.commonpath([root, os.path.realpath(prefix_folder)]) == root for root in held):
        # The lock (one_run) holds the model folder: snapshots elsewhere are
        # not held, and another folder's run could overwrite them.
        raise TrainingError(f'snapshot_prefix "{param.snapshot_prefix}" (solver.prototxt) writes '
                            f'snapshots outside the model folder {model.folder}, where another run '
                            'could overwrite them; give a prefix inside it, e.g. '
                            f'"{SNAPSHOT_DIR}/{locations.SNAPSHOT_PREFIX}"')
    if os.path.abspath(prefix_folder) != os.path.abspath(folders[0]):
        folders.append(prefix_folder)
    for folder in folders:
        what = 'the snapshot folder' if folder == folders[0] else \
            f'the folder of snapshot_prefix "{param.snapshot_prefix}" (solver.prototxt)'
        if os.path.islink(folder) and not os.path.exists(folder):
            raise TrainingError(f'{what} {folder} is a link to {os.readlink(folder)}, which does '
                                'not exist')
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise TrainingError(f'{what} {folder} is a file, not a folder: move it away (snapshots, '
                                'latest.json and the training log go there)')
        existing = folder
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as e:
            raise TrainingError(f'cannot write into {what} {folder}: {e.strerror} '
                                f'({existing})') from None


LOCK_NAME = 'solve.lock'


@contextlib.contextmanager
def one_run(model):
    """Hold the model folder for this run: an OS lock (flock, let go by the
    OS whatever way the process ends) on snapshot/solve.lock, which holds
    this process's id. A second solve.py in the folder gets TrainingError
    naming the first one's process id, and writes nothing. The lock file
    (and the snapshot folder, if this run made it and left it empty) goes
    when the run ends."""
    folder = os.path.join(model.folder, SNAPSHOT_DIR)
    made = not os.path.isdir(folder)
    path = os.path.join(folder, LOCK_NAME)
    fd = None
    try:
        with cli.signals_deferred():  # a signal here comes once the lock is taken, and let go below
            fd = _take_lock(model, folder, path)
        yield
    finally:
        if fd is not None:
            with cli.signals_deferred():
                os.unlink(path)  # while still locked: a run waiting on this file tries again
                os.close(fd)
                if made:
                    with contextlib.suppress(OSError):
                        os.rmdir(folder)


def _take_lock(model, folder, path):
    """The descriptor of the locked lock file, this process's id in it."""
    for _ in range(10):
        try:
            os.makedirs(folder, exist_ok=True)
            fd = outputs.open_no_follow(path, os.O_RDWR | os.O_CREAT, 0o644, 'the lock file')
        except OSError as e:
            raise TrainingError(f'cannot write into the snapshot folder {folder}: {e.strerror}') from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise TrainingError(f'cannot lock {path}: {e.strerror}') from None
            holder = _lock_holder(fd)
            os.close(fd)
            raise TrainingError(f'another solve.py (process {holder}) is training in {model.folder}: '
                                f'wait for it to end, or stop it (kill {holder}) and --resume') from None
        try:  # the file locked is the one on disk (not one a finished run just removed)
            current = os.stat(path)
            locked = os.fstat(fd)
            if (current.st_dev, current.st_ino) == (locked.st_dev, locked.st_ino):
                os.ftruncate(fd, 0)
                os.write(fd, f'{os.getpid()}\n'.encode())
                return fd
        except FileNotFoundError:
            pass
        except OSError as e:
            os.close(fd)
            raise TrainingError(f'cannot write {path}: {e.strerror}') from None
        os.close(fd)
    raise TrainingError(f'cannot lock {path}: it keeps being replaced')


def _lock_holder(fd):
    """The process id in a lock file another run holds (written just after
    it took the lock: wait a moment for it)."""
    for _ in range(50):
        text = os.pread(fd, 64, 0).decode(errors='replace').strip()
        if text:
            return text
        time.sleep(0.02)
    return 'unknown'


def check_start(model, weights=None, resume=None, max_iter=None):
    """Before any net is built: the data each of the model's nets reads,
    and where training starts (start weights or snapshot, not past
    `max_iter`). Raises TrainingError naming what is missing and the
    command that gets it."""
    for file in (model.source.train_file, model.source.val_file):
        try:
            layer = score.data_layer(prototxts.read_net(os.path.join(model.folder, file)))
            score.check_inputs(model.folder, layer, score.eval_params(layer))
        except (OSError, ValueError) as e:
            raise TrainingError(str(e)) from None
    if resume:
        snapshots = Snapshots(os.path.join(model.folder, SNAPSHOT_DIR))
        entry = snapshots.for_solverstate(resume_point(snapshots, resume))
        if entry and max_iter and entry['iteration'] > max_iter:
            raise TrainingError(f'--max-iter {max_iter}: training resumes at iteration '
                                f'{entry["iteration"]}, past it; give a larger --max-iter')
    elif weights:
        if not os.path.isfile(weights):
            raise TrainingError(f'--weights {weights}: no such file')
    else:
        start_weights(model)


def main(folder, argv=None):
    """Entry point of every model folder's solve.py. User errors end in one
    line (no traceback), found before any net is built where they can be;
    one run per model folder (one_run); Ctrl-C, SIGTERM or SIGHUP, once or
    repeated, end in one line naming the snapshot that keeps the work, exit
    status 128 + the signal (130, 143, 129)."""
    state = dict(written=None, model=None)  # latest.json as this run found it

    def work():
        nonlocal folder
        args = parse_args(argv)
        folder = os.path.dirname(os.path.abspath(folder)) if os.path.isfile(folder) else folder
        model = state['model'] = load_model(folder)
        # the nets parsed first: a typo is named by its line, not as "stale"
        param = prototxts.read_solver(os.path.join(model.folder, 'solver.prototxt'))
        check_net_modules(model, param, args.allow_module)
        check_prototxts(model)
        check_snapshot_folders(model, param)
        with one_run(model):
            state['written'] = _pointer_stamp(model)
            check_start(model, args.weights, args.resume, args.max_iter)
            if len(args.gpus) > 1:
                train_parallel(folder, args.gpus, args)
            else:
                train(folder, weights=args.weights, max_iter=args.max_iter,
                      test_interval=args.test_interval, resume=args.resume,
                      gpu=args.gpus[0] if args.gpus else None, val_limit=args.val_limit)

    def interrupted(e):
        if isinstance(e, Interrupted):
            return e.what
        model, written = state['model'], state['written']
        if written is not None and _pointer_stamp(model) != written:
            # after a snapshot this run wrote (a signal as training ended)
            latest = Snapshots(os.path.join(model.folder, SNAPSHOT_DIR)).latest()
            if latest:
                return kept(latest)
        return 'before training began; nothing was written'
    cli.run('solve.py', work, interrupted)


def _pointer_stamp(model):
    """What tells whether latest.json was written since (it is replaced, so
    its inode changes): (inode, modification time), or () without one."""
    try:
        stat = os.stat(os.path.join(model.folder, SNAPSHOT_DIR, 'latest.json'))
    except OSError:
        return ()
    return stat.st_ino, stat.st_mtime_ns
