"""Caffe's Convolution and Deconvolution with the bounded im2col workspace
(tools/caffe/patches/conv-bounded-workspace.patch): forward and backward
against an independent numpy reference, with the workspace bound set so
small that the layers work in many chunks, and with the default bound."""
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

import caffe
import surgery
from caffe import layers as L
from nets.blocks import upsample

caffe.set_mode_cpu()

FLOAT_BYTES = 4


# ------------------------------------------------------------ numpy reference
def _windows(shape, kernel, pad, stride, dilation):
    """Output spatial shape and, per kernel offset, the slices of the padded
    input that the offset reads for all output positions."""
    out = [(n + 2 * p - d * (k - 1) - 1) // s + 1
           for n, k, p, s, d in zip(shape, kernel, pad, stride, dilation)]
    windows = []
    for offset in itertools.product(*(range(k) for k in kernel)):
        windows.append((offset, tuple(slice(o * d, o * d + s * (m - 1) + 1, s)
                                      for o, d, s, m in zip(offset, dilation, stride, out))))
    return out, windows


def _unpad(x, pad):
    return x[(slice(None), slice(None)) + tuple(slice(p, x.shape[2 + i] - p) for i, p in enumerate(pad))]


def conv_forward(x, w, geometry, group):
    """y[n, o] = sum over the group's channels and the kernel of w * x (float64)."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in geometry['pad']])
    out, windows = _windows(x.shape[2:], w.shape[2:], **geometry)
    o_g, c_g = w.shape[0] // group, w.shape[1]
    y = np.zeros((x.shape[0], w.shape[0], *out))
    for offset, sl in windows:
        patch = xp[(slice(None), slice(None)) + sl]
        for g in range(group):
            y[:, g * o_g:(g + 1) * o_g] += np.einsum(
                'oc,nc...->no...', w[(slice(g * o_g, (g + 1) * o_g), slice(None)) + offset],
                patch[:, g * c_g:(g + 1) * c_g])
    return y


def conv_data_grad(dy, w, x_shape, geometry, group):
    """d(sum dy * conv(x)) / dx: the transposed convolution of dy."""
    dy, w = dy.astype(np.float64), w.astype(np.float64)
    pad = geometry['pad']
    dxp = np.zeros(x_shape[:2] + tuple(n + 2 * p for n, p in zip(x_shape[2:], pad)))
    _, windows = _windows(x_shape[2:], w.shape[2:], **geometry)
    o_g, c_g = w.shape[0] // group, w.shape[1]
    for offset, sl in windows:
        for g in range(group):
            dxp[(slice(None), slice(g * c_g, (g + 1) * c_g)) + sl] += np.einsum(
                'oc,no...->nc...', w[(slice(g * o_g, (g + 1) * o_g), slice(None)) + offset],
                dy[:, g * o_g:(g + 1) * o_g])
    return _unpad(dxp, pad)


def conv_weight_grad(x, dy, kernel, geometry, group):
    """d(sum dy * conv(x)) / dw, w of shape (O, C / group, *kernel)."""
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in geometry['pad']])
    _, windows = _windows(x.shape[2:], kernel, **geometry)
    o_g, c_g = dy.shape[1] // group, x.shape[1] // group
    dw = np.zeros((dy.shape[1], c_g, *kernel))
    for offset, sl in windows:
        patch = xp[(slice(None), slice(None)) + sl]
        for g in range(group):
            summed = [0] + list(range(2, dy.ndim))  # images and positions
            dw[(slice(g * o_g, (g + 1) * o_g), slice(None)) + offset] = np.tensordot(
                dy[:, g * o_g:(g + 1) * o_g], patch[:, g * c_g:(g + 1) * c_g], axes=(summed, summed))
    return dw


def reference(kind, x, w, b, dtop, geometry, group):
    """(top, bottom diff, weight diff, bias diff) of Caffe's layer `kind`.
    A Deconvolution is the transpose of the Convolution with the same weight
    blob (C_bottom x C_top / group x kernel) from its top to its bottom."""
    spatial = tuple(1 for _ in geometry['pad'])
    if kind == 'Convolution':
        top = conv_forward(x, w, geometry, group)
        bottom_diff = conv_data_grad(dtop, w, x.shape, geometry, group)
        weight_diff = conv_weight_grad(x, dtop, w.shape[2:], geometry, group)
    else:
        top_shape = (x.shape[0], w.shape[1] * group) + tuple(
            s * (n - 1) + d * (k - 1) + 1 - 2 * p for n, k, p, s, d in zip(
                x.shape[2:], w.shape[2:], geometry['pad'], geometry['stride'], geometry['dilation']))
        top = conv_data_grad(x, w, top_shape, geometry, group)
        bottom_diff = conv_forward(dtop, w, geometry, group)
        weight_diff = conv_weight_grad(dtop, x, w.shape[2:], geometry, group)
    bias_diff = None
    if b is not None:
        top = top + b.reshape(1, -1, *spatial)
        bias_diff = dtop.astype(np.float64).sum(axis=tuple(i for i in range(dtop.ndim) if i != 1))
    return top, bottom_diff, weight_diff, bias_diff


# ------------------------------------------------------------ Caffe layers
# (name, layer type, bottom shape, layer parameters): odd sizes, padding,
# strides, dilation, groups, 1x1, rectangular kernels, FCN's pad 100 and
# fc6-like kernel, N-D im2col, 3-D.
CASES = [
    ('conv3x3', 'Convolution', (2, 3, 13, 11), dict(num_output=4, kernel_size=3, pad=1)),
    ('conv-stride-group', 'Convolution', (1, 6, 17, 19), dict(num_output=4, kernel_size=5, stride=2, pad=2, group=2)),
    ('conv-dilated-group3', 'Convolution', (2, 6, 15, 16), dict(num_output=9, kernel_size=3, dilation=2, pad=1, group=3)),
    ('conv-rect', 'Convolution', (1, 2, 12, 21), dict(num_output=3, kernel_h=3, kernel_w=5, pad_h=0, pad_w=3,
                                                        stride_h=2, stride_w=1)),
    ('conv-1x1-group', 'Convolution', (2, 4, 9, 7), dict(num_output=6, kernel_size=1, group=2)),
    ('conv-pad100', 'Convolution', (1, 3, 5, 8), dict(num_output=2, kernel_size=3, pad=100)),
    ('conv-fc6-like', 'Convolution', (1, 5, 12, 9), dict(num_output=3, kernel_size=7)),
    ('conv-stride-no-pad', 'Convolution', (1, 2, 10, 10), dict(num_output=2, kernel_size=2, stride=3)),
    ('conv-nd-im2col', 'Convolution', (1, 4, 11, 14), dict(num_output=4, kernel_size=3, stride=2, pad=1,
                                                             dilation=2, group=2, force_nd_im2col=True)),
    ('conv-3d', 'Convolution', (1, 2, 5, 7, 6), dict(num_output=3, kernel_size=[2, 3, 3], pad=[0, 1, 2],
                                                      stride=[1, 2, 1])),
    ('deconv-stride-pad-group', 'Deconvolution', (2, 4, 7, 9), dict(num_output=6, kernel_size=3, stride=2, pad=1,
                                                                    group=2)),
    ('deconv-dilated', 'Deconvolution', (1, 3, 6, 5), dict(num_output=2, kernel_size=3, stride=3, dilation=2)),
    ('deconv-nd-im2col', 'Deconvolution', (1, 2, 5, 6), dict(num_output=3, kernel_size=4, stride=2, pad=1,
                                                               force_nd_im2col=True)),
]


def layer_net(tmp_path, kind, shape, param):
    n = caffe.NetSpec()
    n.data = L.Input(shape=[dict(dim=list(shape))])
    fillers = dict(weight_filler=dict(type='gaussian', std=1.0), bias_filler=dict(type='gaussian', std=1.0))
    n.out = getattr(L, kind)(n.data, convolution_param=dict(param, **fillers))
    return net_from_spec(tmp_path, n)


def net_from_spec(tmp_path, n):
    proto = n.to_proto()
    proto.force_backward = True
    path = tmp_path / 'net.prototxt'
    path.write_text(str(proto))
    return caffe.Net(str(path), caffe.TEST)


def column_matrix(net, name='out'):
    """(rows, columns) of the layer's full im2col matrix: rows are
    C_in x kernel, columns the positions of the convolution's output (for a
    Deconvolution, its bottom)."""
    layer = net.layers[list(net._layer_names).index(name)]
    w = layer.blobs[0].data
    top, bottom = net.blobs[name].data, net.blobs['data'].data
    if layer.type == 'Convolution':
        return int(bottom.shape[1] * np.prod(w.shape[2:])), int(np.prod(top.shape[2:]))
    return int(top.shape[1] * np.prod(w.shape[2:])), int(np.prod(bottom.shape[2:]))


@pytest.fixture
def workspace_limit():
    """Sets the bound for one test and restores it after."""
    default = caffe.conv_workspace_limit()
    yield caffe.set_conv_workspace_limit
    caffe.set_conv_workspace_limit(default)


def run_forward_backward(net, rng):
    x = rng.standard_normal(net.blobs['data'].data.shape).astype(np.float32)
    net.blobs['data'].data[...] = x
    net.forward()
    top = net.blobs['out'].data.copy()
    dtop = rng.standard_normal(top.shape).astype(np.float32)
    net.blobs['out'].diff[...] = dtop
    net.clear_param_diffs()
    net.backward()
    params = net.params['out']
    return (x, dtop, top, net.blobs['data'].diff.copy(), params[0].diff.copy(),
            params[1].diff.copy() if len(params) > 1 else None)


def assert_close(actual, expected, what):
    scale = np.abs(expected).max() + 1e-12
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=2e-6 * scale, err_msg=what)


# Bounds in columns of the im2col matrix: one (every chunk a single output
# position), seven (chunks that start and end within rows), about a fifth of
# the matrix (slabs of whole rows), and the default bound (one chunk).
CHUNKINGS = ['one-column', 'seven-columns', 'fifth', 'default']


@pytest.mark.parametrize('chunking', CHUNKINGS)
@pytest.mark.parametrize('name,kind,shape,param', CASES, ids=[c[0] for c in CASES])
def test_layer_matches_numpy_reference(tmp_path, workspace_limit, name, kind, shape, param, chunking):
    net = layer_net(tmp_path, kind, shape, param)
    rows, columns = column_matrix(net)
    column_bytes = rows * FLOAT_BYTES
    limit = {'one-column': 1, 'seven-columns': 7 * column_bytes,
             'fifth': max(1, columns // 5) * column_bytes, 'default': caffe.conv_workspace_limit()}[chunking]
    workspace_limit(limit)
    x, dtop, top, bottom_diff, weight_diff, bias_diff = run_forward_backward(net, np.random.default_rng(0))
    params = net.params['out']
    group = param.get('group', 1)
    nd = len(shape) - 2

    def per_axis(key, default):
        value = param.get(key, default)
        return list(value) if isinstance(value, list) else [value] * nd
    geometry = dict(pad=per_axis('pad', 0), stride=per_axis('stride', 1), dilation=per_axis('dilation', 1))
    if 'pad_h' in param:
        geometry.update(pad=[param['pad_h'], param['pad_w']], stride=[param['stride_h'], param['stride_w']])
    expected = reference(kind, x, params[0].data, params[1].data, dtop, geometry, group)
    for what, actual, wanted in zip(('top', 'bottom diff', 'weight diff', 'bias diff'),
                                    (top, bottom_diff, weight_diff, bias_diff), expected):
        assert actual.shape == wanted.shape, what
        assert_close(actual, wanted, f'{name}, {chunking}: {what}')
    # the workspace never held more than the bound (or one column, if larger)
    held = caffe.conv_workspace_bytes()
    if name != 'conv-1x1-group':  # 1x1 convolutions need no columns
        assert 0 < held <= max(limit, column_bytes)
        if chunking != 'default':
            assert held < rows * columns * FLOAT_BYTES


@pytest.mark.parametrize('factor', [2, 8, 32])
def test_fcn_bilinear_upsampling(tmp_path, workspace_limit, factor):
    """FCN's upsampling Deconvolution (blocks.upsample, surgery.interp's
    bilinear kernels, no bias) in chunks: the numpy reference and, away from
    the borders, bilinear interpolation of a linear ramp."""
    classes, h, w = 3, 5, 6
    n = caffe.NetSpec()
    n.data = L.Input(shape=[dict(dim=[1, classes, h, w])])
    n.out = upsample(n.data, classes, factor)
    net = net_from_spec(tmp_path, n)
    surgery.interp(net, ['out'])
    rows, _ = column_matrix(net)
    workspace_limit(3 * rows * FLOAT_BYTES)
    x, dtop, top, bottom_diff, weight_diff, _ = run_forward_backward(net, np.random.default_rng(1))
    geometry = dict(pad=[0, 0], stride=[factor] * 2, dilation=[1, 1])
    want_top, want_bottom, want_weight, _ = reference('Deconvolution', x, net.params['out'][0].data,
                                                      None, dtop, geometry, 1)
    assert_close(top, want_top, 'top')
    assert_close(bottom_diff, want_bottom, 'bottom diff')
    assert_close(weight_diff, want_weight, 'weight diff')
    # a ramp along the width is interpolated linearly between input pixels
    ramp = np.broadcast_to(np.arange(w, dtype=np.float32), (1, classes, h, w))
    net.blobs['data'].data[...] = ramp
    net.forward()
    up = net.blobs['out'].data[0, 0]
    # the kernel (2 x factor wide) is centred at factor - 1/2, so output
    # pixel j sits at input coordinate (j - factor + 1/2) / factor
    inner = up[factor * 2:-factor * 2, factor * 2:-factor * 2]
    cols = np.arange(factor * 2, up.shape[1] - factor * 2)
    np.testing.assert_allclose(inner, np.broadcast_to((cols - factor + 0.5) / factor, inner.shape),
                               rtol=1e-5, atol=1e-5)


def test_column_matrix_beyond_int_max(tmp_path):
    """A convolution whose im2col matrix has more than 2^31 elements (stock
    Caffe aborts: "blob size exceeds INT_MAX") runs in chunks; with unit
    weights each output is the number of taps inside the image."""
    channels, size, kernel = 256, 100, 31
    assert channels * kernel * kernel * size * size > 2 ** 31
    n = caffe.NetSpec()
    n.data = L.Input(shape=[dict(dim=[1, channels, size, size])])
    n.out = L.Convolution(n.data, num_output=1, kernel_size=kernel, pad=kernel // 2, bias_term=False,
                          weight_filler=dict(type='constant', value=1))
    net = net_from_spec(tmp_path, n)
    net.blobs['data'].data[...] = 1
    net.forward()
    inside = np.minimum(np.arange(size), kernel // 2) + 1 + np.minimum(size - 1 - np.arange(size), kernel // 2)
    expected = channels * np.outer(inside, inside)
    np.testing.assert_array_equal(net.blobs['out'].data[0, 0], expected)
    assert caffe.conv_workspace_bytes() <= caffe.conv_workspace_limit()


@pytest.mark.parametrize('value,expected', [('0.5', 2 ** 19), ('', 128 * 2 ** 20), ('lots', 128 * 2 ** 20)])
def test_workspace_limit_from_the_environment(value, expected):
    env = dict(os.environ, CAFFE_CONV_WORKSPACE_MB=value, GLOG_minloglevel='0', GLOG_logtostderr='1')
    out = subprocess.run([sys.executable, '-c', 'import caffe; print(caffe.conv_workspace_limit())'],
                         capture_output=True, text=True, env=env, check=True)
    assert int(out.stdout) == expected
    if value == 'lots':  # a bad value is named, and the default used
        assert 'Ignoring CAFFE_CONV_WORKSPACE_MB=lots: expected a number of MiB' in out.stderr


def test_workspace_limit_setting():
    default = caffe.conv_workspace_limit()
    try:
        caffe.set_conv_workspace_limit(12345)
        assert caffe.conv_workspace_limit() == 12345
    finally:
        caffe.set_conv_workspace_limit(default)
    assert caffe.conv_workspace_limit() == default
