"""Checks of Caffe's binary files against a net, done in Python before Caffe
reads them: Caffe answers a file that does not fit with an abort ("Check
failed") that names no file, or silently keeps a layer's initial weights.

    check_weights(path, net)       a caffemodel for pycaffe `net`
    load_weights(net, path)        check_weights, then net.copy_from(path)
    check_solverstate(path, net)   a solverstate of the solver training `net`
    resolve(folder, prefer)        the trained weights a model folder has
    net_for_weights(path)          the net definition a caffemodel is read with

The checks raise CheckError with a one-line message naming the file and the
layer, shapes or counts at fault. The files are parsed with Caffe's own
protobuf messages (caffe.proto.caffe_pb2).
"""
import os

import numpy as np

from common import locations, snapshots
from common.catalog import DOWNLOADS, ILSVRC_CONVERTED, ILSVRC_NETS


class CheckError(ValueError):
    """A caffemodel or solverstate that does not fit the net; the message says why."""


_LEGACY_DIMS = ('num', 'channels', 'height', 'width')


def _read(path, what):
    if not os.path.isfile(path):
        raise CheckError(f'{what} not found: {path}')
    try:
        with open(path, 'rb') as f:
            return f.read()
    except OSError as e:
        raise CheckError(f'{path}: cannot read the {what} ({e.strerror or e})') from e


def _parse(message, data):
    """Parse binary `data` into `message`; False if it is not one."""
    from google.protobuf.message import DecodeError
    try:
        message.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError):
        return False
    return True


def _weight_layers(net_param):
    """(name, blobs) of a NetParameter's layers, current and V1 format alike."""
    return [(layer.name, layer.blobs) for layer in list(net_param.layer) + list(net_param.layers)]


def _holds_weights(net_param):
    return any(blobs for _, blobs in _weight_layers(net_param))


def _is_caffemodel(data):
    from caffe.proto import caffe_pb2
    net_param = caffe_pb2.NetParameter()
    return _parse(net_param, data) and _holds_weights(net_param)


def read_caffemodel(path):
    """The NetParameter of a caffemodel; CheckError if the file is missing or
    is not a binary NetParameter holding weights."""
    from caffe.proto import caffe_pb2
    data = _read(path, 'weights')
    net_param = caffe_pb2.NetParameter()
    if _parse(net_param, data) and _holds_weights(net_param):
        return net_param
    state = caffe_pb2.SolverState()
    if _parse(state, data) and state.history and not _is_caffemodel(data):
        raise CheckError(f'{path}: a solverstate, not a caffemodel (the weights are the '
                         '.caffemodel of the same snapshot)')
    raise CheckError(f'{path}: not a caffemodel (no Caffe weights in it: truncated, or '
                     'another kind of file)')


def _shape(blob):
    """A BlobProto's shape as Caffe reads it (legacy 4-D fields, else `shape`)."""
    if any(blob.HasField(f) for f in _LEGACY_DIMS):
        return tuple(getattr(blob, f) for f in _LEGACY_DIMS)
    return tuple(blob.shape.dim)


def _fits(shape, blob):
    """Whether a BlobProto fills a blob of `shape` (Caffe's Blob::ShapeEquals:
    legacy 4-D fields match the shape padded with leading 1s)."""
    shape = tuple(shape)
    if any(blob.HasField(f) for f in _LEGACY_DIMS):
        return len(shape) <= 4 and (1,) * (4 - len(shape)) + shape == _shape(blob)
    return shape == _shape(blob)


def _check_values(path, what, shape, blob):
    """Caffe aborts on a blob whose value count differs from its shape's."""
    values = len(blob.double_data) or len(blob.data)
    if values != int(np.prod(shape)):
        raise CheckError(f'{path}: {what} holds {values} values for shape {tuple(shape)} '
                         '(truncated or corrupt)')


def _check_finite(path, net_param):
    """Weights holding NaN or infinity (a diverged training run saved, a
    corrupt file) make every score NaN: the nets then predict class 0
    everywhere and losses are NaN, silently. A CheckError names the first
    layer and blob holding any."""
    for name, blobs in _weight_layers(net_param):
        for i, blob in enumerate(blobs):
            # np.asarray reads the repeated field's buffer (no per-value
            # conversion): fast enough for VGG16's 138 million values.
            values = np.asarray(blob.double_data if len(blob.double_data) else blob.data)
            # min and max carry any NaN or infinity, with no blob-sized temporary
            if not values.size or np.isfinite(values.min()) and np.isfinite(values.max()):
                continue
            bad = values[~np.isfinite(values)]
            kinds = ', '.join(k for k, hit in (('NaN', np.isnan(bad).any()),
                                               ('infinity', np.isinf(bad).any())) if hit)
            raise CheckError(f'{path}: layer {name} blob {i} holds {bad.size} non-finite '
                             f'values ({kinds}) of {values.size}: weights of a diverged '
                             'training run, or a corrupt file')


def _net_name(net_name):
    return f' of {net_name}' if net_name else ''


def check_weights(path, net, optional=(), net_name=''):
    """Check a caffemodel for pycaffe `net` as Net::copy_from will read it.

    Every layer the two share by name must have as many blobs, of the same
    shapes, with all their values; every learned layer of `net` must get
    weights, except those named in `optional` (layers that keep their
    fillers or that surgery fills), and at least one must. Returns the
    names of the net's learned layers the file covers.
    """
    net_param = read_caffemodel(path)
    params = net.params
    names = set(net._layer_names)
    covered = set()
    for name, blobs in _weight_layers(net_param):
        if name not in names:
            continue  # Caffe ignores layers the net lacks (a classifier's fc8)
        target = params.get(name, [])
        if len(blobs) != len(target):
            raise CheckError(f'{path}: layer {name} holds {len(blobs)} weight blobs, layer '
                             f'{name}{_net_name(net_name)} has {len(target)}')
        for i, (blob, param) in enumerate(zip(blobs, target)):
            shape = param.data.shape
            if not _fits(shape, blob):
                raise CheckError(f'{path}: layer {name} blob {i} has shape {_shape(blob)}, '
                                 f'layer {name}{_net_name(net_name)} needs {shape}')
            _check_values(path, f'layer {name} blob {i}', shape, blob)
        if target:
            covered.add(name)
    _check_finite(path, net_param)
    if params and not covered:
        raise CheckError(f'{path}: no weights for any learned layer{_net_name(net_name)} '
                         f'({", ".join(params)}): weights of another net')
    missing = [name for name in params if name not in covered and name not in optional]
    if missing:
        raise CheckError(f'{path}: no weights for the learned layers {", ".join(missing)}'
                         f'{_net_name(net_name)} (weights of another net?)')
    return covered


def load_weights(net, path, optional=(), net_name=''):
    """check_weights, then copy the weights into `net` (layers the file lacks,
    allowed by `optional`, keep their values)."""
    check_weights(path, net, optional, net_name)
    net.copy_from(path)


def net_with_weights(prototxt, weights):
    """A caffe.Net of `prototxt` (TEST phase) with `weights`, checked
    (check_weights) before Caffe reads them."""
    import caffe
    if not os.path.isfile(weights):
        raise CheckError(f'weights not found: {weights}')
    net = caffe.Net(prototxt, caffe.TEST)
    load_weights(net, weights, net_name=prototxt)
    return net


def _learnable(net):
    """[(layer, index, shape)] of the net's learnable parameter blobs in
    Caffe's order; a blob shared by several layers counts once."""
    seen, out = set(), []
    for name, blobs in net.params.items():
        for i, blob in enumerate(blobs):
            key = blob.data.__array_interface__['data'][0]
            if key in seen:
                continue
            seen.add(key)
            out.append((name, i, blob.data.shape))
    return out


def check_solverstate(path, net, solver_type=None):
    """Check a solverstate before solver.restore: a solverstate at all (not a
    caffemodel, not truncated), its history blobs matching the learnable
    parameters of `net` (the solver's train net) in number (one per blob,
    two for Adam and AdaDelta; `solver_type` None accepts either) and shape,
    and the caffemodel it names (resolved as Caffe does, from the current
    directory) fitting `net`."""
    from caffe.proto import caffe_pb2
    data = _read(path, 'solverstate')
    if _is_caffemodel(data):
        raise CheckError(f'{path}: a caffemodel (weights), not a solverstate: resume from '
                         'the .solverstate of a snapshot, or start from these weights with --weights')
    state = caffe_pb2.SolverState()
    if not _parse(state, data):
        raise CheckError(f'{path}: not a solverstate (truncated, or another kind of file)')
    learnable = _learnable(net)
    per = (snapshots.HISTORY_PER_PARAM[solver_type],) if solver_type in snapshots.HISTORY_PER_PARAM else \
        sorted(set(snapshots.HISTORY_PER_PARAM.values()))
    expected = [k * len(learnable) for k in per]
    if len(state.history) not in expected:
        raise CheckError(
            f'{path}: {len(state.history)} history blobs where the net\'s '
            f'{len(learnable)} learnable parameter blobs need '
            f'{" or ".join(map(str, expected))} '
            f'({solver_type or "one each, or two for Adam and AdaDelta"}): truncated, or the '
            'solverstate of another net')
    for i, blob in enumerate(state.history):
        name, j, shape = learnable[i % len(learnable)]
        if not _fits(shape, blob):
            raise CheckError(f'{path}: history blob {i} has shape {_shape(blob)}, parameter '
                             f'{name}[{j}] of the net has {shape}: the solverstate of another net')
        _check_values(path, f'history blob {i}', shape, blob)
    if state.learned_net:
        try:
            check_weights(state.learned_net, net)
        except CheckError as e:
            raise CheckError(f'{path} names the weights {state.learned_net}: {e}') from e


# --- which weights a model has, and which net reads them ------------------------

class WeightsError(ValueError):
    """No weights where they were looked for; the message says how to get them."""


# The orders resolve() looks in: training and fine-tuning continue from the
# newest work (the latest snapshot); inference and scoring prefer the
# published model, whose figures are known, over a run in progress.
RESOLVE_ORDERS = {'snapshot': ('snapshot', 'published'), 'published': ('published', 'snapshot')}


def resolve(folder, prefer='snapshot', announce=True):
    """The trained weights of the model folder `folder`: its latest complete
    snapshot and its published caffemodel (python -m fetch weights NAME),
    looked for in the order RESOLVE_ORDERS[prefer]. With `announce`, the
    chosen file is printed (to stdout: stderr holds only a failure's one
    line).
    WeightsError says how to get weights where there are none;
    snapshots.SnapshotError names a latest snapshot that fails its check."""
    folder = os.path.abspath(folder)
    name = os.path.basename(folder)
    published = locations.published_weights(name, os.path.dirname(folder))
    for kind in RESOLVE_ORDERS[prefer]:
        if kind == 'snapshot':
            latest = snapshots.Snapshots(os.path.join(folder, locations.SNAPSHOT_DIR)).latest()
            path = latest and latest['caffemodel']
            what = latest and f'latest snapshot, iteration {latest["iteration"]}'
        else:
            path = published if published and os.path.isfile(published) else None
            what = 'published caffemodel'
        if path:
            if announce:
                print(f'{name}: weights {path} ({what})')  # stderr holds only a failure's line
            return path
    fetch = (f' or fetch its published caffemodel {published} (python -m fetch weights {name})'
             if published else '')
    raise WeightsError(f'no weights for {name}: train it first '
                       f'(cd {os.path.relpath(folder)} && python solve.py){fetch}')


def net_for_weights(path):
    """The net definition a caffemodel is read with: for the ILSVRC nets in
    nets/ilsvrc-nets/, the fully convolutional twin of a converted net or
    the classifier of a download (None for GoogLeNet, which the repository
    defines no net of its own for); otherwise the deploy net of the model
    folder holding the file, or holding the snapshot/ folder it lies in."""
    folder, filename = os.path.split(os.path.abspath(path))
    if folder.endswith(os.sep + locations.ILSVRC_SUBDIR):
        root = folder[:-len(locations.ILSVRC_SUBDIR) - 1]
        for trunk in ILSVRC_NETS:
            if filename == os.path.basename(locations.ilsvrc_weights(trunk, root)) and \
                    filename != DOWNLOADS[trunk].filename:
                return locations.ilsvrc_prototxt(trunk, 'fcn', root)
            if filename == DOWNLOADS[trunk].filename:
                classifier = locations.ilsvrc_prototxt(trunk, 'classifier', root)
                return classifier if trunk in ILSVRC_CONVERTED else None
    if os.path.basename(folder) == locations.SNAPSHOT_DIR:
        folder = os.path.dirname(folder)
    return locations.deploy_prototxt(folder)
