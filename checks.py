"""Checks of Caffe's binary files against a net, done in Python before Caffe
reads them: Caffe answers a file that does not fit with an abort ("Check
failed") that names no file, or silently keeps a layer's initial weights.

    check_weights(path, net)       a caffemodel for pycaffe `net`
    load_weights(net, path)        check_weights, then net.copy_from(path)
    check_solverstate(path, net)   a solverstate of the solver training `net`

Each raises CheckError with a one-line message naming the file and the layer,
shapes or counts at fault. The files are parsed with Caffe's own protobuf
messages (caffe.proto.caffe_pb2). writable_dir and writable_file check where
a command will write, before it starts its work.
"""
import os

import numpy as np


class CheckError(ValueError):
    """A caffemodel or solverstate that does not fit the net; the message says why."""


# History blobs a solver keeps per learnable parameter blob (Caffe's
# sgd_solver.cpp and its subclasses): the solverstate holds them in order.
HISTORY_PER_PARAM = {'SGD': 1, 'Nesterov': 1, 'AdaGrad': 1, 'RMSProp': 1,
                     'AdaDelta': 2, 'Adam': 2}

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


def read_prototxt(prototxt):
    """The NetParameter of a prototxt (text); CheckError if it is not one."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    net_param = caffe_pb2.NetParameter()
    try:
        with open(prototxt) as f:
            text_format.Merge(f.read(), net_param)
    except (OSError, text_format.ParseError) as e:
        raise CheckError(f'{prototxt}: cannot read it as a net definition ({e})') from e
    return net_param


def layer_names(prototxt):
    """The layer names of a prototxt (text NetParameter), current and V1 format."""
    return {name for name, _ in _weight_layers(read_prototxt(prototxt))}


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
    per = (HISTORY_PER_PARAM[solver_type],) if solver_type in HISTORY_PER_PARAM else \
        sorted(set(HISTORY_PER_PARAM.values()))
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


# --- where commands write -----------------------------------------------------

def _nearest_existing(path):
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def writable_dir(path, option):
    """Check, before any work, that folder `path` (given as `option`) exists
    or can be made, and can be written; creates nothing."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise CheckError(f'{option} {path}: a file, not a folder')
    existing = _nearest_existing(path)
    if not os.path.isdir(existing):
        raise CheckError(f'{option} {path}: {existing} is a file, not a folder')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CheckError(f'{option} {path}: {existing} is not writable')


def writable_file(path, option):
    """Check, before any work, that file `path` (given as `option`) can be
    written: not a folder, in an existing writable folder."""
    if os.path.isdir(path):
        raise CheckError(f'{option} {path}: a folder, not a file')
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CheckError(f'{option} {path}: no folder {folder}')
    if not os.access(folder, os.W_OK | os.X_OK) or \
            os.path.exists(path) and not os.access(path, os.W_OK):
        raise CheckError(f'{option} {path}: not writable')
