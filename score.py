"""Scoring segmentation nets: confusion matrices and the FCN paper's metrics.

With n_ij the pixels of class i predicted as j and t_i = sum_j n_ij:
  pixel accuracy   sum_i n_ii / sum_i t_i
  mean accuracy    mean over counted classes of n_ii / t_i
  mean IU          mean over counted classes of n_ii / (t_i + sum_j n_ji - n_ii)
  f.w. IU          sum_i t_i IU_i / sum_i t_i over counted classes
Metrics are fractions in [0, 1] everywhere in the API (dicts, JSON, the
'>>>' log lines); only the command's table prints percentages, as the paper.

Counted classes: a class with no ground-truth pixels (t_i = 0) has no
accuracy, and any stray prediction of it would give IU 0, so it is left out
of the means whether or not it is predicted; those stray predictions still
count, as misses of the pixels' true classes. Classes in an explicit
`exclude` list are treated as void: their ground-truth pixels leave every
metric (stray predictions of them still count against the true classes). A head's classes and the classes a split
lacks come from the model's dataset (nets.Head: classes, absent). SIFT
Flow's test set lacks cow, desert and moon: the reference release averaged
over all 33 classes and called its semantic scores "not quite right"; here
they do not count.

The command evaluates a model folder's val/test net on a split:

    python score.py --model voc-fcn8s --weights W --split seg11valid \\
        [--gpu N] [--save-dir D] [--json out.json] [--limit N] [--engine caffe|onnx]

It scores the images the net's data layer (layers.py) lists for the split,
in file order (--limit: the first N), every head the net has (SIFT Flow:
semantic and geometric), and prints the paper's table. --engine onnx
computes the scores with the folder's deploy net exported to ONNX
(onnx_engine.py) in ONNX Runtime, fed by the evaluation net's data layer in
Caffe: the published numbers, checked on the exported model (the deploy net
has no loss layer: the loss column is nan).

    python score.py --model voc-fcn8s --upper-bound 8 16 32 [--split S] [--limit N]

scores no net but the ground truth itself, coarsened to each output stride
(see coarsen): the upper bounds on the metrics that the stride allows (the
PAMI paper's ablation; no weights needed).
"""
import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
from datetime import datetime

import numpy as np
from PIL import Image

import checks
import datasets
import locations
import runtime


def fast_hist(a, b, n):
    """n x n confusion matrix of ground truth `a` (rows) vs prediction `b`.

    Pixels whose ground truth is outside [0, n) (void, 255) are ignored.
    A prediction outside [0, n) on a scored pixel raises ValueError.
    """
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f'fast_hist: {a.size} labels vs {b.size} predictions')
    k = (a >= 0) & (a < n)
    a, b = a[k].astype(np.int64), b[k].astype(np.int64)
    if b.size and (b.min() < 0 or b.max() >= n):
        raise ValueError(f'fast_hist: prediction outside [0, {n})')
    return np.bincount(n * a + b, minlength=n ** 2).reshape(n, n)


def _class_scores(hist):
    """Per-class (hits n_ii, pixels t_i, accuracy, IU) of a confusion matrix."""
    tp, gt, pred = np.diag(hist), hist.sum(1), hist.sum(0)
    with np.errstate(divide='ignore', invalid='ignore'):
        return tp, gt, tp / gt, tp / (gt + pred - tp)


def metrics(hist, class_names=None, exclude=()):
    """The paper's metrics (fractions) of confusion matrix `hist`.

    Returns {'pixel_acc', 'mean_acc', 'mean_iu', 'fw_iu', 'n_counted',
    'per_class': {name: {'iu', 'acc', 'pixels', 'counted'}}}, classes named
    by `class_names` (default '0', '1', ...). See the module docstring for
    which classes count; `exclude` holds class names, and an excluded class's
    per-class entry says what it would have scored. A class's 'iu' or 'acc'
    is nan where undefined; the means are nan if no class counts.
    """
    hist = np.asarray(hist, dtype=np.float64)
    n = hist.shape[0]
    names = [str(i) for i in range(n)] if class_names is None else list(class_names)
    if len(names) != n:
        raise ValueError(f'metrics: {len(names)} class names for {n} classes')
    unknown = set(exclude) - set(names)
    if unknown:
        raise ValueError(f'metrics: excluded classes not among the names: {sorted(unknown)}')
    excluded = np.isin(names, list(exclude))
    # excluded classes' ground truth is void: their rows leave the matrix
    tp, gt, acc, iu = _class_scores(np.where(excluded[:, None], 0, hist))
    counted = gt > 0
    pixels = gt.sum()
    if pixels:
        summary = dict(pixel_acc=tp.sum() / pixels, mean_acc=acc[counted].mean(),
                       mean_iu=iu[counted].mean(), fw_iu=(gt * iu)[counted].sum() / pixels)
    else:
        summary = dict.fromkeys(('pixel_acc', 'mean_acc', 'mean_iu', 'fw_iu'), math.nan)
    result = {k: float(v) for k, v in summary.items()}
    result['n_counted'] = int(counted.sum())
    _, gt, acc, iu = (np.where(excluded, whole, voided) for whole, voided
                      in zip(_class_scores(hist), (tp, gt, acc, iu)))
    result['per_class'] = {name: {'iu': float(iu[i]), 'acc': float(acc[i]),
                                  'pixels': int(gt[i]), 'counted': bool(counted[i])}
                           for i, name in enumerate(names)}
    return result


def save_prediction(label_map, path):
    """Write a class-index map as a PASCAL VOC palette PNG."""
    h, w = label_map.shape
    im = Image.frombytes('P', (w, h), np.ascontiguousarray(label_map, dtype=np.uint8).tobytes())
    im.putpalette(datasets.voc_palette().tobytes())
    im.save(path)


def compute_hists(net, dataset, outputs):
    """Run net.forward() once per id in `dataset`, scoring every output, a
    (score blob, ground-truth blob, loss blob, prediction folder or None).

    Returns [(hist, mean loss)] in the order of `outputs` (mean loss nan
    where the net has no such loss blob). Predictions are argmax over
    channels of image 0, saved as `<folder>/<id>.png` where one is given.
    """
    hists = []
    for layer, _, _, save_dir in outputs:
        n_cl = net.blobs[layer].channels
        hists.append(np.zeros((n_cl, n_cl), dtype=np.int64))
        if save_dir:
            os.makedirs(save_dir, exist_ok=True)
    losses = np.zeros(len(outputs))
    count = 0
    for idx in dataset:
        net.forward()
        for (layer, gt, _, save_dir), hist in zip(outputs, hists):
            pred = net.blobs[layer].data[0].argmax(axis=0)
            hist += fast_hist(net.blobs[gt].data[0, 0], pred, hist.shape[0])
            if save_dir:
                save_prediction(pred, os.path.join(save_dir, f'{idx}.png'))
        losses += [net.blobs[loss].data.flat[0] if loss in net.blobs else math.nan
                   for _, _, loss, _ in outputs]
        count += 1
    losses = losses / count if count else np.full(len(outputs), math.nan)
    return [(hist, float(loss)) for hist, loss in zip(hists, losses)]


def compute_hist(net, save_dir, dataset, layer='score', gt='label', loss='loss'):
    """(confusion matrix, mean loss) of one head over `dataset` (a list of ids)."""
    return compute_hists(net, dataset, [(layer, gt, loss, save_dir or None)])[0]


def seg_tests(solver, save_format, dataset, layer='score', gt='label', loss='loss',
              class_names=None, exclude=()):
    """Score the solver's current weights with its first test net."""
    print('>>>', datetime.now(), 'Begin seg tests')
    solver.test_nets[0].share_with(solver.net)
    return do_seg_tests(solver.test_nets[0], solver.iter, save_format, dataset,
                        layer, gt, loss, class_names, exclude)


def do_seg_tests(net, iter, save_format, dataset, layer='score', gt='label', loss='loss',
                 class_names=None, exclude=()):
    """Score `net` over `dataset`, print the reference's '>>>' lines.

    `save_format` names the prediction folder, '{}' standing for `iter`, or
    is False/None for no saving. Returns the `metrics` dict plus 'loss',
    'iteration' and 'hist' (the confusion matrix).
    """
    save_dir = save_format.format(iter) if save_format else None
    hist, mean_loss = compute_hist(net, save_dir, dataset, layer, gt, loss)
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
    """The data layer of a NetParameter: its first Python layer from layers.py."""
    for layer in net_param.layer:
        if layer.type == 'Python' and layer.python_param.module == 'layers':
            return layer
    raise ValueError("no Python data layer of module 'layers'")


def eval_params(layer, split=None):
    """The data layer's params (defaults filled in) for scoring `split`
    (default: the prototxt's), validated by layers.py."""
    import layers
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
    import layers
    from fetch.install import fetch_hint
    # The datasets as the model folder sees them (../data), wherever it is.
    data_root = os.path.normpath(os.path.join(model_dir, locations.DATA_FROM_MODEL))
    for path in getattr(layers, layer.python_param.layer).input_paths(params):
        full = os.path.normpath(os.path.join(model_dir, path))
        if not os.path.exists(full):
            hint = fetch_hint(full, data_root) or 'the data is not there'
            raise FileNotFoundError(f'missing {full}, which the data layer of '
                                    f'{os.path.basename(os.path.normpath(model_dir))} reads '
                                    f'(split {params.get("split", "-")}): {hint}')


def example_id(example):
    """A name for an example: its id, or for an (image, label) pair the image's stem."""
    if isinstance(example, str):
        return example
    return os.path.splitext(os.path.basename(example[0]))[0]


def model_net(model):
    """A model folder's (directory, evaluation prototxt).

    `model` is a model's name (e.g. voc-fcn8s) or a path to its folder; the
    prototxt is its val.prototxt (VOC, PASCAL-Context) or else test.prototxt
    (NYUD, SIFT Flow).
    """
    model_dir = model if os.path.isdir(model) else locations.model_dir(model)
    for proto in ('val.prototxt', 'test.prototxt'):
        if os.path.isfile(os.path.join(model_dir, proto)):
            return model_dir, os.path.join(model_dir, proto)
    raise FileNotFoundError(f'no val.prototxt or test.prototxt in {model_dir}')


def model_heads(model_dir, layer):
    """The heads (nets.Head) of a model folder: its net.py's dataset's, else
    those of the dataset whose data layer its net reads (a folder holding
    only prototxts), else one unnamed head (a user's own data)."""
    import nets
    from nets.sources import source_of_data_layer
    if os.path.isfile(os.path.join(model_dir, 'net.py')):
        return nets.load(model_dir).source.heads
    source = source_of_data_layer(layer.python_param.layer)
    return source.heads if source else (nets.Head('', ()),)


def eval_net_param(model, split=None):
    """A model folder's evaluation net prepared for scoring `split`: (model
    folder, prototxt path, NetParameter with the data layer's params
    rewritten (split, EVAL_PARAMS), that data layer, its params)."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    model_dir, proto = model_net(model)
    net_param = caffe_pb2.NetParameter()
    with open(proto) as f:
        text_format.Merge(f.read(), net_param)
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
    import caffe
    from google.protobuf import text_format
    with tempfile.TemporaryDirectory() as tmp, locations.working_dir(model_dir):
        tmp_proto = os.path.join(tmp, 'net.prototxt')
        with open(tmp_proto, 'w') as f:
            f.write(text_format.MessageToString(net_param))
        net = caffe.Net(tmp_proto, caffe.TEST)
        if weights:
            checks.load_weights(net, weights, net_name=name)
        yield net


ENGINES = ('caffe', 'onnx')


@contextlib.contextmanager
def engine_net(engine, net_param, model_dir, weights, name, data):
    """The net that scoring runs: the evaluation net `net_param` in Caffe
    (eval_net), or for engine 'onnx' the model folder's deploy net in ONNX
    Runtime (exported once, cached beside `weights`) fed by the evaluation
    net's first layers in Caffe: the data layer `data` and any layer
    between it and the deploy net's inputs (early fusion's Concat)."""
    if engine == 'caffe':
        with eval_net(net_param, model_dir, weights, name) as net:
            yield net
        return
    import onnx_engine  # deferred: ONNX Runtime loads only for this engine
    onnx_net = onnx_engine.load(model_dir, weights)
    feeder = onnx_engine.feeder_param(net_param, set(data.top) | set(onnx_net.inputs))
    with eval_net(feeder, model_dir) as net:
        yield onnx_engine.FedNet(net, onnx_net)


def progress_bar(ids, model_dir, params, progress):
    if not progress:
        return ids
    from tqdm import tqdm
    return tqdm(ids, desc=f'{os.path.basename(model_dir)} {params.get("split", "")}')


def evaluate(model, weights, split=None, save_dir=None, limit=None, progress=True, engine='caffe'):
    """Score `weights` with a model folder's evaluation net on `split`.

    The data layer's params are rewritten (split, EVAL_PARAMS) in a temporary
    copy of the prototxt; the net runs with cwd = the model folder, since the
    data layer's paths are relative to it. The images scored are the data
    layer's own list of examples (its split file), the first `limit` of them.
    Returns {'model', 'weights', 'split', 'images', 'heads': {score blob:
    metrics + 'loss', 'hist', 'excluded'}}. Caffe's mode is the caller's;
    `engine` 'onnx' computes the scores in ONNX Runtime (engine_net).
    """
    model_dir, proto, net_param, layer, params = eval_net_param(model, split)
    weights = os.path.abspath(weights)
    if not os.path.isfile(weights):
        raise FileNotFoundError(f'weights not found: {weights}')
    save_dir = save_dir and os.path.abspath(save_dir)
    if save_dir:
        checks.writable_dir(save_dir, '--save-dir')

    all_heads = model_heads(model_dir, layer)
    with engine_net(engine, net_param, model_dir, weights, proto, layer) as net:
        ids = [example_id(e) for e in net.layer_dict[layer.name].examples[:limit]]
        heads = [h for h in all_heads if h.score in net.blobs and h.label in net.blobs]
        if not heads:
            raise ValueError(f'{proto}: no score/label blob pair among '
                             f'{[(h.score, h.label) for h in all_heads]}')
        save_dirs = [save_dir if len(heads) == 1 else os.path.join(save_dir, h.score)
                     for h in heads] if save_dir else [None] * len(heads)
        results = compute_hists(net, progress_bar(ids, model_dir, params, progress),
                                [(h.score, h.label, h.loss, d) for h, d in zip(heads, save_dirs)])

    split = params.get('split')
    report = {'model': os.path.basename(os.path.normpath(model_dir)), 'weights': weights,
              'split': split, 'images': len(ids), 'heads': {}}
    for head, (hist, mean_loss) in zip(heads, results):
        result = head_metrics(hist, head, split)
        result['loss'] = mean_loss
        report['heads'][head.score] = result
    return report


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

def coarsen(label, factor, num_classes):
    """The best labelling a stride-`factor` output can give: each factor x
    factor cell (from the top left) takes the most frequent non-void class
    of its ground truth, upsampled back by replication to `label`'s size.
    (Ground truth downsampled by `factor` and upsampled back, the paper's
    upper bound; the majority is the cell value that scores best, so the
    bound is a true one. All-void cells give class 0, never scored.)"""
    label = np.asarray(label)
    h, w = label.shape
    ch, cw = -(-h // factor), -(-w // factor)
    padded = np.full((ch * factor, cw * factor), datasets.VOID, dtype=np.int64)
    padded[:h, :w] = label
    cells = padded.reshape(ch, factor, cw, factor).transpose(0, 2, 1, 3).reshape(ch * cw, -1)
    cell_id = np.repeat(np.arange(ch * cw), cells.shape[1])
    values = cells.ravel()
    scored = (values >= 0) & (values < num_classes)
    counts = np.bincount(cell_id[scored] * num_classes + values[scored],
                         minlength=ch * cw * num_classes).reshape(ch * cw, num_classes)
    coarse = counts.argmax(axis=1).reshape(ch, cw)
    return np.repeat(np.repeat(coarse, factor, axis=0), factor, axis=1)[:h, :w]


def upper_bounds(model, factors, split=None, limit=None, progress=True):
    """Mean IU etc. of coarsen()-ed ground truth for each output stride in
    `factors`, over the images a model folder's evaluation net lists for
    `split` (only its data layer runs: no weights), classes as the model's
    heads have them (model_heads). Returns {'model', 'split', 'images',
    'factors': {factor: {label top: metrics}}}."""
    factors = [int(f) for f in factors]
    if any(f < 1 for f in factors):
        raise ValueError(f'upper bound factors must be positive integers, got {factors}')
    from caffe.proto import caffe_pb2
    model_dir, proto, _, layer, params = eval_net_param(model, split)
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
        ids = [example_id(e) for e in net.layer_dict[layer.name].examples[:limit]]
        for _ in progress_bar(ids, model_dir, params, progress):
            net.forward()
            for (factor, gt), hist in hists.items():
                label = net.blobs[gt].data[0, 0].astype(np.int64)
                hist += fast_hist(label, coarsen(label, factor, classes[gt]), classes[gt])
    report = {'model': os.path.basename(os.path.normpath(model_dir)), 'split': split,
              'images': len(ids), 'factors': {}}
    for (factor, gt), hist in hists.items():
        report['factors'].setdefault(factor, {})[gt] = head_metrics(hist, heads[gt], split)
    return report


# The paper's table columns: (metrics key, title).
METRICS = (('pixel_acc', 'pixel acc.'), ('mean_acc', 'mean acc.'), ('mean_iu', 'mean IU'),
           ('fw_iu', 'f.w. IU'))


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
             f"weights {report['weights']}",
             f"{'head':<12}" + metric_columns() + f"{'loss':>14}   (metrics in %)"]
    for layer, r in report['heads'].items():
        lines.append(f'{layer:<12}' + metric_columns(r) + f"{r['loss']:>14.6g}")
    for layer, r in report['heads'].items():
        lines.append(f'\n{layer}: per class (%)    IU    acc.   pixels')
        for name, c in r['per_class'].items():
            note = '' if c['counted'] else ('  excluded' if name in r['excluded']
                                            else '  (absent: not counted)')
            lines.append(f"  {name:<20}{100 * c['iu']:>6.1f}{100 * c['acc']:>7.1f}"
                         f"{c['pixels']:>10d}{note}")
    return '\n'.join(lines)


def jsonable(x):
    """`x` with arrays as lists and nan as None (strict JSON)."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def main(argv=None):
    runtime.quiet_caffe_log(argv)
    parser = argparse.ArgumentParser(
        description='Score a model folder\'s evaluation net on a dataset split '
                    '(pixel acc., mean acc., mean IU, f.w. IU).')
    parser.add_argument('--model', required=True,
                        help='a model (e.g. voc-fcn8s) or a path to a model folder')
    parser.add_argument('--weights', help='caffemodel to score')
    parser.add_argument('--upper-bound', type=int, nargs='+', metavar='FACTOR',
                        help='score ground truth coarsened to these output strides instead '
                             'of a net (upper bounds; no --weights)')
    parser.add_argument('--split', help="split to score (default: the prototxt's)")
    parser.add_argument('--gpu', type=int, help='GPU id (default: CPU)')
    parser.add_argument('--save-dir', help='write predictions as palette PNGs here')
    parser.add_argument('--json', help='write the metrics (fractions) here')
    parser.add_argument('--verbose', action='store_true', help="show Caffe's own log")
    parser.add_argument('--limit', type=int, help='score only the first N images')
    parser.add_argument('--engine', choices=ENGINES, default='caffe',
                        help='compute the scores in Caffe (default) or with the deploy net exported '
                             'to ONNX, in ONNX Runtime on the CPU (cached beside the weights)')
    args = parser.parse_args(argv)
    if (args.weights is None) == (args.upper_bound is None):
        parser.error('give --weights (score a net) or --upper-bound (score coarsened ground truth)')
    if args.engine == 'onnx' and args.gpu is not None:
        parser.error('--engine onnx runs on the CPU: not with --gpu')
    if args.upper_bound and args.save_dir:
        parser.error('--save-dir saves a net\'s predictions: not with --upper-bound')

    runtime.use_device(args.gpu)
    try:
        for path, option, check in ((args.json, '--json', checks.writable_file),
                                    (args.save_dir, '--save-dir', checks.writable_dir)):
            if path:
                check(path, option)
        if args.upper_bound:
            report = upper_bounds(args.model, args.upper_bound, args.split, args.limit)
        else:
            report = evaluate(args.model, args.weights, args.split, args.save_dir, args.limit,
                              engine=args.engine)
    except (OSError, ValueError) as e:
        sys.exit(f'score.py: error: {e}')
    print(format_upper_bounds(report) if args.upper_bound else format_report(report))
    if args.json:
        try:
            with open(args.json, 'w') as f:
                json.dump(jsonable(report), f, indent=1, allow_nan=False)
        except OSError as e:
            sys.exit(f'score.py: error: --json {args.json}: {e.strerror or e}')


if __name__ == '__main__':
    main()
