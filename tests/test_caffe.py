"""The Caffe foundation: the pycaffe built by tools/caffe/build.sh works for
everything FCN needs (NetSpec, coord_map crops, Python layers, SGD, I/O)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import caffe
from caffe import coord_map, layers as L, params as P

from helpers import write_net

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
caffe.set_mode_cpu()


def test_pycaffe_is_the_project_build():
    pkg = os.path.dirname(caffe.__file__)
    assert pkg.startswith(sys.prefix), 'pycaffe must be installed in the project venv'
    assert os.path.exists(os.path.join(pkg, '_caffe.so'))
    with open(os.path.join(pkg, 'build-info.json')) as f:
        info = json.load(f)
    assert info['variant'] == 'cpu'
    assert 'e0eb3f06794f7402c77b7dec8e8480273ee1a1bb192e9122b621a69d4147ad0c' in info['source'] \
        or 'CAFFE_SRC' in info['source']
    assert 'project/protobuf-3.18-SetTotalBytesLimit.patch' in info['patches']
    assert any(p.startswith('debian/') for p in info['patches'])
    assert '-DCPU_ONLY=ON' in info['cmake_options'] and '-DUSE_OPENCV=OFF' in info['cmake_options']


def test_build_report_command():
    out = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'caffe', 'info.py')],
                         capture_output=True, text=True, check=True).stdout
    for word in ('Caffe source', 'Patches', 'SetTotalBytesLimit', 'OpenBLAS', 'Cache'):
        assert word in out


def test_caffe_tool_runs_without_library_path():
    env = {k: v for k, v in os.environ.items() if k != 'LD_LIBRARY_PATH'}
    out = subprocess.run([os.path.join(sys.prefix, 'bin', 'caffe'), '--version'],
                         capture_output=True, text=True, env=env)
    assert 'caffe version 1.0.0' in (out.stdout + out.stderr)


def fcn_like(h, w):
    """Conv (pad 100) -> pool -> conv -> pool -> deconv -> crop to input."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=[dict(dim=[1, 3, h, w])])
    n.conv1 = L.Convolution(n.data, num_output=4, kernel_size=3, pad=100)
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.conv2 = L.Convolution(n.pool1, num_output=4, kernel_size=3, pad=1)
    n.pool2 = L.Pooling(n.conv2, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.fc = L.Convolution(n.pool2, num_output=5, kernel_size=7)
    n.up = L.Deconvolution(n.fc, convolution_param=dict(num_output=5, kernel_size=8, stride=4, bias_term=False))
    n.score = coord_map.crop(n.up, n.data)
    return n


@pytest.mark.parametrize('h,w', [(1, 1), (5, 8), (17, 16), (32, 33), (99, 100), (128, 127), (255, 256)])
def test_coord_map_crop_aligns_output_to_input(tmp_path, h, w):
    net = caffe.Net(write_net(fcn_like(h, w), tmp_path / 'net.prototxt'), caffe.TEST)
    net.forward()
    assert net.blobs['score'].data.shape == (1, 5, h, w)


def test_coord_map_offset_is_derived():
    n = fcn_like(10, 10)
    proto = n.to_proto()
    crop = [l for l in proto.layer if l.type == 'Crop'][0]
    # Receptive-field centres in input pixels: conv1 (k3, pad 100) -99;
    # pool1 +0.5; pool2 +0.5 x 2; fc (k7) at stride 4: +3 x 4; deconv (k8,
    # stride 4) -3.5 -> input = up - 99 + 0.5 + 1 + 12 - 3.5 = up - 89.
    assert list(crop.crop_param.offset) == [89] and crop.crop_param.axis == 2


class ConstantDataLayer(caffe.Layer):
    """A Python layer of the project's test-suite: emits a fixed image and a
    label map (with void pixels) derived from it."""

    def setup(self, bottom, top):
        rng = np.random.RandomState(int(self.param_str))
        self.data = rng.randn(1, 3, 12, 12).astype(np.float32)
        self.label = (self.data[:, :1] > 0).astype(np.float32)
        self.label[..., :2, :] = 255

    def reshape(self, bottom, top):
        top[0].reshape(*self.data.shape)
        top[1].reshape(*self.label.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.data
        top[1].data[...] = self.label

    def backward(self, top, propagate_down, bottom):
        pass


def classifier_net(tmp_path):
    n = caffe.NetSpec()
    n.data, n.label = L.Python(module='test_caffe', layer='ConstantDataLayer', ntop=2, param_str='7')
    n.score = L.Convolution(n.data, num_output=2, kernel_size=3, pad=1,
                            weight_filler=dict(type='gaussian', std=0.1))
    n.loss = L.SoftmaxWithLoss(n.score, n.label, loss_param=dict(ignore_label=255, normalize=False))
    return write_net(n, tmp_path / 'train.prototxt')


def test_python_layer_feeds_a_net(tmp_path):
    net = caffe.Net(classifier_net(tmp_path), caffe.TRAIN)
    net.forward()
    rng = np.random.RandomState(7)
    expected = rng.randn(1, 3, 12, 12).astype(np.float32)
    np.testing.assert_array_equal(net.blobs['data'].data, expected)
    assert set(np.unique(net.blobs['label'].data)) == {0, 1, 255}


def test_sgd_lowers_softmax_loss(tmp_path):
    net_path = classifier_net(tmp_path)
    solver_path = tmp_path / 'solver.prototxt'
    solver_path.write_text(f'train_net: "{net_path}"\nbase_lr: 0.001\nmomentum: 0.9\n'
                           'lr_policy: "fixed"\nmax_iter: 100\ndisplay: 0\nsnapshot: 0\n'
                           'random_seed: 1\n')
    solver = caffe.SGDSolver(str(solver_path))
    solver.net.forward()
    first = float(solver.net.blobs['loss'].data)
    solver.step(40)
    last = float(solver.net.blobs['loss'].data)
    assert solver.iter == 40
    assert last < 0.5 * first, (first, last)


def test_caffemodel_round_trip_is_exact(tmp_path):
    path = classifier_net(tmp_path)
    net = caffe.Net(path, caffe.TRAIN)
    rng = np.random.RandomState(0)
    for blobs in net.params.values():
        for b in blobs:
            b.data[...] = rng.randn(*b.data.shape)
    weights = str(tmp_path / 'w.caffemodel')
    net.save(weights)
    loaded = caffe.Net(path, caffe.TRAIN, weights=weights)
    for name, blobs in net.params.items():
        for a, b in zip(blobs, loaded.params[name]):
            np.testing.assert_array_equal(a.data, b.data)
