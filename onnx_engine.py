"""The ONNX Runtime engine: a model's deploy net exported to ONNX, checked
against Caffe, cached beside its weights, and run on the CPU.

    export(deploy, weights, out, metadata)   deploy net + caffemodel -> .onnx
                                             (caffe_onnx.convert), checked
    OnnxNet(path).run({input: array})        -> {output: array}
    cached_export(folder, weights)           the checked export of a model
                                             folder's deploy net, made once:
                                             <weights>.<sha16>.onnx (+ .data)
    cached_optimized(path)                   ONNX Runtime's optimized model of
                                             an export for this CPU, made once:
                                             <export>.ort-<cpu key>.onnx (+ .data)
    load(folder, weights)                    OnnxNet of the optimized file

The check runs the written model in ONNX Runtime and the deploy net in Caffe
on the same random input (CHECK_SIZE, odd on purpose) and refuses the file
(removing it) where any output differs by more than CHECK_TOLERANCE of that
output's range. An export is two files: the graph (.onnx) and its weights
(.onnx.data, memory-mapped by the engines), whose sha256 the graph's
metadata records. Files are written into a temporary folder in the output's
folder and renamed when whole and checked.
"""
import hashlib
import io
import json
import os
import platform
import shutil
import tempfile

import numpy as np

from common import cli, locations, outputs, prototxts, weightfiles
from common.snapshots import file_sha256

CHECK_SIZE = (67, 83)    # (height, width) of the check's random input
CHECK_TOLERANCE = 1e-4   # of each output's range (max - min of Caffe's output)
CHECK_SEED = 0
# Part of the cache key: a cached export made by an older converter is redone.
# 2: the weights in a file of their own beside the graph.
EXPORT_FORMAT = '2'
DATA_SUFFIX = '.data'  # an export's weights' file: its path + DATA_SUFFIX
DATA_SHA256 = 'data_sha256'  # the metadata key of that file's sha256
CACHE_DIGITS = 16  # of the weights' sha256 in the cached file's name


class ExportError(ValueError):
    """The net cannot be exported, or its export does not match Caffe; the
    message (one line) says which layer, file or output."""


# ------------------------------------------------------------------ running
def onnxruntime():
    """The onnxruntime module."""
    import onnxruntime as ort  # deferred: the openvino engine reads the export cache without it (0.05 GiB)
    return ort


def session_options():
    """Session settings for running the FCNs on the CPU: every graph
    optimization (fusions, constant folding, the NCHWc layout), and no
    memory arena, so that a large image's activations go back to the system
    after the run instead of staying reserved in the arena's blocks for the
    rest of the process."""
    ort = onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3  # errors only, as Caffe's log is kept quiet
    return options


# The optimizer left out of a session of an export: the NCHWc layout
# transformer (the convolutions in blocked layout) saves 10-30% of CPU time
# per forward, but while it reorders the weights, creating the session
# holds them about three times over (an FCN-8s session peaked at 1.7 GiB
# with it, above Caffe's 1.4 GiB for a 500x500 forward). The engine runs
# it once per CPU instead, saving its result (cached_optimized), and
# sessions of that file optimize nothing more (docs/performance.md). Not a
# session option: InferenceSession takes it.
DISABLED_OPTIMIZERS = ['NchwcTransformer']


class OnnxNet:
    """An exported net in an ONNX Runtime session (CPU): an export, or its
    `optimized` model (cached_optimized), run as it is; an engine as
    engines.py describes them."""
    name = 'onnx'

    def __init__(self, path, optimized=False):
        ort = onnxruntime()
        options = session_options()
        if optimized:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            self.session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'],
                                                disabled_optimizers=[] if optimized else DISABLED_OPTIMIZERS)
        except Exception as e:  # noqa: BLE001 -- ONNX Runtime's errors have no common type
            raise ExportError(f'{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0]})') from None
        self.path = path
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        # class counts of the outputs, which the exporter declares
        self.channels = {o.name: o.shape[1] for o in self.session.get_outputs()}
        self.channels_in = {i.name: i.shape[1] for i in self.session.get_inputs()}
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, inputs):
        """{output blob: N x C x H x W float32} for {input blob: N x C x H x W}."""
        if set(inputs) != set(self.inputs):
            raise ExportError(f'{self.path}: inputs {sorted(inputs)}, the model reads {self.inputs}')
        feed = {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in inputs.items()}
        return dict(zip(self.outputs, self.session.run(self.outputs, feed)))

    def describe(self):
        return {'engine': self.name, 'device': 'cpu', 'onnxruntime': onnxruntime().__version__,
                'file': self.path}


# ------------------------------------------------------------------ exporting
def read_deploy(deploy):
    """The NetParameter of a deploy prototxt, checked before Caffe reads it
    (prototxts.check_net: Caffe aborts on an unknown layer type)."""
    try:
        return prototxts.check_net(deploy)
    except prototxts.PrototxtError as e:
        raise ExportError(str(e)) from None


def caffe_net(deploy, weights):
    """The deploy net in Caffe (TEST phase) with `weights`, checked first."""
    try:
        return weightfiles.net_with_weights(deploy, weights)
    except weightfiles.CheckError as e:
        raise ExportError(str(e)) from None


def random_inputs(net, size=CHECK_SIZE, seed=CHECK_SEED):
    """{input blob: 1 x C x H x W random values} at size (height, width),
    spread like mean-subtracted 8-bit pixels, for a Caffe net or an OnnxNet."""
    channels = net.channels_in if isinstance(net, OnnxNet) else {n: net.blobs[n].shape[1] for n in net.inputs}
    rng = np.random.default_rng(seed)
    return {name: rng.uniform(-128, 128, (1, c) + tuple(size)).astype(np.float32) for name, c in channels.items()}


def caffe_outputs(net, inputs):
    """{output blob: array} of a Caffe net run on `inputs` (any size)."""
    for name, array in inputs.items():
        net.blobs[name].reshape(*array.shape)
        net.blobs[name].data[...] = array
    net.forward()
    return {name: net.blobs[name].data.copy() for name in net.outputs}


def compare(expected, actual, where, reference='Caffe'):
    """ExportError unless each output of `actual` matches `expected` (from
    `reference`) within CHECK_TOLERANCE of its range; returns {output:
    largest difference / range}."""
    worst = {}
    for name, want in expected.items():
        got = actual.get(name)
        if got is None or got.shape != want.shape:
            raise ExportError(f'{where}: output {name} has shape {None if got is None else got.shape} '
                              f'in ONNX Runtime, {want.shape} in {reference}')
        span = float(want.max() - want.min())
        diff = float(np.abs(got.astype(np.float64) - want).max())
        if not diff <= CHECK_TOLERANCE * span:
            raise ExportError(f'{where}: output {name} differs from {reference} by {diff:.3g}, more than '
                              f'{CHECK_TOLERANCE:g} of its range {span:.3g}; refused')
        worst[name] = diff / span if span else 0.0
    return worst


def export(deploy, weights, out, metadata=None, check=True, opset=None):
    """Write the ONNX model of a deploy net with `weights` to `out`:
    export_net of the net Caffe builds from them, the metadata completed
    with the caffemodel's and the deploy net's sha256."""
    net_param = read_deploy(deploy)
    net = caffe_net(deploy, weights)
    metadata = dict(metadata or {}, caffemodel_sha256=file_sha256(weights),
                    deploy_sha256=file_sha256(deploy), export_format=EXPORT_FORMAT)
    return export_net(net_param, net, out, metadata, check, opset, where=deploy)


def export_net(net_param, net, out, metadata=None, check=True, opset=None, where='the net'):
    """Write the ONNX model of `net` (a caffe.Net of `net_param`, with its
    weights) to `out` and its weights to data_path(out), through a
    temporary folder in their folder, renamed when whole and checked.
    Returns (the check's {output: largest difference / range}, the checked
    OnnxNet), or ({}, None) unchecked. Raises ExportError (one line, naming
    `where` or `out`) and leaves nothing on failure."""
    import caffe_onnx  # deferred: the onnx package takes a second to import
    opset = opset or caffe_onnx.DEFAULT_OPSET
    inputs = random_inputs(net)
    expected = caffe_outputs(net, inputs) if check else None
    try:
        model = caffe_onnx.convert(net_param, net, opset, metadata)
    except caffe_onnx.UnmappableLayer as e:
        raise ExportError(f'{where}: {e}') from None
    with written_pair(out) as tmp:
        try:
            caffe_onnx.save(model, tmp, data_path(tmp), DATA_SHA256)
        except OSError as e:
            raise ExportError(f'cannot write {out}: {e.strerror or e}') from None
        del model  # ONNX Runtime reads the file: the weights are held once more, not twice
        checked = OnnxNet(tmp) if check else None
        worst = compare(expected, checked.run(inputs), out) if check else {}
    if checked:
        checked.path = out
    return worst, checked


def data_path(path):
    """The weights' file of the ONNX file `path`."""
    return path + DATA_SUFFIX


class written_pair:
    """`with written_pair(out) as tmp:` the path to write an ONNX file and
    its weights to (data_path(tmp)), in a temporary folder beside `out`;
    both are renamed to `out` and data_path(out) when the block ends
    without an error (the weights first: the graph names them), and the
    folder is removed in any case."""

    def __init__(self, out):
        self.out = out

    def __enter__(self):
        folder = os.path.dirname(os.path.abspath(self.out))
        # made and known together: a signal between would leave it behind
        with cli.signals_deferred():
            self.folder = tempfile.mkdtemp(dir=folder, prefix='.' + os.path.basename(self.out) + '.',
                                           suffix='.part')
        return os.path.join(self.folder, os.path.basename(self.out))

    def __exit__(self, kind, error, traceback):
        try:
            if kind is None:
                tmp = os.path.join(self.folder, os.path.basename(self.out))
                with cli.signals_deferred():  # the pair lands together
                    os.replace(data_path(tmp), data_path(self.out))
                    os.replace(tmp, self.out)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
        return False


# ------------------------------------------------------------------ a model's cached export
def input_conventions(source):
    """{deploy input blob: what it holds}: channel order, the mean to
    subtract, and the values (as layers.py prepares them)."""
    means = getattr(source, 'means', {'color': source.mean})
    described = {
        'color': dict(channels='B,G,R', mean=list(means['color']),
                      values='8-bit colour values (0-255), BGR order, minus the mean'),
        'hha': dict(channels='HHA as stored in the HHA image (its 1st, 2nd, 3rd channel)',
                    mean=list(means.get('hha', ())), values='8-bit HHA values minus the mean'),
        'depth': dict(channels='log depth', mean=means.get('depth'),
                      values='natural log of depth in millimetres (missing depth as 1 mm) minus the mean'),
    }
    modalities = getattr(source, 'modalities', ('color',))
    if source.fusion == 'early':  # one input, the modalities' channels concatenated
        parts = [described[m] for m in modalities]
        return {'data': dict(channels='; '.join(p['channels'] for p in parts),
                             mean=[v for p in parts for v in np.atleast_1d(p['mean']).tolist()],
                             values='; '.join(p['values'] for p in parts))}
    if source.fusion == 'late':
        return {m: described[m] for m in modalities}
    return {'data': described[modalities[0]]}


def model_metadata(model):
    """The metadata an exported model carries: the model's name, the class
    names of each output, and what each input needs (a nets.Model, or a
    model folder: its net.py's model, else only the folder's name)."""
    if isinstance(model, str):
        if not os.path.isfile(os.path.join(model, 'net.py')):
            return dict(model=os.path.basename(os.path.normpath(model)))
        import nets  # deferred: it loads Caffe, which running a cached export does not need
        model = nets.load(model)
    return dict(model=model.name,
                classes=json.dumps({h.score: list(h.classes) for h in model.source.heads}),
                inputs=json.dumps(input_conventions(model.source)),
                layout='float32 N x C x H x W, any H and W; outputs are class scores '
                       '(before softmax) of the input size')


def cache_path(weights, digest):
    """Where the export of `weights` (with sha256 `digest`) is cached: beside them."""
    return f'{weights}.{digest[:CACHE_DIGITS]}.onnx'


# ModelProto's top-level fields that read_metadata needs (onnx.proto).
GRAPH_FIELD, METADATA_FIELD = 7, 14


def _varint(f):
    """The next base-128 varint of a protobuf stream."""
    value, shift = 0, 0
    while shift < 64:
        byte = f.read(1)
        if not byte:
            raise ValueError('it ends inside a field')
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
    raise ValueError('a malformed field')


def _fields(f, end):
    """(field number, length) of each length-delimited field of the protobuf
    message in stream `f` up to byte `end`, with `f` at the field's first
    byte (the caller reads it or not); other fields are skipped."""
    while f.tell() < end:
        tag = _varint(f)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _varint(f)
            continue
        if wire not in (1, 2, 5):
            raise ValueError(f'wire type {wire} at byte {f.tell()}')
        length = _varint(f) if wire == 2 else 8 if wire == 1 else 4
        start = f.tell()
        if start + length > end:
            raise ValueError('it ends inside a field')
        if wire == 2:
            yield field, length
        f.seek(start + length)


def read_metadata(path):
    """{key: value} of an ONNX file's metadata_props, read without the
    graph (its weights are skipped over, not read: the cache check of a
    VGG16 export takes milliseconds and no memory). ExportError unless the
    file is a whole ModelProto with a graph."""
    metadata, graph = {}, False
    try:
        with open(path, 'rb') as f:
            for field, length in _fields(f, os.path.getsize(path)):
                if field == GRAPH_FIELD:
                    graph = length > 0
                elif field == METADATA_FIELD:  # a StringStringEntryProto: key = 1, value = 2
                    entry = io.BytesIO(f.read(length))
                    pair = {number: entry.read(size) for number, size in _fields(entry, length)}
                    metadata[pair.get(1, b'').decode()] = pair.get(2, b'').decode()
    except (OSError, ValueError) as e:  # a UnicodeDecodeError is a ValueError
        raise ExportError(f'{path}: not a whole ONNX model ({e})') from None
    if not graph:
        raise ExportError(f'{path}: not a whole ONNX model (no graph)')
    return metadata


def read_export(path):
    """The metadata of an export or optimized file, checked whole: the
    graph a whole ModelProto (read_metadata), its weights' file there with
    the sha256 the graph records. ExportError otherwise."""
    metadata = read_metadata(path)
    data = data_path(path)
    if not os.path.isfile(data) or file_sha256(data) != metadata.get(DATA_SHA256):
        raise ExportError(f'{data}: missing, or not the weights {os.path.basename(path)} was written with')
    return metadata


def expected_metadata(folder, weights, deploy):
    """What a cached export of `weights` with the folder's deploy net must
    record to be used: the metadata export() would write now (model,
    classes, inputs and their mean, layout, the caffemodel's and deploy
    net's sha256, the export format)."""
    return dict(model_metadata(folder), caffemodel_sha256=file_sha256(weights),
                deploy_sha256=file_sha256(deploy), export_format=EXPORT_FORMAT)


def cache_mismatch(metadata, expected):
    """The first metadata key whose value in a cached export's `metadata`
    differs from `expected` (None where all match)."""
    return next((key for key, value in expected.items() if metadata.get(key) != value), None)


def cached_file(path):
    """Whether `path` and its weights' file are plain files, not links."""
    return all(os.path.isfile(f) and not os.path.islink(f) for f in (path, data_path(path)))


def cached_export(folder, weights, refresh=False):
    """The path of the checked ONNX export of a model folder's deploy net
    with `weights`, the one file every engine that runs ONNX reads
    (onnx, openvino): the cached export beside the weights if what it
    records (weights' and deploy net's sha256, classes, mean, format:
    expected_metadata) matches what would be exported now and its weights'
    file is whole, else a new one (exported, checked against Caffe, cached,
    replacing it); `refresh` makes it anew (a cached file an engine could
    not load)."""
    deploy = locations.deploy_prototxt(folder)
    if not os.path.isfile(weights):
        raise ExportError(f'weights not found: {weights}')
    if not os.path.isfile(deploy):
        raise ExportError(f'no deploy.prototxt in {folder}: the exported engines run the deploy net')
    expected = expected_metadata(folder, weights, deploy)
    path = cache_path(weights, expected['caffemodel_sha256'])
    if cached_file(path) and not refresh:
        try:
            metadata = read_export(path)
        except ExportError:  # damaged since it was written: made again below
            metadata = {}
        if cache_mismatch(metadata, expected) is None:
            return path
    writable(path)
    _, checked = export(deploy, weights, path, model_metadata(folder))
    del checked  # the check's session: an engine opens the file itself
    return path


def writable(path):
    """ExportError unless a cache file and its weights' file can be written."""
    try:
        for file in (path, data_path(path)):
            outputs.writable_file(file, 'the ONNX cache')
    except outputs.OutputError as e:
        raise ExportError(f'{e} (export.py --out writes it elsewhere)') from None


def cpu_key():
    """What ONNX Runtime's optimized model depends on, hashed: its version
    and this CPU's instruction sets (the blocked layout's width is the
    vector width)."""
    flags = ''
    if os.path.isfile('/proc/cpuinfo'):
        with open('/proc/cpuinfo') as f:
            flags = next((line for line in f if line.startswith(('flags', 'Features'))), '')
    text = f'{onnxruntime().__version__} {platform.machine()} {" ".join(sorted(flags.split()))}'
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def optimized_path(path):
    """Where ONNX Runtime's optimized model of the export `path` is cached
    for this CPU: beside it."""
    return f'{path[:-len(".onnx")] if path.endswith(".onnx") else path}.ort-{cpu_key()}.onnx'


def optimize(path, out):
    """Write ONNX Runtime's optimized model of the export `path` for this
    CPU (every graph optimization, the NCHWc layout included) to `out`,
    its weights beside it, and check it against the export run without
    NCHWc (CHECK_TOLERANCE at CHECK_SIZE). Its metadata: the export's, with
    optimized_for (cpu_key) and the export's weights' sha256. The
    optimizing session's peak is the one every later session is spared
    (docs/performance.md)."""
    import caffe_onnx  # deferred: the onnx package takes a second to import
    ort = onnxruntime()
    metadata = read_export(path)
    with written_pair(out) as tmp:
        options = session_options()
        options.optimized_model_filepath = tmp
        options.add_session_config_entry('session.optimized_model_external_initializers_file_name',
                                         os.path.basename(data_path(tmp)))
        options.add_session_config_entry('session.optimized_model_external_initializers_min_size_in_bytes',
                                         '1024')
        try:  # creating the session writes the optimized model
            ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        except Exception as e:  # noqa: BLE001 -- ONNX Runtime's errors have no common type
            raise ExportError(f'{path}: ONNX Runtime cannot optimize it ({str(e).splitlines()[0]})') from None
        caffe_onnx.add_metadata(tmp, {**metadata, 'optimized_for': cpu_key(), 'export_data_sha256':
                                      metadata[DATA_SHA256], DATA_SHA256: file_sha256(data_path(tmp))})
        exported = OnnxNet(path)  # one session at a time: the check's peak stays below the optimizing one
        inputs = random_inputs(exported)
        expected = exported.run(inputs)
        del exported
        compare(expected, OnnxNet(tmp, optimized=True).run(inputs), out, reference=os.path.basename(path))
    return out


def cached_optimized(path, refresh=False):
    """The path of ONNX Runtime's optimized model of the checked export
    `path` for this CPU (optimize): the cached one if it was made from
    this export's weights for this CPU and ONNX Runtime and is whole, else
    a new one; `refresh` makes it anew."""
    out = optimized_path(path)
    if cached_file(out) and not refresh:
        try:
            metadata, made = read_export(out), read_metadata(path)
        except ExportError:  # damaged since it was written: made again below
            metadata, made = {}, None
        if made and metadata.get('optimized_for') == cpu_key() and \
                metadata.get('export_data_sha256') == made.get(DATA_SHA256):
            return out
    writable(out)
    return optimize(path, out)


def load(folder, weights, gpu=None):
    """An OnnxNet of a model folder's deploy net with `weights`, from ONNX
    Runtime's optimized model (cached_optimized) of its cached export
    (cached_export). The pinned onnxruntime runs on the CPU only: a `gpu`
    is an ExportError."""
    if gpu is not None:
        raise ExportError(f'the onnx engine runs on the CPU (onnxruntime {onnxruntime().__version__}); '
                          f'drop --gpu {gpu} or use --engine caffe')
    path = cached_export(folder, weights)
    try:
        return OnnxNet(cached_optimized(path), optimized=True)
    except ExportError:  # their metadata reads but a graph does not: made again
        path = cached_export(folder, weights, refresh=True)
        return OnnxNet(cached_optimized(path, refresh=True), optimized=True)
