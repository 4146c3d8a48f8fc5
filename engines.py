"""The one way any command runs a net: an Engine takes input arrays and
gives output arrays, whatever runs them (Caffe, ONNX Runtime, ...).

    class Engine
        name: str                  'caffe' | 'onnx' | 'openvino'
        inputs: list[str]          input blob names, e.g. ['data']
        outputs: list[str]         output blob names, e.g. ['score']
        channels: dict[str, int]   classes per output
        run({input: N x C x H x W float32}) -> {output: N x C x H x W float32}
        describe() -> dict         what commands print and record in --json

    ENGINES = {name: loader}       one row per engine
    PRECISIONS = {name: (...)}     the engines with a choice of arithmetic
                                   (--precision), their precisions
    load(folder, weights, engine='caffe', gpu=None, **options) -> Engine

Every loader reads the model folder through loading.py (net.py, the deploy
prototxt and its Python modules checked before Caffe sees them) and the
weights through weightfiles (checked as Caffe reads them). A new engine is
one loader and one row.
"""
import os

import numpy as np

import caffe
import loading
import onnx_engine
import openvino_engine
from common import caffe_setup, weightfiles


class Engine:
    """What every engine object provides (see the module's docstring)."""
    name = ''
    inputs = ()
    outputs = ()
    channels = {}

    def run(self, inputs):
        raise NotImplementedError

    def describe(self):
        return {'engine': self.name}


class CaffeEngine(Engine):
    """A caffe.Net (the deploy net, weights loaded) as an Engine."""
    name = 'caffe'

    def __init__(self, net, gpu=None):
        self.net = net
        self.gpu = gpu
        self.inputs = list(net.inputs)
        self.outputs = list(net.outputs)
        self.channels = {name: net.blobs[name].shape[1] for name in self.outputs}

    def run(self, inputs):
        if set(inputs) != set(self.inputs):
            raise ValueError(f'inputs {sorted(inputs)}, the net reads {self.inputs}')
        for name, array in inputs.items():
            self.net.blobs[name].reshape(*array.shape)
            self.net.blobs[name].data[...] = array
        self.net.forward()
        return {name: self.net.blobs[name].data.copy() for name in self.outputs}

    def describe(self):
        return {'engine': self.name, 'device': 'cpu' if self.gpu is None else f'gpu {self.gpu}'}


def as_engine(net):
    """An Engine for `net`: a caffe.Net wrapped (the release's scripts hand
    infer.segment a caffe.Net), any engine as it is."""
    return CaffeEngine(net) if isinstance(net, caffe.Net) else net


def load_caffe(folder, weights, gpu=None, allow_modules=(), **options):
    """The model folder's deploy net in Caffe with `weights`."""
    _, deploy = loading.deploy(folder, allow_modules)
    caffe_setup.use_device(gpu)
    return CaffeEngine(weightfiles.net_with_weights(deploy, weights), gpu)


def load_onnx(folder, weights, gpu=None, allow_modules=(), **options):
    """The model folder's deploy net exported to ONNX (cached beside the
    weights, checked against Caffe) in ONNX Runtime on the CPU."""
    loading.deploy(folder, allow_modules)
    return onnx_engine.load(folder, weights, gpu)


def load_openvino(folder, weights, gpu=None, allow_modules=(), precision=None, **options):
    """The model folder's deploy net from the same cached export in
    OpenVINO on the CPU, at `precision` (None: the CPU's fastest that keeps
    the labels, openvino_engine.default_precision)."""
    loading.deploy(folder, allow_modules)
    return openvino_engine.load(folder, weights, gpu, precision)


ENGINES = {'caffe': load_caffe, 'onnx': load_onnx, 'openvino': load_openvino}
PRECISIONS = {'openvino': openvino_engine.PRECISIONS}


def summary(described):
    """One line of what ran a net, from an Engine's describe(): the engine,
    then its precision and device, e.g. 'openvino (bf16, cpu)'."""
    details = [described[key] for key in ('precision', 'device') if described.get(key)]
    return described['engine'] + (f' ({", ".join(details)})' if details else '')


def check_options(engine, options):
    """loading.LoadError for an option `engine` has not: a precision for an
    engine outside PRECISIONS (refused, not ignored: no figure is read as
    another precision's)."""
    if engine not in ENGINES:
        raise loading.LoadError(f'engine {engine!r}: the engines are {", ".join(ENGINES)}')
    precision = options.get('precision')
    if precision is not None and engine not in PRECISIONS:
        raise loading.LoadError(f'precision {precision}: the {engine} engine computes in f32 only '
                                f'(a precision is an option of {", ".join(PRECISIONS)})')


def load(folder, weights, engine='caffe', gpu=None, **options):
    """The Engine `engine` (a row of ENGINES) running the deploy net of the
    model folder `folder` with `weights`; every input checked first
    (loading.LoadError, weightfiles.CheckError, onnx_engine.ExportError: one
    line naming the file). `options` go to the engine's loader (precision:
    an engine of PRECISIONS only)."""
    check_options(engine, options)
    if not os.path.isfile(weights):
        raise loading.LoadError(f'weights not found: {weights}')
    return ENGINES[engine](folder, weights, gpu, **options)


def scores(engine, data, output):
    """C x H x W float32 scores of `output` for one C' x H x W input array."""
    return engine.run({engine.inputs[0]: np.asarray(data, np.float32)[np.newaxis]})[output][0]
