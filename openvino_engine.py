"""The OpenVINO engine: a model's deploy net run on the CPU by OpenVINO,
from the same checked ONNX export the ONNX Runtime engine reads (the cache
beside the weights: onnx_engine.cached_export).

    load(folder, weights, precision=None)    OpenvinoNet of a model folder's
                                             deploy net
    OpenvinoNet(path, precision).run({input: array}) -> {output: array}

Precision: None takes the CPU's fastest that keeps the labels: bf16 where
the CPU computes in it (OpenVINO's OPTIMIZATION_CAPABILITIES has BF16:
AVX-512 BF16 or AMX), f32 elsewhere; 'f32' forces exact arithmetic (the
figures, what bf16 gives up: docs/performance.md). Height and width stay
free: one compiled model runs every photo size. OpenVINO memory-maps the
export's weights file (.onnx.data) instead of copying the weights.
"""
import numpy as np
import openvino as ov

import onnx_engine

PRECISIONS = ('bf16', 'f32')
DEVICE = 'CPU'


class OpenvinoError(onnx_engine.ExportError):
    """The export cannot be compiled or run by OpenVINO; one line naming
    the file."""


_core = None


def core():
    """The process's one OpenVINO Core (it loads the CPU plugin once)."""
    global _core
    if _core is None:
        _core = ov.Core()
    return _core


def first_line(error):
    """The line of an OpenVINO exception that says what went wrong (its
    message starts with the source locations it passed through)."""
    lines = [l.strip() for l in str(error).splitlines()
             if l.strip() and not l.startswith(('Exception from ', 'Check '))]
    return lines[0] if lines else str(error).strip()


def supported_precisions():
    """The precisions this CPU computes in, fastest first."""
    capabilities = core().get_property(DEVICE, 'OPTIMIZATION_CAPABILITIES')
    return tuple(p for p in PRECISIONS if p == 'f32' or p.upper() in capabilities)


def default_precision():
    """The fastest precision that keeps the labels: bf16 where the CPU has it."""
    return supported_precisions()[0]


def check_precision(precision):
    """The precision to compile with: `precision`, or the default for None;
    OpenvinoError for one the CPU lacks."""
    if precision is None:
        return default_precision()
    if precision not in PRECISIONS:
        raise OpenvinoError(f'precision {precision!r}: the openvino engine computes in '
                            f'{" or ".join(PRECISIONS)}')
    if precision not in supported_precisions():
        raise OpenvinoError(f'precision {precision}: this CPU computes in '
                            f'{" or ".join(supported_precisions())} only')
    return precision


class OpenvinoNet:
    """An exported net compiled by OpenVINO for the CPU, with dynamic height
    and width."""
    name = 'openvino'

    def __init__(self, path, precision=None):
        self.path = path
        self.precision = check_precision(precision)
        try:
            self.compiled = core().compile_model(path, DEVICE, {'INFERENCE_PRECISION_HINT': self.precision,
                                                                'PERFORMANCE_HINT': 'LATENCY'})
        except RuntimeError as e:
            raise OpenvinoError(f'{path}: OpenVINO cannot compile it ({first_line(e)})') from None
        self.request = self.compiled.create_infer_request()
        self.inputs = [i.get_any_name() for i in self.compiled.inputs]
        self.outputs = [o.get_any_name() for o in self.compiled.outputs]
        # class counts of the outputs, which the exporter declares
        self.channels = {o.get_any_name(): o.get_partial_shape()[1].get_length()
                         for o in self.compiled.outputs}
        self.metadata = onnx_engine.read_metadata(path)

    def run(self, inputs):
        """{output blob: N x C x H x W float32} for {input blob: N x C x H x W}."""
        if set(inputs) != set(self.inputs):
            raise OpenvinoError(f'{self.path}: inputs {sorted(inputs)}, the model reads {self.inputs}')
        feed = {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in inputs.items()}
        try:
            results = self.request.infer(feed)
        except RuntimeError as e:
            raise OpenvinoError(f'{self.path}: OpenVINO cannot run it on inputs '
                                f'{ {n: a.shape for n, a in feed.items()} } ({first_line(e)})') from None
        return {name: results[name] for name in self.outputs}

    def describe(self):
        """What commands print and record: the engine, its precision, device
        and version, the file it compiled."""
        return {'engine': self.name, 'precision': self.precision, 'device': 'cpu',
                'openvino': ov.__version__, 'file': self.path}


def load(folder, weights, gpu=None, precision=None):
    """An OpenvinoNet of a model folder's deploy net with `weights`, from its
    cached export (onnx_engine.cached_export: exported and checked against
    Caffe once). It runs on the CPU: a `gpu` is an OpenvinoError."""
    if gpu is not None:
        raise OpenvinoError(f'the openvino engine runs on the CPU; drop --gpu {gpu} or use --engine caffe')
    precision = check_precision(precision)  # before the export: a wrong one costs nothing
    path = onnx_engine.cached_export(folder, weights)
    try:
        return OpenvinoNet(path, precision)
    except OpenvinoError:  # its metadata reads but the graph does not: made again
        return OpenvinoNet(onnx_engine.cached_export(folder, weights, refresh=True), precision)
