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
snapshot/curves.png (loss and mean IU against iteration).
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time

import numpy as np
from tqdm import tqdm

import checks
import locations
import nets
import runtime
import score
import surgery
from fetch.catalog import ILSVRC_NETS
from locations import SNAPSHOT_DIR
from nets import SEED


class TrainingError(Exception):
    """A problem the user must act on; the message says what to do."""


class Diverged(TrainingError):
    pass


# ------------------------------------------------------------------ weights
def init_folder(model, name):
    """The folder of model `name` that `model` starts from: its sibling where
    one exists (a user's own models laid out side by side), else the
    repository's model folder of that name."""
    sibling = os.path.join(os.path.dirname(model.folder), name)
    return sibling if os.path.isfile(os.path.join(sibling, 'net.py')) else locations.model_dir(name)


def trained_weights(folder):
    """The trained weights of a model folder: its latest complete snapshot,
    else its published caffemodel (python -m fetch weights NAME)."""
    name = os.path.basename(folder)
    latest = Snapshots(os.path.join(folder, SNAPSHOT_DIR)).latest()
    if latest:
        return latest['caffemodel']
    published = locations.published_weights(name, os.path.dirname(folder))
    if published and os.path.isfile(published):
        return published
    fetch = f' or fetch its published caffemodel (python -m fetch weights {name})' if published else ''
    raise TrainingError(
        f'no trained weights for {name}: train it first '
        f'(cd {os.path.relpath(folder)} && python solve.py){fetch}')


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
    import caffe
    net = solver.net
    upsampling = [k for k in net.params if k.startswith('upscore')]
    for suffix, path in weights.items():
        if not os.path.isfile(path):
            raise TrainingError(f'start weights {path} do not exist')
        source_proto = _source_proto(model, path)
        try:
            if not suffix and model.source.fusion != 'early':
                checks.load_weights(net, path, _fresh_layers(net, source_proto, upsampling))
                continue
            # Streams (late fusion) and the 4-channel early-fusion conv need the
            # source weights in a net of their own.
            if not os.path.isfile(source_proto):
                raise TrainingError(f'start weights {path}: no net definition {source_proto} '
                                    'to read them with')
            source_net = caffe.Net(source_proto, caffe.TEST)
            checks.load_weights(source_net, path, net_name=source_proto)
        except checks.CheckError as e:
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
    if not os.path.isfile(source_proto):
        return set(net.params)
    start = checks.layer_names(source_proto)
    return set(upsampling) | {k for k in net.params if k not in start}


def _source_proto(model, weights_path):
    """The deploy prototxt matching a start-weights file: the ILSVRC fcn twin
    or the deploy net of the model folder the weights come from."""
    for trunk in ILSVRC_NETS:
        if os.path.abspath(weights_path) == os.path.abspath(locations.ilsvrc_weights(trunk)):
            return locations.ilsvrc_deploy(trunk)
    folder = os.path.dirname(os.path.abspath(weights_path))
    if os.path.basename(folder) == SNAPSHOT_DIR:
        folder = os.path.dirname(folder)
    return os.path.join(folder, 'deploy.prototxt')


# ---------------------------------------------------------------- snapshots
class Snapshots:
    """Complete snapshots in a folder, with an atomic `latest.json` pointer."""

    def __init__(self, folder, prefix=None):
        self.folder = folder
        self.prefix = prefix or os.path.join(folder, 'train')  # the solver's snapshot_prefix
        self.pointer = os.path.join(folder, 'latest.json')

    def latest(self):
        """{'iteration', 'solverstate', 'caffemodel'} of the newest complete
        snapshot (absolute paths), or None."""
        try:
            with open(self.pointer) as f:
                entry = json.load(f)
        except FileNotFoundError:
            return None
        for key in ('solverstate', 'caffemodel'):
            path = os.path.join(self.folder, entry[key])
            if not os.path.isfile(path) or os.path.getsize(path) != entry[key + '_bytes']:
                raise TrainingError(f'{self.pointer} names {path}, which is missing or changed')
            entry[key] = path
        return entry

    def save(self, solver):
        """Snapshot the solver; point latest.json at it once it is on disk."""
        solver.snapshot()
        prefix = f'{self.prefix}_iter_{solver.iter}'
        entry = {'iteration': solver.iter}
        for key, ext in (('solverstate', '.solverstate'), ('caffemodel', '.caffemodel')):
            path = prefix + ext
            _fsync(path)
            entry[key] = os.path.relpath(path, self.folder)
            entry[key + '_bytes'] = os.path.getsize(path)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix='.latest')
        with os.fdopen(fd, 'w') as f:
            json.dump(entry, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.pointer)
        _fsync(self.folder)
        return entry


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------- progress
class Progress:
    """log.jsonl (one JSON object per line) and curves.png, kept current."""

    def __init__(self, folder, resume_iter=None):
        self.log_path = os.path.join(folder, 'log.jsonl')
        self.plot_path = os.path.join(folder, 'curves.png')
        self.records = []
        if resume_iter is not None and os.path.exists(self.log_path):
            with open(self.log_path) as f:  # drop what came after the snapshot
                self.records = [r for r in map(json.loads, f) if r['iteration'] <= resume_iter]
        with open(self.log_path, 'w') as f:
            for r in self.records:
                f.write(json.dumps(r) + '\n')

    def add(self, record):
        self.records.append(record)
        with open(self.log_path, 'a') as f:
            f.write(json.dumps(record) + '\n')

    def plot(self, title):
        import matplotlib
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
        tmp = self.plot_path + '.tmp.png'
        fig.savefig(tmp)
        plt.close(fig)
        os.replace(tmp, self.plot_path)


# ------------------------------------------------------------------ solver
def make_solver(model, test_interval, max_iter):
    """The solver of the folder's solver.prototxt (SGD unless it names
    another type); Caffe's own snapshots are turned off because this loop
    writes them (atomically)."""
    import caffe
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    param = caffe_pb2.SolverParameter()
    with open('solver.prototxt') as f:
        text_format.Merge(f.read(), param)
    param.snapshot = 0
    param.max_iter = max_iter
    param.random_seed = SEED
    os.makedirs(os.path.dirname(param.snapshot_prefix) or '.', exist_ok=True)
    fd, path = tempfile.mkstemp(dir='.', prefix='.solver-', suffix='.prototxt')
    with os.fdopen(fd, 'w') as f:
        f.write(text_format.MessageToString(param))
    try:
        solver = caffe.get_solver(path)
    finally:
        os.remove(path)
    return solver, param  # pycaffe exposes few of the solver's settings


def data_layers(net):
    """The Python layers whose draws follow the examples served: the data
    layers, and loss sampling's (anything with seek(); data layers first,
    as nets list them)."""
    return [layer for layer in net.layers if hasattr(layer, 'seek')]


def position_data(solver, param, iteration):
    """Put the training data where an uninterrupted run would be at
    `iteration`, and derive Caffe's random state (dropout) from it."""
    import caffe
    caffe.set_random_seed(SEED + iteration)
    for layer in data_layers(solver.net):
        layer.seek(iteration * param.iter_size)


def val_examples(solver, limit=None):
    """The val split's examples, in the test net's data layer's order."""
    layers = data_layers(solver.test_nets[0]) if solver.test_nets else []
    examples = list(layers[0].examples) if layers else []
    return examples[:limit] if limit else examples


# What each scoring logs per head: the paper's metrics and the mean loss.
SCALAR_METRICS = tuple(key for key, _ in score.METRICS) + ('loss',)


def evaluate(solver, model, examples):
    """Score every head on the val split: {head name: scalar metrics}."""
    for layer in data_layers(solver.test_nets[0]):
        layer.seek(0)  # every scoring sees the same images
    split = model.source.val_split
    results = {}
    for head in model.source.heads:
        result = score.seg_tests(solver, False, examples, layer=head.score, gt=head.label,
                                 loss=head.loss, class_names=head.classes,
                                 exclude=head.excluded(split))
        results[head.name] = {
            k: (None if not math.isfinite(result[k]) else float(result[k])) for k in SCALAR_METRICS}
    return results


def start(solver, model, snapshots, weights=None, resume=None):
    """Load where training starts: a snapshot (`resume` True: the latest
    complete one; or a solverstate path), else the start weights (`weights`,
    or the model's reference start) with the upsampling layers filled."""
    if resume:
        latest = snapshots.latest() if resume is True else {'solverstate': os.path.abspath(resume)}
        if latest is None:
            raise TrainingError(f'no complete snapshot in {os.path.abspath(snapshots.folder)}: '
                                'start without --resume')
        state = latest['solverstate']
        if not os.path.isfile(state):
            raise TrainingError(f'--resume {state}: no such solverstate')
        try:
            checks.check_solverstate(state, solver.net, model.solver_type)
        except checks.CheckError as e:
            raise TrainingError(f'cannot resume: {e}') from e
        solver.restore(state)
    else:
        initialize(solver, model, {'': weights} if weights else start_weights(model))


def step_loop(solver, param, model, snapshots, progress, examples, max_iter, test_interval,
              leader=True, quiet=False):
    """Step the solver to `max_iter`: every `test_interval` iterations the
    leader scores the val examples, logs and snapshots. Ctrl-C snapshots the
    work done so far before the KeyboardInterrupt goes on."""
    losses = [h.loss for h in model.source.heads]
    t0 = time.time()
    bar = tqdm(total=max_iter, initial=solver.iter, desc=model.name, unit='it',
               disable=quiet or not leader, dynamic_ncols=True)
    window = []
    try:
        while solver.iter < max_iter:
            position_data(solver, param, solver.iter)  # at each snapshot boundary
            stop = min(max_iter, (solver.iter // test_interval + 1) * test_interval)
            while solver.iter < stop:
                solver.step(1)
                loss = sum(float(solver.net.blobs[b].data) for b in losses)
                if not math.isfinite(loss):
                    last = snapshots.latest()
                    kept = f'the last good snapshot is {last["caffemodel"]} (iteration {last["iteration"]})' \
                        if last else 'no snapshot was written yet'
                    raise Diverged(f'loss is {loss} at iteration {solver.iter}: training stopped; {kept}. '
                                   'Lower base_lr in solver.prototxt (or check the data) and --resume.')
                window.append(loss)
                bar.update(1)
                bar.set_postfix(loss=f'{loss:.4g}')
                if param.display and solver.iter % param.display == 0:
                    progress.add(dict(iteration=solver.iter, loss=float(np.mean(window)),
                                      seconds=round(time.time() - t0, 3)))
                    window = []
            if not leader:
                continue
            # Log before snapshotting: a kill in between resumes from the
            # previous snapshot and drops this record with the work.
            metrics = evaluate(solver, model, examples) if examples else {}
            progress.add(dict(iteration=solver.iter, loss=float(np.mean(window)) if window else None,
                              metrics=metrics, seconds=round(time.time() - t0, 3)))
            snapshots.save(solver)
            window = []
            progress.plot(model.name)
    except KeyboardInterrupt:
        if not leader:
            raise
        # Interrupted between iterations: keep the work done so far.
        entry = snapshots.save(solver)
        print(f'\ninterrupted: snapshot at iteration {entry["iteration"]} '
              f'({entry["caffemodel"]}); continue with --resume', file=sys.stderr)
        raise
    finally:
        bar.close()


def train(folder, weights=None, max_iter=None, test_interval=None, resume=None, gpu=None,
          val_limit=None, quiet=False, nccl=None):
    """Train the model in `folder` on GPU `gpu` (None: the CPU). Returns the
    Progress records. With `nccl` = (uid, rank, solver count), this process
    is one of Caffe's data-parallel solvers (see train_parallel): only rank
    0 scores, snapshots and logs. Paths given relative to the current
    directory stay so; the current directory is restored on return."""
    import caffe
    model = nets.load(folder)
    weights = weights and os.path.abspath(weights)
    resume = os.path.abspath(resume) if isinstance(resume, str) else resume
    runtime.use_device(gpu)
    if nccl is not None:
        caffe.set_solver_count(nccl[2])
        caffe.set_solver_rank(nccl[1])
        caffe.set_multiprocess(True)
    test_interval = test_interval or model.source.test_interval
    max_iter = max_iter or model.training_length
    with locations.working_dir(model.folder):  # prototxt paths are relative to the folder
        solver, param = make_solver(model, test_interval, max_iter)
        snapshots = Snapshots(SNAPSHOT_DIR, param.snapshot_prefix)
        start(solver, model, snapshots, weights, resume)
        if nccl is not None:  # Caffe's data parallelism: share weights, sum gradients
            reducer = caffe.NCCL(solver, nccl[0])
            reducer.bcast()
            solver.add_callback(reducer)
            if solver.param.layer_wise_reduce:
                solver.net.after_backward(reducer)
        progress = Progress(SNAPSHOT_DIR, resume_iter=solver.iter if resume else None)
        step_loop(solver, param, model, snapshots, progress, val_examples(solver, val_limit),
                  max_iter, test_interval, leader=nccl is None or nccl[1] == 0, quiet=quiet)
    return progress.records


def _parallel_worker(folder, gpus, rank, uid, args):
    try:
        train(folder, weights=args.weights, max_iter=args.max_iter, test_interval=args.test_interval,
              resume=args.resume, gpu=gpus[rank], val_limit=args.val_limit,
              nccl=(uid, rank, len(gpus)))
    except TrainingError as e:
        sys.exit(f'solve.py (GPU {gpus[rank]}): {e}')


def train_parallel(folder, gpus, args):
    """Caffe's own multi-GPU training (as its python/train.py): one process
    per GPU, NCCL summing gradients; each Python data layer reads its share
    of the sequence (layers.py: every solver_count-th example)."""
    import multiprocessing
    import caffe
    if not caffe.has_nccl():
        raise TrainingError('several --gpu ids need a Caffe built with NCCL (USE_NCCL=ON); '
                            'this build has none: train on one GPU')
    uid = caffe.NCCL.new_uid()
    context = multiprocessing.get_context('spawn')  # a fresh CUDA context per process
    procs = [context.Process(target=_parallel_worker, args=(folder, gpus, rank, uid, args))
             for rank in range(len(gpus))]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [gpus[i] for i, p in enumerate(procs) if p.exitcode]
    if failed:
        raise TrainingError(f'training failed on GPU(s) {failed}')


def parse_args(argv):
    parser = argparse.ArgumentParser(description='Train this model folder (FCN reference settings).')
    device = parser.add_mutually_exclusive_group()
    device.add_argument('--gpu', help='GPU id(s), e.g. 0 or 0,1 (several: NCCL data parallelism)')
    device.add_argument('--cpu', action='store_true', help='train on the CPU (default without --gpu)')
    parser.add_argument('--weights', help='start weights (default: the reference start for this model)')
    parser.add_argument('--max-iter', type=int, help='stop at this iteration (default: solver max_iter)')
    parser.add_argument('--test-interval', type=int,
                        help='iterations between scoring and snapshots (default: dataset reference)')
    parser.add_argument('--resume', nargs='?', const=True, metavar='SOLVERSTATE',
                        help='continue from the latest complete snapshot (or the one given)')
    parser.add_argument('--val-limit', type=int, help='score only the first N val images')
    return parser.parse_args(argv)


def main(folder, argv=None):
    """Entry point of every model folder's solve.py."""
    args = parse_args(argv)
    folder = os.path.dirname(os.path.abspath(folder)) if os.path.isfile(folder) else folder
    gpus = [int(g) for g in args.gpu.split(',')] if args.gpu else []
    try:
        if len(gpus) > 1:
            train_parallel(folder, gpus, args)
        else:
            train(folder, weights=args.weights, max_iter=args.max_iter, test_interval=args.test_interval,
                  resume=args.resume, gpu=gpus[0] if gpus else None, val_limit=args.val_limit)
    except TrainingError as e:
        sys.exit(f'solve.py: {e}')
