"""A Caffe deploy net as an ONNX model: each layer of the net Caffe builds
mapped to the ONNX operators that compute the same numbers.

    convert(net_param, net, opset, metadata) -> onnx.ModelProto

`net_param` is the deploy prototxt's NetParameter (the layers' settings),
`net` the caffe.Net built from it in the TEST phase with its weights (the
layers Caffe keeps, their blobs in order, and the weights). Inputs and
outputs keep the deploy net's blob names; batch, height and width are
symbolic, so one file runs any size: Crop layers slice by the runtime shape
of their reference blob. A layer with no ONNX equivalent is an
UnmappableLayer naming the layer and its type.

What makes the numbers agree with Caffe's:
- Pooling rounds its output size up (Caffe's default CEIL mode) and drops a
  last window that would start in the padding: ONNX's ceil_mode does both.
  Average pooling divides by the window clipped to the padded image, zero
  padding included: ONNX's count_include_pad=1.
- LRN: Caffe's alpha is divided by local_size, as ONNX's is, so it carries
  over; WITHIN_CHANNEL is Caffe's own composition (square, average pooling,
  power, product).
- Deconvolution's weights are ConvTranspose's layout (input channels first),
  and its output size formula is ConvTranspose's with the same pads.
- Dropout is the identity at test time (Caffe scales while training).
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper

from caffe.proto import caffe_pb2
from common.snapshots import file_sha256

DEFAULT_OPSET = 17  # read by ONNX Runtime, TensorRT and OpenCV's importer
MIN_OPSET = 15      # Shape's start attribute (Crop by the reference's runtime shape)
MAX_OPSET = onnx.defs.onnx_opset_version()  # the newest the onnx package knows
# Symbolic dimensions of the inputs: one file runs any batch and image size.
BATCH, HEIGHT, WIDTH = 'batch', 'height', 'width'


class UnmappableLayer(ValueError):
    """A layer of the net that this exporter cannot express in ONNX."""


class Graph:
    """The ONNX graph being built: nodes, initializers, and the ONNX tensor
    that holds each Caffe blob now (in-place layers give a blob new values:
    each version gets its own name, the last one the blob's)."""

    def __init__(self, net, layer_tops):
        self.net = net
        # weights go straight into the model's graph (make_graph would copy them again)
        self.model = onnx.ModelProto()
        self.graph = self.model.graph
        self.tensor = {}  # blob -> its ONNX tensor now
        self.reading = {}  # the current layer's bottoms -> their tensors
        self.writes = {}  # blob -> how many layers still write it
        for tops in layer_tops:
            for top in tops:
                self.writes[top] = self.writes.get(top, 0) + 1

    def rank(self, blob):
        return len(self.net.blobs[blob].shape)

    def read(self, bottoms):
        """Note the tensors of a layer's bottoms before it writes its tops
        (an in-place layer reads the version before its own)."""
        self.reading = {b: self.tensor[b] for b in bottoms}

    def inputs(self, bottoms):
        """The ONNX tensors of the current layer's bottoms."""
        return [self.reading[b] for b in bottoms]

    def output(self, layer, blob):
        """The name of the tensor `layer` writes into `blob`."""
        self.writes[blob] -= 1
        name = blob if self.writes[blob] == 0 and blob not in self.net.inputs else f'{layer}/{blob}'
        self.tensor[blob] = name
        return name

    def constant(self, name, array):
        """An initializer holding `array` (float32, or int64 for shapes),
        its bytes copied once, into the graph itself."""
        array = np.asarray(array)
        array = array.astype(np.int64 if array.dtype.kind in 'iu' else np.float32, copy=False)
        tensor = self.graph.initializer.add()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        tensor.raw_data = np.ascontiguousarray(array).astype('<' + array.dtype.str[1:], copy=False).tobytes()
        return name

    def node(self, op, inputs, outputs, **attrs):
        self.graph.node.append(helper.make_node(op, inputs, outputs, **attrs))
        return outputs[0]


def _spatial(values, h, w, default, what, layer):
    """(h, w) of a Caffe convolution setting: its _h/_w fields, else the
    repeated field (one value for both, or one per spatial axis)."""
    if h or w:
        return h, w
    values = list(values)
    if not values:
        return default, default
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return tuple(values)
    raise UnmappableLayer(f'layer {layer}: {what} has {len(values)} values; only 2-D spatial nets export')


def _conv_attrs(layer, cp):
    if cp.axis != 1:
        raise UnmappableLayer(f'layer {layer}: convolution_param.axis {cp.axis}; only axis 1 (channels) exports')
    kernel = _spatial(cp.kernel_size, cp.kernel_h, cp.kernel_w, 0, 'kernel_size', layer)
    stride = _spatial(cp.stride, cp.stride_h, cp.stride_w, 1, 'stride', layer)
    pad = _spatial(cp.pad, cp.pad_h, cp.pad_w, 0, 'pad', layer)
    dilation = _spatial(cp.dilation, 0, 0, 1, 'dilation', layer)
    return dict(kernel_shape=list(kernel), strides=list(stride), pads=list(pad) * 2,
                dilations=list(dilation), group=cp.group)


def _check_rank(g, name, blobs):
    for blob in blobs:
        if g.rank(blob) != 4:
            raise UnmappableLayer(f'layer {name}: blob {blob} has {g.rank(blob)} axes; only '
                                  'N x C x H x W blobs export')


def convolution(g, name, lp, layer, bottoms, tops):
    _check_rank(g, name, bottoms)
    inputs = g.inputs(bottoms) + [g.constant(f'{name}/weight', layer.blobs[0].data)]
    if lp.convolution_param.bias_term:
        inputs.append(g.constant(f'{name}/bias', layer.blobs[1].data))
    op = 'Conv' if lp.type == 'Convolution' else 'ConvTranspose'
    g.node(op, inputs, [g.output(name, tops[0])], name=name, **_conv_attrs(name, lp.convolution_param))


def pooling(g, name, lp, layer, bottoms, tops):
    _check_rank(g, name, bottoms)
    pp = lp.pooling_param
    P = caffe_pb2.PoolingParameter
    if len(tops) > 1:
        raise UnmappableLayer(f'layer {name}: a Pooling layer with a mask top does not export')
    if pp.pool not in (P.MAX, P.AVE):
        raise UnmappableLayer(f'layer {name}: {P.PoolMethod.Name(pp.pool)} pooling does not export')
    out = [g.output(name, tops[0])]
    if pp.global_pooling:
        g.node('GlobalMaxPool' if pp.pool == P.MAX else 'GlobalAveragePool', g.inputs(bottoms), out, name=name)
        return
    kernel = (pp.kernel_h, pp.kernel_w) if pp.HasField('kernel_h') else (pp.kernel_size,) * 2
    stride = (pp.stride_h, pp.stride_w) if pp.HasField('stride_h') else (pp.stride,) * 2
    pad = (pp.pad_h, pp.pad_w) if pp.HasField('pad_h') else (pp.pad,) * 2
    attrs = dict(kernel_shape=list(kernel), strides=list(stride), pads=list(pad) * 2,
                 ceil_mode=int(pp.round_mode == P.CEIL))
    if pp.pool == P.MAX:
        g.node('MaxPool', g.inputs(bottoms), out, name=name, **attrs)
    else:
        g.node('AveragePool', g.inputs(bottoms), out, name=name, count_include_pad=1, **attrs)


def relu(g, name, lp, layer, bottoms, tops):
    slope = lp.relu_param.negative_slope
    out = [g.output(name, tops[0])]
    if slope:
        g.node('LeakyRelu', g.inputs(bottoms), out, name=name, alpha=slope)
    else:
        g.node('Relu', g.inputs(bottoms), out, name=name)


def lrn(g, name, lp, layer, bottoms, tops):
    _check_rank(g, name, bottoms)
    p = lp.lrn_param
    (x,) = g.inputs(bottoms)
    if p.norm_region == caffe_pb2.LRNParameter.ACROSS_CHANNELS:
        g.node('LRN', [x], [g.output(name, tops[0])], name=name, size=p.local_size,
               alpha=p.alpha, beta=p.beta, bias=p.k)
        return
    # WITHIN_CHANNEL: x * (1 + alpha * mean of x^2 over a size x size window)^-beta
    pad = (p.local_size - 1) // 2
    squared = g.node('Mul', [x, x], [f'{name}/square'])
    mean = g.node('AveragePool', [squared], [f'{name}/pool'], kernel_shape=[p.local_size] * 2,
                  strides=[1, 1], pads=[pad] * 4, ceil_mode=1, count_include_pad=1)
    scaled = g.node('Mul', [mean, g.constant(f'{name}/alpha', p.alpha)], [f'{name}/scaled'])
    shifted = g.node('Add', [scaled, g.constant(f'{name}/one', 1.0)], [f'{name}/shifted'])
    power = g.node('Pow', [shifted, g.constant(f'{name}/power', -p.beta)], [f'{name}/power_out'])
    g.node('Mul', [x, power], [g.output(name, tops[0])], name=name)


def concat(g, name, lp, layer, bottoms, tops):
    p = lp.concat_param
    axis = p.concat_dim if p.HasField('concat_dim') and not p.HasField('axis') else p.axis
    g.node('Concat', g.inputs(bottoms), [g.output(name, tops[0])], name=name, axis=axis)


def eltwise(g, name, lp, layer, bottoms, tops):
    p = lp.eltwise_param
    E = caffe_pb2.EltwiseParameter
    xs = g.inputs(bottoms)
    out = [g.output(name, tops[0])]
    if p.operation == E.PROD:
        product = xs[0]
        for i, x in enumerate(xs[1:-1]):
            product = g.node('Mul', [product, x], [f'{name}/product{i}'])
        g.node('Mul', [product, xs[-1]], out, name=name)
    elif p.operation == E.MAX:
        g.node('Max', xs, out, name=name)
    else:
        coeffs = list(p.coeff) or [1.0] * len(xs)
        if len(coeffs) != len(xs):
            raise UnmappableLayer(f'layer {name}: {len(coeffs)} coefficients for {len(xs)} bottoms')
        xs = [x if c == 1 else g.node('Mul', [x, g.constant(f'{name}/coeff{i}', c)], [f'{name}/scaled{i}'])
              for i, (x, c) in enumerate(zip(xs, coeffs))]
        g.node('Sum', xs, out, name=name)


def scale(g, name, lp, layer, bottoms, tops):
    """Caffe's Scale: the bottom times a learned factor of shape
    bottom.shape[axis: axis + num_axes], broadcast over the other axes, plus
    an optional learned bias of the same shape."""
    if len(bottoms) != 1:
        raise UnmappableLayer(f'layer {name}: a Scale layer with a factor bottom does not export')
    rank = g.rank(bottoms[0])
    trailing = rank - lp.scale_param.axis % rank  # axes from `axis` on: the factor's, then 1s

    def broadcast(blob):
        return blob.data.reshape(blob.data.shape + (1,) * (trailing - blob.data.ndim))

    (x,) = g.inputs(bottoms)
    out = g.output(name, tops[0])
    factor = g.constant(f'{name}/scale', broadcast(layer.blobs[0]))
    if not lp.scale_param.bias_term:
        g.node('Mul', [x, factor], [out], name=name)
        return
    scaled = g.node('Mul', [x, factor], [f'{name}/scaled'])
    g.node('Add', [scaled, g.constant(f'{name}/bias', broadcast(layer.blobs[1]))], [out], name=name)


def crop(g, name, lp, layer, bottoms, tops):
    """Caffe's Crop: the first bottom cut, from `axis` on, to the second
    bottom's shape at the given offsets; the end is the offset plus the
    reference's runtime shape, so the crop is right at every input size."""
    p = lp.crop_param
    rank = g.rank(bottoms[0])
    axis = p.axis % rank
    axes = list(range(axis, rank))
    offsets = list(p.offset)
    if len(offsets) <= 1:
        offsets = (offsets or [0]) * len(axes)
    elif len(offsets) != len(axes):
        raise UnmappableLayer(f'layer {name}: {len(offsets)} offsets for the {len(axes)} axes from axis {axis}')
    x, reference = g.inputs(bottoms)
    starts = g.constant(f'{name}/starts', offsets)
    shape = g.node('Shape', [reference], [f'{name}/reference_shape'], start=axis)
    ends = g.node('Add', [starts, shape], [f'{name}/ends'])
    g.node('Slice', [x, starts, ends, g.constant(f'{name}/axes', axes)], [g.output(name, tops[0])], name=name)


def softmax(g, name, lp, layer, bottoms, tops):
    g.node('Softmax', g.inputs(bottoms), [g.output(name, tops[0])], name=name, axis=lp.softmax_param.axis)


def elementwise(op):
    def mapping(g, name, lp, layer, bottoms, tops):
        g.node(op, g.inputs(bottoms), [g.output(name, tops[0])], name=name)
    return mapping


def split(g, name, lp, layer, bottoms, tops):
    """Caffe's Split shares its bottom's data: each top is the bottom's tensor."""
    for top in tops:
        g.writes[top] -= 1
        g.tensor[top] = g.inputs(bottoms)[0]


LAYERS = {
    'Convolution': convolution,
    'Deconvolution': convolution,
    'Pooling': pooling,
    'ReLU': relu,
    'LRN': lrn,
    'Concat': concat,
    'Eltwise': eltwise,
    'Scale': scale,
    'Crop': crop,
    'Softmax': softmax,
    'Dropout': elementwise('Identity'),
    'Sigmoid': elementwise('Sigmoid'),
    'TanH': elementwise('Tanh'),
    'Split': split,
}


def prototxt_layers(net_param, net):
    """[(layer name, LayerParameter or None, caffe layer)] of the layers Caffe
    built (TEST phase; Split layers it inserted have no LayerParameter)."""
    if len(net_param.layers):
        raise UnmappableLayer('the net is in the V1 (layers) format; upgrade it with Caffe\'s '
                              'upgrade_net_proto_text')
    params = {lp.name: lp for lp in net_param.layer}
    return [(name, params.get(name), layer) for name, layer in zip(net._layer_names, net.layers)]


def save(model, path, data, digest_key):
    """Write `model` to `path` and its weights to `data`, a file in the same
    folder (engines memory-map it: reading the weights out of one protobuf
    held the protobuf and the weights built from it at once), its sha256
    recorded in the metadata under `digest_key`; checked with ONNX's
    checker (reading the file: checking the ModelProto in memory would
    serialize its weights once more)."""
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=os.path.basename(data))
    # saving moved the weights out of `model`: written again, small, with their digest
    set_metadata(model, path, {digest_key: file_sha256(data)})


def set_metadata(model, path, metadata):
    """Write `model` (its weights external, as written) to `path` with
    `metadata` ({key: text}) set in its metadata_props, and check it."""
    props = {p.key: p.value for p in model.metadata_props}
    helper.set_model_props(model, {**props, **{k: str(v) for k, v in metadata.items()}})
    with open(path, 'wb') as f:
        f.write(model.SerializeToString())
    onnx.checker.check_model(path)


def add_metadata(path, metadata):
    """Add `metadata` to the ONNX file `path` whose weights are external (a
    model another tool wrote), without reading the weights."""
    set_metadata(onnx.load(path, load_external_data=False), path, metadata)


def convert(net_param, net, opset=DEFAULT_OPSET, metadata=None):
    """The ONNX model of the deploy net (see the module docstring);
    `metadata` ({key: text}) goes into its metadata_props."""
    layers = [(name, lp, layer) for name, lp, layer in prototxt_layers(net_param, net)
              if layer.type != 'Input']
    g = Graph(net, [net.top_names[name] for name, _, _ in layers])
    graph_inputs = []
    for blob in net.inputs:
        g.tensor[blob] = blob
        channels = net.blobs[blob].shape[1] if g.rank(blob) > 1 else None
        dims = [BATCH, channels, HEIGHT, WIDTH][:g.rank(blob)]
        graph_inputs.append(helper.make_tensor_value_info(blob, TensorProto.FLOAT, dims))
    for name, lp, layer in layers:
        mapping = LAYERS.get(layer.type)
        if mapping is None:
            raise UnmappableLayer(f'layer {name} of type {layer.type}: no ONNX mapping (the '
                                  f'exporter maps {", ".join(sorted(LAYERS))})')
        bottoms, tops = net.bottom_names[name], net.top_names[name]
        g.read(bottoms)
        mapping(g, name, lp, layer, bottoms, tops)
    outputs = []
    for blob in net.outputs:
        if g.tensor[blob] != blob:
            raise UnmappableLayer(f'output {blob} is an input written in place: it cannot keep its name')
        shape = net.blobs[blob].shape
        dims = [BATCH, shape[1]] + [None] * (len(shape) - 2) if len(shape) > 1 else None
        outputs.append(helper.make_tensor_value_info(blob, TensorProto.FLOAT, dims))
    g.graph.name = net_param.name or 'fcn'
    g.graph.input.extend(graph_inputs)
    g.graph.output.extend(outputs)
    model = g.model
    model.ir_version = onnx.IR_VERSION
    model.producer_name = 'fcn export.py'
    model.opset_import.append(helper.make_opsetid('', opset))
    if metadata:
        helper.set_model_props(model, {k: str(v) for k, v in metadata.items()})
    return model
