"""The FCN recipe in miniature, offline, on the CPU: the paper's Table 2 on
synthetic data, with the project's own nets/, layers.py, surgery.py,
training.py, score.py and infer.py.

    python minirepro.py [--out out/minirepro] [--seed 0] [--seeds 3] [--data-seed 0]
                        [--jobs N] [--ablations] [--quick]

 1. synthetic.py writes a VOC-layout segmentation set and a set of object
    crops (the stand-in for ILSVRC);
 2. a narrow VGG16 classifier (fully connected fc6/fc7, 224 x 224 input) is
    trained on the crops, then convolutionalized by surgery.convolutionalize
    into its fully convolutional twin: the FCNs' start weights, one for
    every seed;
 3. for each training seed (its own order of the train scenes), model
    folders (net.py + prototxts from nets' Model) are trained by
    training.train: FCN-32s-fixed (only the score layer learns), FCN-32s,
    FCN-16s from FCN-32s, FCN-8s from FCN-16s, and all-at-once FCN-8s
    (with --ablations also FCN-32s with learned upsampling, with loss
    sampling, and with a sigmoid loss);
 4. every net is scored on val (score.py's metrics, during training).
Then the table (mean and spread over seeds), the paper's ordering judged
seed by seed, the ablations against the papers' findings and the output
strides' upper bounds go to table.md / results.json, with curves.png
(training curves), figure4.png (a val image, its ground truth, the
32s/16s/8s predictions) and infer/ (infer.py on that image).
"""
import contextlib
import ctypes
import json
import multiprocessing
import os
import resource
import sys
import time
from dataclasses import dataclass

# Small convolutions gain nothing from BLAS threads; seeds run in parallel
# processes instead (--jobs). Must precede the first `import caffe`.
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402
from tqdm import tqdm  # noqa: E402

from common import caffe_setup, cli  # noqa: E402

caffe_setup.quiet_caffe_log([])  # its own progress replaces Caffe's log

import caffe  # noqa: E402
from caffe import layers as L  # noqa: E402

import infer  # noqa: E402
import layers  # noqa: E402
import nets  # noqa: E402
from nets import ilsvrc  # noqa: E402
from nets.scaffold import SCRATCH_SOLVER  # noqa: E402
import score  # noqa: E402
import surgery  # noqa: E402
import synthetic  # noqa: E402
import training  # noqa: E402
from common import datasets, locations, outputs  # noqa: E402
from common.metrics import METRICS  # noqa: E402  (the table's columns)
from common.snapshots import Snapshots  # noqa: E402

TRUNK = 'vgg16'
# 1/32 of VGG16's channels (conv 2..16, fc6/fc7 128): each seed trains in
# a few minutes on one core.
TRUNK_WIDTH = 1 / 32
TRUNK_FILLER = 'xavier'  # the classifier trains from scratch (msra's larger start learned slower here)


@dataclass(frozen=True)
class Schedule:
    """Data sizes and iteration counts."""
    train_scenes: int = 300
    val_scenes: int = 60
    crops_train: int = 1000
    crops_val: int = 100
    classifier_iter: int = 600
    classifier_batch: int = 6
    classifier_lr: float = 1e-3
    fixed_iter: int = 200         # FCN-32s-fixed: one layer learns, soon done
    first_iter: int = 700         # FCN-32s: every layer from the classifier
    refine_iter: int = 400        # FCN-16s from FCN-32s, FCN-8s from FCN-16s
    atonce_iter: int = 500        # all-at-once FCN-8s
    scorings: int = 2             # val scorings per net (the last gives the table)


FULL = Schedule()
# End to end in seconds (the test suite's run): nothing here is meaningful but the plumbing.
QUICK = Schedule(train_scenes=6, val_scenes=3, crops_train=12, crops_val=6, classifier_iter=3,
                 classifier_batch=2, fixed_iter=2, first_iter=2, refine_iter=2, atonce_iter=2,
                 scorings=1)


@dataclass(frozen=True)
class Stage:
    folder: str        # model folder name (under the seed's output folder)
    title: str         # row of the table (the paper's names)
    stride: int
    start: str         # 'classifier' or the folder whose latest snapshot it starts from
    fixed_trunk: bool = False
    at_once: bool = False
    # The ablations' Model options, and the row each ablation is compared with
    learned_upsampling: bool = False
    loss: str = 'softmax'
    loss_sampling: float = 1.0
    baseline: str = ''

    def iterations(self, schedule):
        if self.fixed_trunk:
            return schedule.fixed_iter
        if self.at_once:
            return schedule.atonce_iter
        return schedule.first_iter if self.start == 'classifier' else schedule.refine_iter


# In training order; the table lists them in the paper's order (the same).
STAGES = (
    Stage('fcn32s-fixed', 'FCN-32s-fixed', 32, 'classifier', fixed_trunk=True),
    Stage('fcn32s', 'FCN-32s', 32, 'classifier'),
    Stage('fcn16s', 'FCN-16s', 16, 'fcn32s'),
    Stage('fcn8s', 'FCN-8s', 8, 'fcn16s'),
    Stage('fcn8s-atonce', 'FCN-8s all-at-once', 8, 'classifier', at_once=True),
)
# The paper's ablations (--ablations), each trained as FCN-32s is, from the
# same classifier, and compared with it seed by seed.
ABLATIONS = (
    Stage('fcn32s-learned', 'FCN-32s, learned upsampling', 32, 'classifier',
          learned_upsampling=True, baseline='fcn32s'),
    Stage('fcn32s-sampled', 'FCN-32s, loss sampling p = 0.5', 32, 'classifier',
          loss_sampling=0.5, baseline='fcn32s'),
    Stage('fcn32s-sigmoid', 'FCN-32s, sigmoid cross-entropy', 32, 'classifier',
          loss='sigmoid', baseline='fcn32s'),
)
# What the papers found for each ablation (the report sets this net's result beside it)
PAPER_FINDINGS = {
    'fcn32s-learned': 'learned and fixed bilinear upsampling: no significant difference',
    'fcn32s-sampled': 'loss sampling: no significant effect on mean IU per iteration, '
                      'but more wall time (each step takes 1/p images)',
    'fcn32s-sigmoid': 'sigmoid cross-entropy instead of the softmax: similar results',
}
# The paper's qualitative result, checked on mean IU: each net beats the previous.
ORDER = ('fcn32s-fixed', 'fcn32s', 'fcn16s', 'fcn8s')
UPPER_BOUND_STRIDES = (32, 16, 8)

# The solver. The reference trains with SGD (momentum 0.99, one image a
# step, lr 1e-10 on a loss summed over some 250,000 pixels) for 100,000
# iterations; here each net gets a few hundred. In trials on this data, SGD
# at any one rate either left the trunk as the classifier made it (a rate
# the zero-initialised score layers survive) or collapsed it (a rate that
# moves the trunk), and momentum 0.99 alone averages over some 100 steps.
# Adam scales each weight's step by its own gradient history and fine-tunes
# every layer in a few hundred steps. The loss is normalized (a mean over
# the pixels), so one rate suits any scene size. Every stage starts at the
# same rate and decays it linearly to zero over its run, so that a net ends
# settled rather than wherever its last noisy steps left it: halfway, at
# half the rate, the three seeds' FCN-16s stood at 37.9-42.1 mean IU and
# their all-at-once nets at 34.4-47.3; at the end, at 46.9-48.2 and
# 52.9-55.8 (data seed 0). (The finer stages start from zero-initialised
# skips, so they begin as the coarser net's predictions at any rate.)
# The same settings are what `python -m nets new` gives a narrow trunk
# trained from scratch: their values live there (nets/scaffold.py).
FCN_SOLVER = SCRATCH_SOLVER['solver_type']  # 'Adam'
FCN_LR = SCRATCH_SOLVER['base_lr']  # 1e-3
FCN_LR_DECAY_POWER = SCRATCH_SOLVER['lr_decay_power']  # 1.0
FCN_MOMENTUM = SCRATCH_SOLVER['momentum']  # 0.9: Adam's first-moment decay
# All-at-once FCN-8s scales its pool4 and pool3 features by fixed constants
# so that their scores start small beside fc7's. The published 0.01 and
# 0.0001 damp VGG16's skips over 100,000 SGD steps; this narrow trunk's pool3,
# pool4 and fc7 are of one size (rms 2.7, 1.6 and 2.1 on a val scene) and
# trains a few hundred steps, in which those constants keep the skips silent
# (the net stays at FCN-32s' level). Unscaled skips (1, 1) learn as the
# paper's all-at-once net does.
AT_ONCE_SCALES = (1.0, 1.0)

GENERATED_HEADER = '# Generated by minirepro.py (the classifier of the mini-reproduction).\n'


# --------------------------------------------------------------- the "ILSVRC" stage
def classifier_nets(num_classes):
    """(classifier deploy net, its training net, fully convolutional twin) as
    NetSpecs, by nets.ilsvrc's function for the published classifiers."""
    options = dict(num_classes=num_classes, width=TRUNK_WIDTH, filler=TRUNK_FILLER)
    deploy = ilsvrc.ilsvrc_net(TRUNK, False, **options)
    train = ilsvrc.ilsvrc_net(TRUNK, False, **options)
    train.label = L.Input(shape=[dict(dim=[1])])
    train.loss = L.SoftmaxWithLoss(train.fc8, train.label)
    train.accuracy = L.Accuracy(train.fc8, train.label)
    return deploy, train, ilsvrc.ilsvrc_net(TRUNK, True, **options)


def crop_batch(examples, mean):
    """Data (N x 3 x H x W, the data layers' preprocessing) and labels of crops."""
    data = np.stack([layers.preprocess(layers.load_image(path), mean) for path, _ in examples])
    return data, np.array([cls for _, cls in examples], np.float32)


def classifier_accuracy(net, examples, mean, batch):
    hits = 0
    for i in range(0, len(examples), batch):
        data, labels = crop_batch(examples[i:i + batch], mean)
        net.blobs['data'].reshape(*data.shape)
        net.blobs['label'].reshape(len(labels))
        net.blobs['data'].data[...] = data
        net.forward()
        hits += int((net.blobs['fc8'].data.argmax(axis=1) == labels).sum())
    return hits / len(examples)


def train_classifier(folder, crops_dir, mean, seed, schedule, quiet=True):
    """Train the classifier on the crops and convolutionalize it. Returns
    {'fcn_weights', 'val_accuracy', 'losses'}."""
    os.makedirs(os.path.join(folder, locations.SNAPSHOT_DIR), exist_ok=True)
    deploy, train, fcn = classifier_nets(len(synthetic.CLASSES))
    files = {'classifier.prototxt': deploy, 'train.prototxt': train, 'fcn.prototxt': fcn}
    for name, spec in files.items():
        with open(os.path.join(folder, name), 'w') as f:
            f.write(GENERATED_HEADER + str(spec.to_proto()))
    with open(os.path.join(folder, 'solver.prototxt'), 'w') as f:
        f.write(nets.solver_text([
            ('train_net', 'train.prototxt'), ('type', 'Adam'), ('base_lr', schedule.classifier_lr),
            ('lr_policy', 'poly'), ('power', FCN_LR_DECAY_POWER), ('max_iter', schedule.classifier_iter),
            ('momentum', 0.9), ('weight_decay', 0.0005), ('random_seed', seed), ('display', 0),
            ('snapshot_prefix', f'{locations.SNAPSHOT_DIR}/{locations.SNAPSHOT_PREFIX}')]))

    train_set = synthetic.read_crops(crops_dir, 'train')
    val_set = synthetic.read_crops(crops_dir, 'val')
    rng = np.random.default_rng(seed)
    order = []
    losses = []
    with locations.working_dir(folder):
        solver = caffe.get_solver('solver.prototxt')
        net = solver.net
        # The bar only on a terminal (None): a piped log gets main's lines.
        for it in tqdm(range(schedule.classifier_iter), desc='classifier', unit='it',
                       disable=True if quiet else None, dynamic_ncols=True):
            batch = []
            while len(batch) < schedule.classifier_batch:
                if not order:  # a new epoch in a new order
                    order = list(rng.permutation(len(train_set)))
                batch.append(train_set[order.pop()])
            data, labels = crop_batch(batch, mean)
            net.blobs['data'].reshape(*data.shape)
            net.blobs['label'].reshape(len(labels))
            net.blobs['data'].data[...] = data
            net.blobs['label'].data[...] = labels
            solver.step(1)
            losses.append(float(net.blobs['loss'].data))
        accuracy = classifier_accuracy(net, val_set, mean, schedule.classifier_batch)
        net.save('classifier.caffemodel')
        # The FCN start weights: fc6/fc7 cast to convolutions (transplant
        # lists what it did; keep that in a file rather than on screen).
        with open('surgery.log', 'w') as log, contextlib.redirect_stdout(log):
            surgery.convolutionalize('classifier.caffemodel', 'classifier.prototxt', 'fcn.prototxt',
                                     'fcn.caffemodel', force=True)
    with open(os.path.join(folder, 'log.json'), 'w') as f:
        json.dump(dict(losses=losses, val_accuracy=accuracy), f)
    return dict(fcn_weights=os.path.join(folder, 'fcn.caffemodel'), val_accuracy=accuracy,
                losses=losses)


# --------------------------------------------------------------- the FCNs
def write_model_folder(folder, stage, schedule, mean, voc_dir, train_split, start):
    """Write <folder>/net.py for `stage` and its prototxts; returns the Model."""
    iters = stage.iterations(schedule)
    source = nets.VOC(voc_dir=os.path.relpath(voc_dir, folder), sbdd_dir='', train_split=train_split,
                      val_split='val', val_size=schedule.val_scenes,
                      test_interval=max(1, iters // schedule.scorings), mean=tuple(map(float, mean)),
                      heads=(nets.Head('', synthetic.CLASSES),))
    # Adam, normalized loss: see FCN_SOLVER.
    model = nets.Model(source, trunk=TRUNK, stride=stage.stride, base_lr=FCN_LR, init=(),
                       at_once=stage.at_once, fixed_trunk=stage.fixed_trunk, trunk_width=TRUNK_WIDTH,
                       learned_upsampling=stage.learned_upsampling, loss=stage.loss,
                       loss_sampling=stage.loss_sampling, normalize_loss=True, solver_type=FCN_SOLVER,
                       momentum=FCN_MOMENTUM, lr_decay_power=FCN_LR_DECAY_POWER, max_iter=iters,
                       **({'at_once_scales': AT_ONCE_SCALES} if stage.at_once else {}))
    nets.write_net_py(folder, model, f'{stage.title} on the synthetic VOC-layout set: the offline '
                                     f'mini-reproduction\'s model folder (written by minirepro.py). '
                                     f'Starts from {start}.')
    return nets.load(folder)


def latest_weights(folder):
    return Snapshots(os.path.join(folder, locations.SNAPSHOT_DIR)).latest()['caffemodel']


def train_stage(folder, start_weights, quiet):
    """training.train on a model folder (it works inside the folder)."""
    with locations.working_dir(os.getcwd()):
        records = training.train(folder, weights=start_weights, quiet=quiet)
    final = [r for r in records if 'metrics' in r][-1]
    return records, final['metrics']['score']


def seed_split(voc_dir, seed):
    """Write the train split in the seed's own order (the data layer's
    shuffles, seeded alike, then differ from seed to seed); returns its name."""
    ids = layers.read_split(datasets.voc_split(voc_dir, 'train'))
    name = f'train-seed-{seed}'
    with open(datasets.voc_split(voc_dir, name), 'w') as f:
        f.write(''.join(ids[i] + '\n' for i in np.random.default_rng(seed).permutation(len(ids))))
    return name


def run_seed(seed, out, data_dir, mean, classifier, schedule=FULL, quiet=True, stages=STAGES):
    """The FCNs of one training seed under `out`, on the data set in
    `data_dir` (BGR mean `mean`), from the convolutionalized classifier's
    weights `classifier`, training `stages` in order; returns its results
    (also written to <out>/result.json)."""
    t0, c0 = time.time(), time.process_time()
    seconds, cpu_seconds = {}, {}
    voc_dir = os.path.join(data_dir, 'voc')
    train_split = seed_split(voc_dir, seed)
    results, curves = {}, {}
    for stage in stages:
        t, c = time.time(), time.process_time()
        folder = os.path.join(out, stage.folder)
        if stage.start == 'classifier':
            start, start_weights = ('the convolutionalized classifier (../../classifier/fcn.caffemodel)',
                                    classifier)
        else:
            start, start_weights = (f'the latest snapshot of ../{stage.start}',
                                    latest_weights(os.path.join(out, stage.start)))
        write_model_folder(folder, stage, schedule, mean, voc_dir, train_split, start)
        records, metrics = train_stage(folder, start_weights, quiet)
        results[stage.folder] = metrics
        curves[stage.folder] = records
        seconds[stage.folder] = time.time() - t
        cpu_seconds[stage.folder] = time.process_time() - c
        # On the run's own output, also from a worker whose stdout goes to
        # its run.log (redirect_stdout moves sys.stdout only): one whole line.
        iu = metrics['mean_iu']
        sys.__stdout__.write(f'seed {seed}: {stage.title}: mean IU '
                             f'{"-" if iu is None else f"{100 * iu:.1f}"} '
                             f'after {stage.iterations(schedule)} iterations, '
                             f'{seconds[stage.folder]:.0f} s\n')
        sys.__stdout__.flush()
    seconds['total'] = time.time() - t0
    cpu_seconds['total'] = time.process_time() - c0
    # Wall time, and CPU time (this process's, BLAS threads included), which
    # other jobs on the machine do not inflate
    result = dict(seed=seed, folder=os.path.abspath(out), train_split=train_split, metrics=results,
                  curves=curves, seconds={k: round(v, 1) for k, v in seconds.items()},
                  cpu_seconds={k: round(v, 1) for k, v in cpu_seconds.items()})
    with open(os.path.join(out, 'result.json'), 'w') as f:
        json.dump(outputs.jsonable(result), f, indent=1)
    return result


def _run_seed_quietly(args):
    """A worker process's job (several seeds at once): its output to a log."""
    with open(os.path.join(args[1], 'run.log'), 'w') as log, contextlib.redirect_stdout(log):
        return run_seed(*args[:6], quiet=True, stages=args[6])


# --------------------------------------------------------------- reporting
def trained_stages(results):
    """The stages the results hold, in the table's order."""
    return [s for s in STAGES + ABLATIONS if s.folder in results[0]['metrics']]


TITLES = {s.folder: s.title for s in STAGES + ABLATIONS}


def summarize(results):
    """{stage: {metric: {'mean', 'std', 'values'}}} over the seeds."""
    summary = {}
    for stage in trained_stages(results):
        summary[stage.folder] = {}
        for key, _ in METRICS:
            values = [r['metrics'][stage.folder][key] for r in results]
            # sample standard deviation: the seed-to-seed spread
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            summary[stage.folder][key] = dict(mean=float(np.mean(values)), std=std, values=values)
    return summary


# The comparisons are paired. Within a seed the nets saw the scenes in one
# order, and FCN-16s and FCN-8s continue that seed's coarser net, so each
# seed gives one gain (the finer net's mean IU minus the coarser one's); the
# nets' own spreads over seeds, partly shared between them, say less about
# which is better. The paper's ordering is a claim of direction ("the finer
# net is better"), so a step holds when the one-sided 95% lower confidence
# bound of the mean gain (Student's t over the seeds) is above zero. An
# ablation claims "no significant difference", so it shows when the
# two-sided 95% interval of its gain holds zero.
CONFIDENCE = 0.95


def paired_gain(results, base, other, one_sided=False, key='mean_iu'):
    """`other`'s gain over `base` per seed: {'gains', 'mean', 'se' (standard
    error of the mean), 'low', 'high' (its confidence bounds: high is None
    when one-sided; both nan with one seed), 'one_sided', 'wins' (seeds
    where `other` is better), 'seeds'}."""
    gains = [r['metrics'][other][key] - r['metrics'][base][key] for r in results]
    n = len(gains)
    mean = float(np.mean(gains))
    se = float(np.std(gains, ddof=1) / np.sqrt(n)) if n > 1 else float('nan')
    tail = (1 - CONFIDENCE) / (1 if one_sided else 2)
    half = float(stats.t.ppf(1 - tail, n - 1)) * se if n > 1 else float('nan')
    return dict(gains=[float(g) for g in gains], mean=mean, se=se, low=mean - half,
                high=None if one_sided else mean + half, one_sided=one_sided,
                wins=sum(g > 0 for g in gains), seeds=n)


def check_order(results):
    """Is each net of ORDER better in mean IU than the one before it? It is
    when the one-sided lower confidence bound of its mean per-seed gain is
    above zero (with one seed, when the gain is positive)."""
    checks = []
    for worse, better in zip(ORDER, ORDER[1:]):
        gain = paired_gain(results, worse, better, one_sided=True)
        holds = gain['low'] > 0 if gain['seeds'] > 1 else gain['mean'] > 0
        checks.append(dict(gain, worse=worse, better=better, holds=bool(holds)))
    return checks


def format_gain(g):
    """'+7.6 (per seed +9.9, +9.2, +3.6; standard error 2.0; 95% lower bound
    +1.8)' in mean IU points (or '95% interval -0.8 to +1.2' if two-sided)."""
    text = f"{100 * g['mean']:+.1f} (per seed {', '.join(f'{100 * x:+.1f}' for x in g['gains'])}"
    if g['seeds'] > 1:
        text += f"; standard error {100 * g['se']:.1f}; {100 * CONFIDENCE:.0f}% "
        text += (f"lower bound {100 * g['low']:+.1f}" if g['one_sided'] else
                 f"interval {100 * g['low']:+.1f} to {100 * g['high']:+.1f}")
    return text + ')'


def format_rows(head, rows, markdown=False):
    """A table as Markdown or as aligned text (first column left-aligned)."""
    if markdown:
        return '\n'.join(['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
                         + ['| ' + ' | '.join(r) + ' |' for r in rows])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    return '\n'.join('  '.join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))) for r in [head] + rows)


def format_table(summary, results, markdown=False):
    """The paper's Table 2 layout: percent, mean ± standard deviation over seeds."""
    n = len(results)
    rows = [[stage.title] + [f"{100 * summary[stage.folder][key]['mean']:.1f}"
                             + (f" ± {100 * summary[stage.folder][key]['std']:.1f}" if n > 1 else '')
                             for key, _ in METRICS]
            for stage in trained_stages(results)]
    return format_rows(['net'] + [name for _, name in METRICS], rows, markdown)


def format_seeds(results, markdown=False):
    """Mean IU (%) of every net for every seed, and the seed's training time."""
    stages = trained_stages(results)
    head = ['seed'] + [s.title for s in stages] + ['seconds']
    rows = [[str(r['seed'])] + [f"{100 * r['metrics'][s.folder]['mean_iu']:.1f}" for s in stages]
            + [f"{r['seconds']['total']:.0f}"]
            for r in results]
    return format_rows(head, rows, markdown)


def format_checks(checks):
    return '\n'.join(
        f"{TITLES[c['worse']]} < {TITLES[c['better']]}: mean IU {format_gain(c)}: "
        + ('holds' if c['holds'] else 'NOT shown (the lower bound is not above zero)')
        for c in checks)


def plot_curves(results, path):
    """Training loss and val mean IU of every net (first seed) against the
    iterations since the classifier: FCN-16s and FCN-8s continue where the
    stage they start from ended."""
    import matplotlib  # deferred: a second to load, and only plotting needs it
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    curves = results[0]['curves']
    offset = {'classifier': 0}
    fig, (ax_loss, ax_iu) = plt.subplots(1, 2, figsize=(11, 4))
    for stage in STAGES:
        records = curves[stage.folder]
        start = offset[stage.start]
        offset[stage.folder] = start + max(r['iteration'] for r in records)
        loss = [(start + r['iteration'], r['loss']) for r in records if r.get('loss') is not None]
        iu = [(start + r['iteration'], 100 * r['metrics']['score']['mean_iu']) for r in records
              if r.get('metrics') and r['metrics']['score']['mean_iu'] is not None]
        if loss:
            ax_loss.plot(*zip(*loss), label=stage.title)
        if iu:
            ax_iu.plot(*zip(*iu), 'o-', label=stage.title)
    ax_loss.set(xlabel='iterations since the classifier', ylabel='training loss (per pixel)',
                title='training loss')
    ax_iu.set(xlabel='iterations since the classifier', ylabel='val mean IU (%)',
              title='val mean IU')
    ax_loss.legend(fontsize=8)
    ax_iu.legend(fontsize=8)
    fig.suptitle(f"mini-reproduction, training seed {results[0]['seed']}: staged FCN-32s -> 16s -> 8s, "
                 'and the nets trained from the classifier in one go')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figure_image(voc_dir, ids):
    """The val image the figure shows: the first with a thin-part class and
    at least two object classes (the kind of scene where strides differ)."""
    thin = [synthetic.CLASSES.index(c) for c in ('ring', 'cross')]
    for idx in ids:
        label = layers.load_voc_label(datasets.voc_label(voc_dir, idx),
                                      len(synthetic.CLASSES))
        present = set(np.unique(label).tolist()) - {0, 255}
        if len(present) >= 2 and present & set(thin):
            return idx
    return ids[0]


def predictions(out, voc_dir, idx, stage_folders):
    """{stage folder: H x W labels} of a val image by each net's deploy net."""
    rgb = layers.load_image(datasets.voc_image(voc_dir, idx))
    preds = {}
    for name in stage_folders:
        model = nets.load(os.path.join(out, name))
        net = caffe.Net(locations.deploy_prototxt(model.folder), caffe.TEST,
                        weights=latest_weights(model.folder))
        preds[name] = infer.segment(net, rgb, model.source.mean)
    return rgb, preds


def plot_figure4(out, voc_dir, idx, path):
    """The paper's Figure 4 layout: image, ground truth, 32s, 16s, 8s."""
    import matplotlib  # deferred: a second to load, and only plotting needs it
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    palette = datasets.voc_palette()
    shown = ('fcn32s', 'fcn16s', 'fcn8s')
    rgb, preds = predictions(out, voc_dir, idx, shown)
    gt = layers.load_voc_label(datasets.voc_label(voc_dir, idx),
                               len(synthetic.CLASSES))
    panels = [('image', rgb), ('ground truth', palette[gt])] + \
        [(TITLES[name], palette[preds[name]]) for name in shown]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 2.8))
    for ax, (title, im) in zip(axes, panels):
        ax.imshow(im, interpolation='nearest')
        ax.set_title(title, fontsize=10)
        ax.axis('off')
    fig.suptitle(f'val image {idx}: refining fully convolutional nets (cf. the paper\'s Figure 4)',
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_bounds(bounds, markdown=False):
    """score.upper_bounds' metrics (%) for each output stride."""
    rows = [[str(factor)] + [f"{100 * by_gt['label'][key]:.1f}" for key, _ in METRICS]
            for factor, by_gt in bounds['factors'].items()]
    return format_rows(['output stride'] + [name for _, name in METRICS], rows, markdown)


def ablation_findings(results, bounds):
    """For each ablation trained, and for the stride upper bounds: what the
    papers found, and whether it shows here: [{'name', 'paper', 'here',
    'shows', ...figures}]."""
    findings = []
    for stage in ABLATIONS:
        if stage.folder not in results[0]['metrics']:
            continue
        gain = paired_gain(results, stage.baseline, stage.folder)
        # "No significant difference": the interval of the gain holds zero
        same = gain['seeds'] > 1 and gain['low'] <= 0 <= gain['high']
        here = f"mean IU {format_gain(gain)} against {TITLES[stage.baseline]}"
        finding = dict(name=stage.folder, title=stage.title, paper=PAPER_FINDINGS[stage.folder],
                       gain=gain, shows=same)
        if stage.loss_sampling < 1:  # the finding is also about time
            # Compute time (CPU seconds): wall time on a shared machine
            # depends on what else runs meanwhile
            ratio = float(np.mean([r['cpu_seconds'][stage.folder] / r['cpu_seconds'][stage.baseline]
                                   for r in results]))
            finding.update(time_ratio=ratio, shows=same and ratio > 1)
            here += (f'; compute time {ratio:.2f} times {TITLES[stage.baseline]}\'s '
                     f'({1 / stage.loss_sampling:g} images a step)')
        finding['here'] = here
        findings.append(finding)
    # The upper bounds: finer strides allow more, and each net stays below its stride's bound
    ious = {s.stride: float(np.mean([r['metrics'][s.folder]['mean_iu'] for r in results]))
            for s in STAGES if s.folder in ('fcn32s', 'fcn16s', 'fcn8s')}
    limits = {f: b['label']['mean_iu'] for f, b in bounds['factors'].items()}
    rising = [limits[f] for f in sorted(limits, reverse=True)]
    below = all(ious[f] < limits[f] for f in ious if f in limits)
    findings.append(dict(
        name='upper-bounds', title='Upper bounds from the output stride',
        paper='a coarse output stride bounds mean IU well above what the nets reach (pixel-perfect '
              'prediction is not needed for a high mean IU), and finer strides raise the bound',
        here='bounds ' + ', '.join(f'{100 * limits[f]:.1f} at stride {f}'
                                   for f in sorted(limits, reverse=True))
             + '; nets ' + ', '.join(f'FCN-{f}s {100 * ious[f]:.1f}' for f in sorted(ious, reverse=True)),
        shows=bool(below and rising == sorted(rising)), bounds=limits, nets=ious))
    return findings


def format_findings(findings):
    return '\n'.join(f"{f['title']}: paper: {f['paper']}. Here: {f['here']}: "
                     + ('shows' if f['shows'] else 'does NOT show') for f in findings)


def write_report(out, results, schedule, elapsed, data_seed, mean, bounds, cpu_seconds, blas,
                 classifier):
    """results.json and table.md; returns (summary, checks, findings)."""
    summary = summarize(results)
    checks = check_order(results)
    findings = ablation_findings(results, bounds)
    seeds = [r['seed'] for r in results]
    report = dict(seeds=seeds, data_seed=data_seed, mean_bgr=mean, schedule=schedule.__dict__,
                  trunk=TRUNK, trunk_width=TRUNK_WIDTH, classifier_filler=TRUNK_FILLER,
                  fcn_solver=FCN_SOLVER, fcn_lr=FCN_LR,
                  momentum=FCN_MOMENTUM, at_once_scales=AT_ONCE_SCALES, summary=summary,
                  fcn_lr_decay_power=FCN_LR_DECAY_POWER, confidence=CONFIDENCE,
                  checks=checks, findings=findings, seconds=round(elapsed, 1),
                  cpu_seconds=round(cpu_seconds, 1), blas=blas, load_average=os.getloadavg(),
                  classifier_val_accuracy=classifier['val_accuracy'],
                  classifier_losses=classifier['losses'],
                  upper_bounds={f: {k: b['label'][k] for k, _ in METRICS}
                                for f, b in bounds['factors'].items()},
                  per_seed=[{k: v for k, v in r.items() if k != 'curves'} for r in results])
    with open(os.path.join(out, 'results.json'), 'w') as f:
        json.dump(outputs.jsonable(report), f, indent=1)
    n = len(results)
    spread = (f'mean ± standard deviation over {n} training seeds ({", ".join(map(str, seeds))})'
              if n > 1 else f'training seed {seeds[0]}')
    s = schedule
    md = [
        '# FCN mini-reproduction (synthetic data, CPU)', '',
        f'Metrics in % on the val scenes, {spread}; the layout of the paper\'s Table 2. '
        f'Written by `python minirepro.py` (`make demo`) in {elapsed / 60:.1f} min '
        f'({cpu_seconds / 60:.1f} min of CPU time).', '',
        format_table(summary, results, markdown=True), '',
        '## The paper\'s ordering (mean IU)', '',
        'Each step is judged on its gain seed by seed (within a seed the nets saw the scenes in '
        'one order, and the finer net continues the coarser one): it holds when the one-sided '
        f'{100 * CONFIDENCE:.0f}% lower confidence bound of the mean gain (Student\'s t over the '
        'seeds) is above zero.', '',
        *[f'- {line}' for line in format_checks(checks).splitlines()], '',
        *(['## The papers\' ablations (`--ablations`)', '',
           'Each trained as FCN-32s is, from the same classifier, and compared with it seed by '
           'seed; "no significant difference" means the interval of the gain holds zero.', '',
           *[f'- {line}' for line in format_findings(findings[:-1]).splitlines()], '']
          if len(findings) > 1 else []),
        '## Mean IU per training seed', '', format_seeds(results, markdown=True), '',
        '## Upper bounds from the output stride', '',
        'The val ground truth coarsened to each stride (`score.py --upper-bound`: each cell '
        'takes its most frequent class), scored as a prediction: what a net of that stride '
        'could reach at best.', '', format_bounds(bounds, markdown=True), '',
        f'- {format_findings(findings[-1:])}', '',
        '## Set-up', '',
        f'- Data (`data/`, data seed {data_seed}): {s.train_scenes} train and {s.val_scenes} val '
        f'scenes in the PASCAL VOC layout, classes {", ".join(synthetic.CLASSES)}; '
        f'{s.crops_train} + {s.crops_val} classification crops (synthetic.py).',
        f'- "ILSVRC" stage (`classifier/`, one for every seed): VGG16 at width '
        f'1/{1 / TRUNK_WIDTH:g} with fully connected fc6/fc7, {TRUNK_FILLER} initialisation, '
        f'{s.classifier_iter} Adam steps of {s.classifier_batch} crops at lr {s.classifier_lr:g} '
        f'decaying to zero; {100 * classifier["val_accuracy"]:.1f}% right on the val crops; '
        'convolutionalized by `surgery.convolutionalize` (surgery.log).',
        f'- FCNs (`seed-N/<net>/`, model folders with net.py, trained by training.py): Adam, '
        f'normalized loss, one scene a step; lr {FCN_LR:g} at the start of every stage, decaying '
        f'to zero over its run (power {FCN_LR_DECAY_POWER:g}). Iterations: FCN-32s-fixed '
        f'{s.fixed_iter}, FCN-32s '
        f'{s.first_iter}, FCN-16s and FCN-8s {s.refine_iter} each, all-at-once FCN-8s '
        f'{s.atonce_iter}. Why Adam: FCN_SOLVER in minirepro.py.',
        '- Seeds vary the FCNs\' training: each seed sees the train scenes in its own order '
        '(`train-seed-N.txt`); all start from the one classifier, as the paper\'s nets start '
        'from one ILSVRC net.',
        f'- All-at-once FCN-8s: skip scales {AT_ONCE_SCALES[0]:g} (pool4) and '
        f'{AT_ONCE_SCALES[1]:g} (pool3), not the published 0.01 and 0.0001, which keep this '
        "narrow trunk's skips silent for the few hundred steps it trains (FCN-32s' level): "
        'AT_ONCE_SCALES in minirepro.py.', '',
        'Files: curves.png (training curves, first seed), figure4.png (a val image, its ground '
        'truth and the 32s/16s/8s predictions, cf. the paper\'s Figure 4), infer/ (infer.py on '
        'that image), results.json (everything above, per seed and per net), '
        f'seed-N/<net>/{training.SNAPSHOT_DIR}/report.html (a net\'s evaluation report at its '
        'last scoring: per-class IU, confusion matrix, worst and best val scenes; report.py).', '']
    with open(os.path.join(out, 'table.md'), 'w') as f:
        f.write('\n'.join(md))
    return summary, checks, findings


# --------------------------------------------------------------- command
def parse_args(argv):
    parser = cli.ArgumentParser(prog='minirepro.py', description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default=os.path.join('out', 'minirepro'), help='output folder')
    parser.add_argument('--seed', type=cli.number(int, minimum=0), default=0, help='first training seed')
    parser.add_argument('--seeds', type=cli.number(int, minimum=1), default=3,
                        help='how many training seeds (seed, seed+1, ...)')
    parser.add_argument('--data-seed', type=cli.number(int, minimum=0), default=0,
                        help='seed of the synthetic data set')
    parser.add_argument('--jobs', type=cli.number(int, minimum=1),
                        help='seeds trained at once, one process each (default: all)')
    parser.add_argument('--quick', action='store_true',
                        help='a few iterations on a few images (tests the plumbing only)')
    parser.add_argument('--ablations', action='store_true',
                        help="also train the papers' ablations (learned upsampling, loss sampling, "
                             'sigmoid loss) and compare each with FCN-32s: about twice the CPU '
                             'time of the run without them')
    return parser.parse_args(argv)


def blas_info():
    """OpenBLAS's kernel family and thread count in this process (what makes
    one machine's rounding differ from another's), if Caffe links OpenBLAS."""
    try:
        lib = ctypes.CDLL('libopenblas.so.0')
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return dict(core=lib.openblas_get_corename().decode(), threads=int(lib.openblas_get_num_threads()))
    except (OSError, AttributeError):
        return {}


def cpu_time():
    """CPU seconds of this process and its finished children (the seeds' workers)."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                   resource.getrusage(resource.RUSAGE_CHILDREN)))


def main(argv=None):
    """The command: its work through the one runner (cli.run): a signal or
    an error ends it in one line."""
    args = parse_args(argv)
    return cli.run('minirepro.py', lambda: reproduce(args),
                   lambda e: f'what was written so far stays in {os.path.abspath(args.out)}')


def reproduce(args):
    """The mini-reproduction for parsed arguments; returns (summary,
    checks, findings)."""
    outputs.writable_dir(args.out, '--out')  # before any work, as every command's outputs
    # Each line as it comes, in order with the workers' (a piped log too).
    if hasattr(sys.stdout, 'reconfigure'):  # a real stream (not a test's capture)
        sys.stdout.reconfigure(line_buffering=True)
    schedule = QUICK if args.quick else FULL
    stages = STAGES + ABLATIONS if args.ablations else STAGES
    out = os.path.abspath(args.out)
    seeds = list(range(args.seed, args.seed + args.seeds))
    workers = min(args.jobs or len(seeds), len(seeds))
    blas = blas_info()
    print(f'mini-reproduction: data seed {args.data_seed}, training seeds {seeds} '
          f'({workers} at a time), output {out}'
          + (f"; OpenBLAS {blas['core']} kernels, {blas['threads']} thread(s)" if blas else ''))
    t0 = time.time()
    # One data set for every seed, as a benchmark is: the seeds vary the training.
    data_dir = os.path.join(out, 'data')
    _, _, mean = synthetic.write(data_dir, args.data_seed, schedule.train_scenes, schedule.val_scenes,
                                 schedule.crops_train, schedule.crops_val)
    print(f'data: {schedule.train_scenes} train and {schedule.val_scenes} val scenes, '
          f'{schedule.crops_train} crops in {time.time() - t0:.0f} s')
    # One classifier for every seed, as the paper fine-tunes one ILSVRC net:
    # the seeds vary the FCNs' training (the order of the scenes).
    t = time.time()
    print(f'classifier: {schedule.classifier_iter} steps of {schedule.classifier_batch} crops, then '
          f'{len(seeds)} seed(s) x {len(stages)} nets (a line as each net is done)')
    classifier = train_classifier(os.path.join(out, 'classifier'), os.path.join(data_dir, 'crops'),
                                  mean, args.data_seed, schedule, args.quick)
    print(f"classifier: {100 * classifier['val_accuracy']:.1f}% right on the val crops; "
          f'{time.time() - t:.0f} s')
    jobs = [(seed, os.path.join(out, f'seed-{seed}'), data_dir, mean, classifier['fcn_weights'], schedule,
             stages) for seed in seeds]
    for job in jobs:
        os.makedirs(job[1], exist_ok=True)
    results = []
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn')) as pool:
            for result in pool.map(_run_seed_quietly, jobs):
                print(f"seed {result['seed']}: done in {result['seconds']['total']:.0f} s")
                results.append(result)
    else:
        for job in jobs:
            results.append(run_seed(*job[:6], quiet=args.quick, stages=stages))
            print(f"seed {job[0]}: done in {results[-1]['seconds']['total']:.0f} s")

    first = jobs[0][1]
    plot_curves(results, os.path.join(out, 'curves.png'))
    voc_dir = os.path.join(data_dir, 'voc')
    idx = figure_image(voc_dir, layers.read_split(datasets.voc_split(voc_dir, 'val')))
    plot_figure4(first, voc_dir, idx, os.path.join(out, 'figure4.png'))
    infer.run([datasets.voc_image(voc_dir, idx)], model=os.path.join(first, 'fcn8s'),
              weights=latest_weights(os.path.join(first, 'fcn8s')), out=os.path.join(out, 'infer'),
              progress=False)
    # What each output stride could reach at best (the paper's upper bounds)
    bounds = score.upper_bounds(os.path.join(first, 'fcn8s'), UPPER_BOUND_STRIDES, progress=False)
    elapsed, cpu = time.time() - t0, cpu_time()
    summary, checks, findings = write_report(out, results, schedule, elapsed, args.data_seed, mean,
                                             bounds, cpu, blas, classifier)

    print()
    print(format_table(summary, results))
    print()
    print(format_seeds(results))
    print()
    print(format_checks(checks))
    print()
    print(format_bounds(bounds))
    print()
    print(format_findings(findings))
    print(f'\n{elapsed / 60:.1f} min ({cpu / 60:.1f} min of CPU time); wrote {out}/table.md, '
          'results.json, curves.png, figure4.png, infer/; the FCN-8s\'s evaluation report: '
          + os.path.join(first, 'fcn8s', training.SNAPSHOT_DIR, 'report.html'))
    return summary, checks, findings


if __name__ == '__main__':
    main()
