"""Scoring segmentation nets: run a model folder's evaluation net over a
split and measure it with the FCN paper's four metrics (common/metrics.py
holds the arithmetic; fast_hist and metrics are re-exported here, where the
reference release's scripts find them). A head's classes and the classes a
split lacks come from the model's dataset (nets.Head: classes, absent).

The command evaluates a model folder's val/test net on a split:

    python score.py --model voc-fcn8s --weights W --split seg11valid \\
        [--gpu N] [--save-dir D] [--json out.json] [--limit N] [--engine caffe|onnx|openvino]
        [--precision bf16|f32]
        [--ray ADDRESS]

It scores the images the net's data layer (layers.py) lists for the split,
in file order (--limit: the first N), every head the net has (SIFT Flow:
semantic and geometric), and prints the paper's table. A score or loss that
is not finite (NaN weights are refused before that) stops it with an error
naming the image, not a table; predictions and --json are written whole and
never over a file the net reads; Ctrl-C or SIGTERM stops it in one line. --engine onnx
(or another engine of engines.py) computes the scores with the folder's
deploy net in that engine (ONNX Runtime or OpenVINO at --precision: exported
once, onnx_engine.py, openvino_engine.py), fed by the evaluation net's data layer in
Caffe: the published numbers, checked on the exported model; the deploy net
has no loss layer, so the loss is computed from its scores as the evaluation
net's SoftmaxWithLoss layer computes it in Caffe.
--ray ADDRESS scores each image on a worker of a Ray cluster (cluster.py,
docs/cluster.md) and sums the confusion matrices here: the same table,
--json and --report.

    python score.py --model voc-fcn8s --upper-bound 8 16 32 [--split S] [--limit N]

scores no net but the ground truth itself, coarsened to each output stride
(metrics.coarsen): the upper bounds on the metrics that the stride allows
(the PAMI paper's ablation; no weights needed).
"""
import contextlib
import functools
import json
import math
import os
import tempfile
from datetime import datetime

import numpy as np

from common import caffe_setup, cli

if __name__ == '__main__':
    cli.quit_while_starting('score.py')  # until main() handles signals
caffe_setup.quiet_caffe_log()  # before layers imports caffe

import caffe  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402
from google.protobuf import text_format  # noqa: E402

import cluster  # noqa: E402
import engines  # noqa: E402
import layers  # noqa: E402
import nets  # noqa: E402
import loading  # noqa: E402
import report  # noqa: E402
from common import datasets, locations, outputs, weightfiles  # noqa: E402
from common.progress import Progress  # noqa: E402
from common.metrics import METRICS, class_note, coarsen, fast_hist, metrics  # noqa: E402,F401 (the release's score.fast_hist)
from fetch.install import fetch_hint  # noqa: E402
from nets.sources import source_of_data_layer  # noqa: E402


class NonFiniteError(ValueError):
    """The net's scores or loss are NaN or infinite: its metrics would be
    garbage (argmax of NaN is class 0)."""


def check_finite(net, idx, layer, loss):
    """A NonFiniteError naming the blob, the image and the value if the
    score blob `layer` or the loss blob `loss` (where the net has it) holds
    a NaN or an infinity after a forward pass."""
    if loss in net.blobs and not math.isfinite(net.blobs[loss].data.flat[0]):
        raise NonFiniteError(f'the loss ({loss}) is {net.blobs[loss].data.flat[0]} at image {idx}')
    if not np.isfinite(net.blobs[layer].data[0]).all():
        raise NonFiniteError(f'the scores ({layer}) are not finite at image {idx}')


def save_prediction(path, pred):
    """A prediction PNG, written whole (through a temporary file)."""
    with outputs.atomic_path(path, 'the prediction') as tmp:
        datasets.save_label_png(tmp, pred)


def compute_hists(net, dataset, heads, on_image=None, finite=False):
    """Run net.forward() once per id in `dataset`, scoring every head, a
    (score blob, ground-truth blob, loss blob, prediction folder or None).

    Returns [(hist, mean loss)] in the order of `heads` (mean loss nan
    where the net has no such loss blob). Predictions are argmax over
    channels of image 0, saved as `<folder>/<id>.png` where one is given.
    `on_image(net, id, [(label, prediction, the image's hist)] per head)`,
    if given, sees every image (report.py's Collector); the label is the
    blob's, overwritten by the next forward. With `finite`, a score or loss that is not finite stops the scoring
    (check_finite). An interruption (KeyboardInterrupt, cli.Interrupted)
    propagates with `done` set on it: the images scored.
    """
    hists = []
    for layer, _, _, save_dir in heads:
        n_cl = net.blobs[layer].channels
        hists.append(np.zeros((n_cl, n_cl), dtype=np.int64))
        if save_dir:
            os.makedirs(save_dir, exist_ok=True)
    losses = np.zeros(len(heads))
    count = 0
    try:
        for idx in dataset:
            net.forward()
            if finite:
                for layer, _, loss, _ in heads:
                    check_finite(net, idx, layer, loss)
            per_image = []
            for layer, gt, _, _ in heads:
                pred = net.blobs[layer].data[0].argmax(axis=0)
                label = net.blobs[gt].data[0, 0]
                per_image.append((label, pred, fast_hist(label, pred, net.blobs[layer].channels)))
            if on_image:
                on_image(net, idx, per_image)
            # An image counts whole: its predictions (of every head) saved
            # and counted together, a signal held back meanwhile.
            with cli.signals_deferred():
                for (_, _, _, save_dir), hist, (_, pred, image_hist) in zip(heads, hists, per_image):
                    hist += image_hist
                    if save_dir:
                        save_prediction(os.path.join(save_dir, f'{idx}.png'), pred)
                losses += [net.blobs[loss].data.flat[0] if loss in net.blobs else math.nan
                           for _, _, loss, _ in heads]
                count += 1
    except KeyboardInterrupt as e:
        e.done = count
        raise
    losses = losses / count if count else np.full(len(heads), math.nan)
    return [(hist, float(loss)) for hist, loss in zip(hists, losses)]


def compute_hist(net, save_dir, dataset, layer='score', gt='label', loss='loss', on_image=None):
    """(confusion matrix, mean loss) of one head over `dataset` (a list of ids)."""
    return compute_hists(net, dataset, [(layer, gt, loss, save_dir or None)], on_image)[0]


def seg_tests(solver, save_format, dataset, layer='score', gt='label', loss='loss',
              class_names=None, exclude=(), on_image=None):
    """Score the solver's current weights with its first test net."""
    print('>>>', datetime.now(), 'Begin seg tests')
    solver.test_nets[0].share_with(solver.net)
    return do_seg_tests(solver.test_nets[0], solver.iter, save_format, dataset,
                        layer, gt, loss, class_names, exclude, on_image)


def do_seg_tests(net, iter, save_format, dataset, layer='score', gt='label', loss='loss',
                 class_names=None, exclude=(), on_image=None):
    """Score `net` over `dataset`, print the reference's '>>>' lines.

    `save_format` names the prediction folder, '{}' standing for `iter`, or
    is False/None for no saving; `on_image` as compute_hists takes it.
    Returns the `metrics` dict plus 'loss', 'iteration' and 'hist' (the
    confusion matrix).
    """
    save_dir = save_format.format(iter) if save_format else None
    hist, mean_loss = compute_hist(net, save_dir, dataset, layer, gt, loss, on_image)
    result = metrics(hist, class_names, exclude)
    for what, value in (('loss', mean_loss), ('overall accuracy', result['pixel_acc']),
                        ('mean accuracy', result['mean_acc']),
                        ('mean IU', result['mean_iu']), ('fwavacc', result['fw_iu'])):
        print('>>>', datetime.now(), 'Iteration', iter, what, value)
    result.update(loss=mean_loss, iteration=iter, hist=hist)
    return result


# --- evaluating a model folder ----------------------------------------------

# What scoring overrides in the data layer: every example once, in file
# order, unaugmented; prefetching only overlaps loading with the forward.
EVAL_PARAMS = dict(randomize=False, mirror=False, jitter=0, prefetch=True)


def data_layer(net_param):
    """The data layer of a NetParameter: its first Python layer from layers.py
    (module 'layers', or a name the reference release gives it)."""
    modules = ('layers',) + layers.RELEASE_MODULES
    for layer in net_param.layer:
        if layer.type == 'Python' and layer.python_param.module in modules:
            return layer
    raise ValueError(f'no Python data layer of module {" or ".join(map(repr, modules))}')


def eval_params(layer, split=None):
    """The data layer's params (defaults filled in) for scoring `split`
    (default: the prototxt's), validated by layers.py."""
    name = layer.python_param.layer
    cls = getattr(layers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, layers.SegDataLayerBase)):
        raise ValueError(f'{layer.name}: {name} is not a data layer of layers.py')
    params = layers.parse_params(layer.python_param.param_str, name, cls.required,
                                 {**layers.COMMON_DEFAULTS, **cls.defaults})
    if split:
        if 'split' not in params:
            raise ValueError(f'{layer.name}: {name} has no split (it reads its own list)')
        params['split'] = split
    return {**params, **EVAL_PARAMS}


def check_inputs(model_dir, layer, params):
    """Before a net is built: FileNotFoundError naming the first file the
    data layer reads before its first example (split file, list) that is
    missing, and the fetch command that gets it."""
    # The datasets as the model folder sees them (../data), wherever it is.
    data_root = os.path.normpath(os.path.join(model_dir, locations.DATA_FROM_MODEL))
    for path in getattr(layers, layer.python_param.layer).input_paths(params):
        full = os.path.normpath(os.path.join(model_dir, path))
        if not os.path.exists(full):
            hint = fetch_hint(full, data_root) or 'the data is not there'
            raise FileNotFoundError(f'missing {full}, which the data layer of '
                                    f'{os.path.basename(os.path.normpath(model_dir))} reads '
                                    f'(split {params.get("split", "-")}): {hint}')


def model_net(model):
    """A model folder's (directory, evaluation prototxt); `model` is a
    model's name (e.g. voc-fcn8s) or a path to its folder."""
    model_dir = locations.model_folder(model)
    return model_dir, locations.eval_prototxt(model_dir)


def model_heads(model_dir, layer):
    """The heads (nets.Head) of a model folder: its net.py's dataset's, else
    those of the dataset whose data layer its net reads (a folder holding
    only prototxts), else one unnamed head (a user's own data)."""
    if loading.has_net_py(model_dir):
        return loading.model(model_dir).source.heads
    source = source_of_data_layer(layer.python_param.layer)
    return source.heads if source else (nets.Head('', ()),)


def eval_net_param(model, split=None, allow_modules=()):
    """A model folder's evaluation net prepared for scoring `split`: (model
    folder, prototxt path, NetParameter with the data layer's params
    rewritten (split, EVAL_PARAMS), that data layer, its params). Loaded
    the one way (loading.py): net.py, the prototxt fresh against it and
    sound, its Python modules allowed."""
    model_dir, m = loading.folder_model(model)
    proto = locations.eval_prototxt(model_dir)
    net_param = loading.check_net(proto, allow=allow_modules)  # a typo named by its line first
    if m is not None:
        loading.check_fresh(m, [os.path.basename(proto)])
    layer = data_layer(net_param)
    params = eval_params(layer, split)
    check_inputs(model_dir, layer, params)
    layer.python_param.param_str = repr(params)
    return model_dir, proto, net_param, layer, params


@contextlib.contextmanager
def eval_net(net_param, model_dir, weights=None, name=''):
    """`net_param` (called `name` in messages) as a caffe.Net (TEST phase)
    with `weights` (an absolute path) checked and loaded, run with cwd = the
    model folder, since the data layer's paths are relative to it."""
    with tempfile.TemporaryDirectory() as tmp, locations.working_dir(model_dir):
        tmp_proto = os.path.join(tmp, 'net.prototxt')
        with open(tmp_proto, 'w') as f:
            f.write(text_format.MessageToString(net_param))
        net = caffe.Net(tmp_proto, caffe.TEST)
        if weights:
            weightfiles.load_weights(net, weights, net_name=name)
        yield net


def feeder_param(net_param, blobs):
    """The first layers of an evaluation NetParameter, up to those that
    produce all of `blobs` (the data layer; early fusion's Concat)."""
    feeder = caffe_pb2.NetParameter(name=net_param.name)
    produced = set()
    for lp in net_param.layer:
        if set(blobs) <= produced:
            break
        feeder.layer.add().CopyFrom(lp)
        produced |= set(lp.top)
    missing = set(blobs) - produced
    if missing:
        raise ValueError(f'the evaluation net produces no {", ".join(sorted(missing))} for '
                         'the deploy net\'s inputs')
    return feeder


class OutputBlob:
    """An engine's output where scoring reads a Caffe blob: its class count
    (known before the first run) and its last values."""

    def __init__(self, channels):
        self.channels = channels
        self.data = None


class FedEngine:
    """An engine (engines.Engine, running the deploy net) fed by `feeder`, a
    Caffe net of the evaluation net's data layers (inputs and labels), seen
    as the evaluation net that compute_hists runs: forward(), blobs (the
    feeder's and the engine's outputs, and the evaluation net's
    SoftmaxWithLoss losses computed as Caffe does) and layer_dict."""

    def __init__(self, feeder, engine, net_param):
        self.feeder = feeder
        self.engine = engine
        self.outputs = {name: OutputBlob(channels) for name, channels in engine.channels.items()}
        # (loss top, score bottom, label bottom, loss_param) of each loss the
        # engine's outputs and the feeder's labels allow
        self.losses = [(layer.top[0], *layer.bottom[:2], layer.loss_param)
                       for layer in net_param.layer
                       if layer.type == 'SoftmaxWithLoss' and len(layer.bottom) >= 2 and layer.top
                       and layer.bottom[0] in self.outputs and layer.bottom[1] in feeder.blobs]
        self.outputs.update({top: OutputBlob(1) for top, *_ in self.losses})
        self.blobs = {**feeder.blobs, **self.outputs}
        self.layer_dict = feeder.layer_dict

    def forward(self):
        self.feeder.forward()
        scores = self.engine.run({name: self.feeder.blobs[name].data for name in self.engine.inputs})
        for name, array in scores.items():
            self.outputs[name].data = array
        for top, score, label, loss_param in self.losses:
            self.outputs[top].data = np.array([softmax_loss(scores[score], self.feeder.blobs[label].data,
                                                            loss_param)], np.float32)


def softmax_loss(scores, labels, loss_param):
    """What Caffe's SoftmaxWithLoss layer outputs for N x C x H x W scores
    and N x 1 x H x W labels: the summed -log softmax probability of each
    pixel's label, pixels labelled ignore_label left out, divided as its
    normalization says (Caffe's default VALID: by the pixels counted; the
    release's `normalize: false`: by the batch size), at least by 1."""
    norm = caffe_pb2.LossParameter
    if loss_param.HasField('normalization'):
        normalization = loss_param.normalization
    elif loss_param.HasField('normalize'):
        normalization = norm.VALID if loss_param.normalize else norm.BATCH_SIZE
    else:
        normalization = norm.VALID
    scores = scores.astype(np.float64)
    labels = labels[:, 0].astype(np.int64)
    valid = np.ones(labels.shape, bool)
    if loss_param.HasField('ignore_label'):
        valid = labels != loss_param.ignore_label
    log_probs = scores - scores.max(axis=1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    n, _, h, w = scores.shape
    picked = np.take_along_axis(log_probs, np.where(valid, labels, 0)[:, None], axis=1)[:, 0]
    # Caffe floors each probability at FLT_MIN before the log
    loss = -np.maximum(picked, np.log(np.finfo(np.float32).tiny))[valid].sum()
    divisor = {norm.FULL: n * h * w, norm.VALID: valid.sum(), norm.BATCH_SIZE: n,
               norm.NONE: 1}[normalization]
    return loss / max(1.0, divisor)


@contextlib.contextmanager
def engine_net(engine, net_param, model_dir, weights, name, data, gpu=None, allow_modules=(),
               precision=None):
    """The net that scoring runs: for engine 'caffe' the evaluation net
    `net_param` itself (eval_net: its losses too, as the release scores);
    for any other engine of engines.ENGINES the model folder's deploy net
    in that engine, fed by the evaluation net's first layers in Caffe: the
    data layer `data` and any layer between it and the deploy net's inputs
    (early fusion's Concat). `precision`: the engine's (engines.PRECISIONS)."""
    engines.check_options(engine, {'precision': precision})
    if engine == 'caffe':
        with eval_net(net_param, model_dir, weights, name) as net:
            yield net
        return
    runner = engines.load(model_dir, weights, engine, gpu, allow_modules=allow_modules, precision=precision)
    feeder = feeder_param(net_param, set(data.top) | set(runner.inputs))
    with eval_net(feeder, model_dir) as net:
        yield FedEngine(net, runner, net_param)


def progress_bar(ids, model_dir, params, progress):
    """`ids`, each yielded as the one before is scored, counted by
    common.progress (a bar on a terminal, progress lines off one)."""
    bar = Progress(len(ids), f'{os.path.basename(model_dir)} {params.get("split") or ""}'.strip(),
                   'image', enabled=progress and len(ids) > 1)
    finished = False
    try:
        for image_id in ids:
            yield image_id
            bar.update()
        finished = True
    finally:
        bar.close(finished)


def evaluate(model, weights, split=None, save_dir=None, limit=None, progress=True,
             on_image=None, writes=(), engine='caffe', gpu=None, allow_modules=(), report_dir=None,
             precision=None, ray=None):
    """Score `weights` with a model folder's evaluation net on `split`.

    The data layer's params are rewritten (split, EVAL_PARAMS) in a temporary
    copy of the prototxt; the net runs with cwd = the model folder, since the
    data layer's paths are relative to it. The images scored are the data
    layer's own list of examples (its split file), the first `limit` of them.
    Returns {'model', 'weights', 'split', 'images', 'engine' (what ran the
    net: engines.Engine.describe()), 'heads': {score blob:
    metrics + 'loss', 'hist', 'excluded'}}, heads in compute_hists' order
    (`on_image` as it takes it). Caffe's mode is the caller's; `engine`
    'onnx' computes the scores in ONNX Runtime, 'openvino' in OpenVINO at
    `precision` (engine_net).
    Before the first image: no prediction (nor any of `writes`, (path,
    description) pairs of the caller's outputs) may overwrite a file the
    net reads or another output (outputs.OutputError). A score or loss that
    is not finite is a NonFiniteError naming the image, not metrics.
    An interruption propagates with `done` and `total` set on it.
    `ray`: a Ray cluster's address (cluster.py): each image is scored on a
    worker (ImageScorer, its net loaded the same way), the confusion
    matrices summed here (score_on_cluster).
    """
    model_dir, proto, net_param, layer, params = eval_net_param(model, split, allow_modules)
    weights = os.path.abspath(weights)
    if not os.path.isfile(weights):
        raise FileNotFoundError(f'weights not found: {weights}')
    save_dir = save_dir and os.path.abspath(save_dir)
    if save_dir:
        outputs.writable_dir(save_dir, '--save-dir')

    all_heads = model_heads(model_dir, layer)
    with engine_net(engine, net_param, model_dir, weights, proto, layer, gpu, allow_modules,
                    precision) as net:
        described = net.engine.describe() if isinstance(net, FedEngine) else \
            {'engine': 'caffe', 'device': 'cpu' if gpu is None else f'gpu {gpu}'}
        ids = [layers.example_id(e) for e in net.layer_dict[layer.name].examples[:limit]]
        heads = [h for h in all_heads if h.score in net.blobs and h.label in net.blobs]
        if not heads:
            raise ValueError(f'{proto}: no score/label blob pair among '
                             f'{[(h.score, h.label) for h in all_heads]}')
        save_dirs = [save_dir if len(heads) == 1 else os.path.join(save_dir, h.score)
                     for h in heads] if save_dir else [None] * len(heads)
        predictions = [(os.path.join(d, f'{i}.png'), f'the prediction of {i}')
                       for d in save_dirs if d for i in ids]
        reports = [(path, f'--report {report_dir} ({os.path.basename(path)})')
                   for path in report.output_files(report_dir, [h.score for h in heads])] \
            if report_dir else []
        outputs.guard(predictions + list(writes) + reports,
                      net_inputs(net.layer_dict[layer.name], ids, proto, weights))
        try:
            if ray:
                results = score_on_cluster(ray, model_dir, weights, params.get('split'), engine,
                                           save_dirs, ids, progress, net, on_image, allow_modules,
                                           precision)
            else:
                results = compute_hists(net, progress_bar(ids, model_dir, params, progress),
                                        [(h.score, h.label, h.loss, d) for h, d in zip(heads, save_dirs)],
                                        on_image, finite=True)
        except NonFiniteError as e:
            raise NonFiniteError(f'{e} (weights {weights}): weights of a diverged training run, '
                                 'or inputs the net overflows on; no metrics') from None
        except KeyboardInterrupt as e:
            e.total = len(ids)
            raise

    split = params.get('split')
    scored = {'model': os.path.basename(os.path.normpath(model_dir)), 'weights': weights,
              'split': split, 'images': len(ids), 'engine': described, 'heads': {}}
    for head, (hist, mean_loss) in zip(heads, results):
        result = head_metrics(hist, head, split)
        result['loss'] = mean_loss
        scored['heads'][head.score] = result
    return scored


def net_inputs(data_layer, ids, proto, weights=None):
    """(path, description) of the files scoring reads: the prototxt, the
    weights, the data layer's split file or lists, and each of the first
    len(ids) examples' files (the data layer's paths are relative to the
    current directory)."""
    net_py = os.path.join(os.path.dirname(proto), 'net.py')
    reads = [(proto, f'the net {proto}'), (net_py, f'the model\'s {net_py}')] + \
        ([(weights, f'the weights {weights}')] if weights else [])
    reads += [(os.path.abspath(path), f'the data layer\'s input {os.path.abspath(path)}')
              for path in data_layer.input_paths(data_layer.params)]
    for example in data_layer.examples[:len(ids)]:
        reads += [(os.path.abspath(path), f'the {top} file {os.path.abspath(path)}')
                  for top, path in data_layer.example_files(example).items()]
    return reads


# --- scoring spread over workers (cluster.py) -------------------------------

class ImageScorer:
    """One worker's share of an evaluation (a cluster.Pool factory:
    functools.partial(ImageScorer, model, weights, ...)): the model folder's
    evaluation net on `engine`, loaded once as evaluate() loads it, called
    with an image's position in the split's list. The data layer does not
    prefetch: each call seeks its own image. `save_dirs`: per head, where
    its predictions go (None: not saved), as evaluate() plans them. `maps`:
    also return the image's label and prediction maps (uint8), for the
    driver's on_image (--report)."""

    def __init__(self, model, weights, split=None, engine='caffe', save_dirs=None, maps=False,
                 allow_modules=(), precision=None):
        self.maps = maps
        model_dir, proto, net_param, layer, params = eval_net_param(model, split, allow_modules)
        layer.python_param.param_str = repr({**params, 'prefetch': False})
        # Kept open for the worker's life (its own process: the model
        # folder stays its working folder, as the data layer needs).
        self._net = contextlib.ExitStack()
        self.net = self._net.enter_context(
            engine_net(engine, net_param, model_dir, os.path.abspath(weights), proto, layer,
                       allow_modules=allow_modules, precision=precision))
        self.data = self.net.layer_dict[layer.name]
        heads = [h for h in model_heads(model_dir, layer)
                 if h.score in self.net.blobs and h.label in self.net.blobs]
        save_dirs = save_dirs or [None] * len(heads)
        self.heads = [(h.score, h.label, h.loss, d) for h, d in zip(heads, save_dirs)]

    def __call__(self, position):
        """[(the image's confusion matrix, its loss or nan)] per head, for the
        image at `position` (with `maps`: (hist, loss, label, prediction));
        its predictions saved where planned. A score or loss that is not
        finite is a NonFiniteError naming the image."""
        self.data.seek(position)
        maps = []

        def keep(net, idx, per_head):  # copies: the blobs change with the next image
            maps.extend((np.array(label, np.uint8), np.array(pred, np.uint8))
                        for label, pred, _ in per_head)
        results = compute_hists(self.net, [layers.example_id(self.data.examples[position])],
                                self.heads, finite=True, on_image=keep if self.maps else None)
        return [r + m for r, m in zip(results, maps)] if self.maps else results


def score_on_cluster(address, model_dir, weights, split, engine, save_dirs, ids, progress=True,
                     net=None, on_image=None, allow_modules=(), precision=None):
    """compute_hists' [(hist, mean loss)] per head for the images `ids`
    (the first len(ids) of the split), each scored on a worker of the Ray
    cluster `address`. `on_image` (with the driver's `net`, as compute_hists
    calls it) sees the images in order, as each one's predecessors are in.
    An interruption propagates with `done` set on it."""
    per_image, waiting, shown = {}, {}, [0]

    def on_result(k, heads):
        per_image[k] = [head[:2] for head in heads]
        if on_image:
            waiting[k] = heads
            while shown[0] in waiting:
                heads = waiting.pop(shown[0])
                on_image(net, ids[shown[0]], [(label, pred, hist) for hist, _, label, pred in heads])
                shown[0] += 1

    for folder in save_dirs:
        if folder:
            os.makedirs(folder, exist_ok=True)  # the workers check they see it
    cluster.map_items(address, functools.partial(ImageScorer, os.path.abspath(model_dir), weights,
                                                 split, engine, save_dirs, on_image is not None,
                                                 tuple(allow_modules), precision),
                      list(range(len(ids))), on_result,
                      outputs_of=lambda k: [os.path.join(d, f'{ids[k]}.png') for d in save_dirs if d],
                      visible=[weights] + [d for d in save_dirs if d],
                      desc=f'{os.path.basename(os.path.normpath(model_dir))} {split or ""}'.strip(),
                      progress=progress)
    return sum_image_hists([per_image[k] for k in range(len(ids))])


def sum_image_hists(per_image):
    """[(hist, mean loss)] per head of ImageScorer results, given in image
    order: compute_hists' answer for the whole list (the same sums, in the
    same order)."""
    summed = []
    for head in zip(*per_image):
        hist, loss = np.zeros_like(head[0][0]), 0.0
        for image_hist, image_loss in head:  # in order, as compute_hists adds them
            hist += image_hist
            loss += image_loss
        summed.append((hist, loss / len(head)))
    return summed


def head_metrics(hist, head, split):
    """metrics() of one head's confusion matrix, its classes named and
    excluded as `head` (a nets.Head) has them for `split`; with 'hist' and
    'excluded'."""
    names = head.classes
    if len(names) != hist.shape[0]:
        names = None  # a net with other classes than its dataset's: number them
    exclude = head.excluded(split) if names else ()
    result = metrics(hist, names, exclude)
    result.update(hist=hist, excluded=list(exclude))
    return result


# --- upper bounds from the output stride (PAMI ablation) --------------------

def upper_bounds(model, factors, split=None, limit=None, progress=True, writes=(), allow_modules=()):
    """Mean IU etc. of coarsen()-ed ground truth for each output stride in
    `factors`, over the images a model folder's evaluation net lists for
    `split` (only its data layer runs: no weights), classes as the model's
    heads have them (model_heads). Returns {'model', 'split', 'images',
    'factors': {factor: {label top: metrics}}}."""
    factors = [int(f) for f in factors]
    if any(f < 1 for f in factors):
        raise ValueError(f'upper bound factors must be positive integers, got {factors}')
    model_dir, proto, _, layer, params = eval_net_param(model, split, allow_modules)
    labels_net = caffe_pb2.NetParameter()
    labels_net.layer.add().CopyFrom(layer)  # the data layer alone: its label tops
    split = params.get('split')
    heads = {h.label: h for h in model_heads(model_dir, layer) if h.label in layer.top}
    if not heads or not all(h.classes for h in heads.values()):
        raise ValueError(f'{proto}: no class names for the label tops of its '
                         f'{layer.python_param.layer}')
    classes = {gt: h.num_classes for gt, h in heads.items()}
    hists = {(f, gt): np.zeros((classes[gt],) * 2, np.int64) for f in factors for gt in heads}
    with eval_net(labels_net, model_dir) as net:
        ids = [layers.example_id(e) for e in net.layer_dict[layer.name].examples[:limit]]
        outputs.guard(writes, net_inputs(net.layer_dict[layer.name], ids, proto))
        done = 0
        try:
            for _ in progress_bar(ids, model_dir, params, progress):
                net.forward()
                for (factor, gt), hist in hists.items():
                    label = net.blobs[gt].data[0, 0].astype(np.int64)
                    hist += fast_hist(label, coarsen(label, factor, classes[gt]), classes[gt])
                done += 1
        except KeyboardInterrupt as e:
            e.done, e.total = done, len(ids)
            raise
    report = {'model': os.path.basename(os.path.normpath(model_dir)), 'split': split,
              'images': len(ids), 'factors': {}}
    for (factor, gt), hist in hists.items():
        report['factors'].setdefault(factor, {})[gt] = head_metrics(hist, heads[gt], split)
    return report


def metric_columns(result=None):
    """The table's four columns: their titles, or `result`'s values in %."""
    if result is None:
        return ''.join(f'{title:>12}' for _, title in METRICS)
    return ''.join(f'{100 * result[key]:>12.1f}' for key, _ in METRICS)


def format_upper_bounds(report):
    lines = [f"upper bounds from the output stride: {report['model']} ground truth on "
             f"{report['split']} ({report['images']} images), metrics in %",
             f"{'factor':<8}{'label':<8}" + metric_columns()]
    for factor, by_gt in report['factors'].items():
        for gt, r in by_gt.items():
            lines.append(f'{factor:<8}{gt:<8}' + metric_columns(r))
    return '\n'.join(lines)


def format_report(report):
    """The paper's table (percent), then per-class IU and accuracy."""
    lines = [f"{report['model']} on {report['split']} ({report['images']} images), "
             f"weights {report['weights']}, engine {engines.summary(report['engine'])}",
             f"{'head':<12}" + metric_columns() + f"{'loss':>14}   (metrics in %)"]
    for layer, r in report['heads'].items():
        lines.append(f'{layer:<12}' + metric_columns(r) + f"{r['loss']:>14.6g}")
    for layer, r in report['heads'].items():
        lines.append(f'\n{layer}: per class (%)    IU    acc.   pixels')
        for name, c in r['per_class'].items():
            note = class_note(name, c, r['excluded'])
            lines.append(f"  {name:<20}{100 * c['iu']:>6.1f}{100 * c['acc']:>7.1f}"
                         f"{c['pixels']:>10d}{'  ' + note if note else ''}")
    return '\n'.join(lines)


def main(argv=None):
    caffe_setup.quiet_caffe_log(argv)
    parser = cli.ArgumentParser(
        prog='score.py',
        description='Score a model folder\'s evaluation net on a dataset split '
                    '(pixel acc., mean acc., mean IU, f.w. IU).')
    cli.add_model_options(parser, model_required=True,
                          weights_help="caffemodel to score (default: the model's published weights, "
                                       'else its latest snapshot, as infer.py and export.py)')
    parser.add_argument('--upper-bound', type=cli.number(int, minimum=1), nargs='+', metavar='FACTOR',
                        help='score ground truth coarsened to these output strides instead '
                             'of a net (upper bounds; no --weights)')
    parser.add_argument('--split', help="split to score (default: the prototxt's)")
    parser.add_argument('--save-dir', help='write predictions as palette PNGs here')
    parser.add_argument('--json', help='write the metrics (fractions) here')
    parser.add_argument('--verbose', action='store_true', help="show Caffe's own log")
    parser.add_argument('--limit', type=cli.number(int, minimum=1),
                        help='score only the first N images')
    parser.add_argument('--report', metavar='DIR',
                        help='write report.html (self-contained), report.json and figures here')
    parser.add_argument('--report-images', type=cli.number(int, minimum=0), metavar='N',
                        help='the report shows the N worst and N best images (default 8)')
    cli.add_engine_options(parser, engines.ENGINES, 'compute the scores', precisions=engines.PRECISIONS)
    cli.add_cluster_options(parser, 'the images to score')
    args = parser.parse_args(argv)
    if args.weights and args.upper_bound:
        parser.error('--upper-bound scores coarsened ground truth: not with --weights')
    cli.check_engine_options(parser, args, engines.PRECISIONS)
    if args.upper_bound and args.save_dir:
        parser.error('--save-dir saves a net\'s predictions: not with --upper-bound')
    if args.upper_bound and args.report:
        parser.error('--report reports on a net\'s predictions: not with --upper-bound')
    if args.upper_bound and args.ray:
        parser.error('--ray scores a net on the workers: not with --upper-bound')
    cli.check_cluster_options(parser, args)

    cli.run('score.py', lambda: run(args), lambda e: interrupted_summary(e, args.save_dir))


def run(args):
    """The command's work for parsed arguments: check the outputs, score
    (a net, or the upper bounds), print the table, write --json and
    --report."""
    if args.engine == 'caffe':
        caffe_setup.use_device(args.gpu)
    collector = None
    if args.report:
        collector = report.Collector(report.DEFAULT_IMAGES if args.report_images is None
                                     else args.report_images)
    for path, option, check in ((args.json, '--json', outputs.writable_file),
                                (args.save_dir, '--save-dir', outputs.writable_dir),
                                (args.report, '--report', outputs.writable_dir)):
        if path:
            check(path, option)
    writes = [(args.json, '--json')] if args.json else []
    if args.upper_bound:
        scores = upper_bounds(args.model, args.upper_bound, args.split, args.limit, writes=writes,
                              allow_modules=args.allow_module)
    else:
        weights = args.weights or loading.default_weights(locations.model_folder(args.model), args.model)
        scores = evaluate(args.model, weights, args.split, args.save_dir, args.limit,
                          on_image=collector, writes=writes, engine=args.engine, gpu=args.gpu,
                          allow_modules=args.allow_module, report_dir=args.report,
                          precision=args.precision, ray=args.ray)
    print(format_upper_bounds(scores) if args.upper_bound else format_report(scores))
    if args.json:
        outputs.write_atomically(args.json, json.dumps(outputs.jsonable(scores), indent=1,
                                                       allow_nan=False), 'the --json report')
    if collector is not None:
        try:
            path = report.write(args.report, scores, dict(zip(scores['heads'], collector.outputs)))
        except OSError as e:
            raise OSError(f'--report {args.report}: {e.strerror or e}') from None
        print(f'report: {path}')


def interrupted_summary(interrupted, save_dir):
    """What an interrupted scoring did: images scored of all, where their
    predictions are; no table, no --json."""
    done = getattr(interrupted, 'done', None)
    if done is None:
        return 'stopped before scoring any image; nothing was written'
    saved = f', their predictions in {save_dir}' if save_dir and done else ''
    return (f'{done} of {interrupted.total} images scored{saved}; no metrics printed or '
            'written, no partial file')


if __name__ == '__main__':
    main()
