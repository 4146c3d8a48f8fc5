"""surgery.py on real (tiny) pycaffe nets, CPU."""
import os
import subprocess
import sys

import numpy as np
import pytest

import caffe
from caffe import layers as L, params as P

from helpers import write_net

import surgery

caffe.set_mode_cpu()

WINDOW = 18   # classifier input; pool2 output is 3 x 3
STRIDE = 4    # two 2 x 2 max poolings


def tiny_ilsvrc(size, fully_connected, fc6_kernel=3):
    """A tiny ILSVRC-like net: conv/pool trunk, then fc6-fc8.

    fully_connected: InnerProduct layers (the classifier); otherwise
    Convolutions (its fully convolutional twin, fc6 kernel = pool2's size).
    Convolutions are unpadded so a window's scores do not depend on its
    surroundings.
    """
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, size, size]))
    n.conv1 = L.Convolution(n.data, kernel_size=3, num_output=4)
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.relu1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.conv2 = L.Convolution(n.pool1, kernel_size=3, num_output=6)
    n.relu2 = L.ReLU(n.conv2, in_place=True)
    n.pool2 = L.Pooling(n.relu2, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    bottom = n.pool2
    for name, outputs, kernel in (('fc6', 10, fc6_kernel), ('fc7', 8, 1), ('fc8', 5, 1)):
        if fully_connected:
            n[name] = L.InnerProduct(bottom, num_output=outputs)
        else:
            n[name] = L.Convolution(bottom, kernel_size=kernel, num_output=outputs)
        if name != 'fc8':
            n['relu' + name[2:]] = L.ReLU(n[name], in_place=True)
        bottom = n[name]
    return n


def randomize(net, seed=0):
    rng = np.random.RandomState(seed)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = 0.3 * rng.randn(*blob.data.shape)
    return net


@pytest.fixture
def classifier_proto(tmp_path):
    return write_net(tiny_ilsvrc(WINDOW, True), tmp_path / 'classifier.prototxt')


@pytest.fixture
def classifier(classifier_proto):
    return randomize(caffe.Net(classifier_proto, caffe.TEST))


def twin(tmp_path, size, **kw):
    proto = write_net(tiny_ilsvrc(size, False, **kw), tmp_path / f'fcn{size}.prototxt')
    return caffe.Net(proto, caffe.TEST)


def classify(net, image):
    net.blobs['data'].data[...] = image
    return net.forward()['fc8'].copy()


def test_transplant_convolutionalizes_same_window(tmp_path, classifier):
    fcn = twin(tmp_path, WINDOW)
    report = surgery.transplant(fcn, classifier)
    assert [c[:3] for c in report.copied] == [('conv1', 'conv1', 0), ('conv1', 'conv1', 1),
                                              ('conv2', 'conv2', 0), ('conv2', 'conv2', 1),
                                              ('fc6', 'fc6', 1), ('fc7', 'fc7', 1),
                                              ('fc8', 'fc8', 1)]
    assert report.coerced == [('fc6', 'fc6', 0, (10, 54), (10, 6, 3, 3)),
                              ('fc7', 'fc7', 0, (8, 10), (8, 10, 1, 1)),
                              ('fc8', 'fc8', 0, (5, 8), (5, 8, 1, 1))]
    assert report.dropped == [] and report.kept == []
    np.testing.assert_array_equal(fcn.params['fc6'][0].data.reshape(10, -1),
                                  classifier.params['fc6'][0].data)

    image = np.random.RandomState(1).randn(1, 3, WINDOW, WINDOW)
    scores = classify(classifier, image)
    fcn_scores = classify(fcn, image)
    assert fcn_scores.shape == (1, 5, 1, 1)
    np.testing.assert_allclose(fcn_scores[:, :, 0, 0], scores, rtol=1e-4, atol=1e-4)


def test_convolutionalized_net_scores_every_window(tmp_path, classifier):
    cells = 4
    size = WINDOW + STRIDE * (cells - 1)
    fcn = twin(tmp_path, size)
    surgery.transplant(fcn, classifier, verbose=False)
    image = np.random.RandomState(2).randn(1, 3, size, size)
    score_map = classify(fcn, image)
    assert score_map.shape == (1, 5, cells, cells)
    for i in range(cells):
        for j in range(cells):
            window = image[:, :, STRIDE * i:STRIDE * i + WINDOW, STRIDE * j:STRIDE * j + WINDOW]
            np.testing.assert_allclose(score_map[:, :, i, j], classify(classifier, window),
                                       rtol=1e-4, atol=1e-4)


def test_transplant_suffix_and_drops(tmp_path, classifier):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, WINDOW, WINDOW]))
    n.conv1_new = L.Convolution(n.data, kernel_size=3, num_output=4, bias_term=False)
    n.extra = L.Convolution(n.conv1_new, kernel_size=1, num_output=2)
    new = caffe.Net(write_net(n, tmp_path / 'new.prototxt'), caffe.TEST)
    report = surgery.transplant(new, classifier, suffix='_new')
    assert report.copied == [('conv1', 'conv1_new', 0)]
    assert ('conv1', 1) in report.dropped and ('fc8', 0) in report.dropped
    assert report.kept == [('extra', 0), ('extra', 1)]
    np.testing.assert_array_equal(new.params['conv1_new'][0].data,
                                  classifier.params['conv1'][0].data)


def test_transplant_size_mismatch_names_layer_and_shapes(tmp_path, classifier):
    fcn = twin(tmp_path, WINDOW, fc6_kernel=2)
    before = fcn.params['conv1'][0].data.copy()
    with pytest.raises(ValueError) as error:
        surgery.transplant(fcn, classifier)
    message = str(error.value)
    assert 'fc6' in message and '(10, 54)' in message and '(10, 6, 2, 2)' in message
    # checked before writing anything
    np.testing.assert_array_equal(fcn.params['conv1'][0].data, before)


def test_upsample_filt_values():
    np.testing.assert_allclose(surgery.upsample_filt(4)[0], np.array([.25, .75, .75, .25]) * .25)
    np.testing.assert_allclose(surgery.upsample_filt(4)[1], np.array([.25, .75, .75, .25]) * .75)
    np.testing.assert_allclose(surgery.upsample_filt(3),
                               np.outer([.5, 1, .5], [.5, 1, .5]))


def deconv_net(tmp_path, channels, size, factor, group=1, kernel=None, num_output=None):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, channels, size, size]))
    convolution_param = dict(num_output=num_output or channels, stride=factor,
                             group=group, bias_term=False)
    if kernel is None:
        convolution_param['kernel_size'] = 2 * factor
    else:
        convolution_param['kernel_h'], convolution_param['kernel_w'] = kernel
    n.upscore = L.Deconvolution(n.data, convolution_param=convolution_param,
                                param=[dict(lr_mult=0)])
    return caffe.Net(write_net(n, tmp_path / 'deconv.prototxt'), caffe.TEST)


@pytest.mark.parametrize('grouped', [False, True], ids=['CxC', 'group'])
@pytest.mark.parametrize('factor', [2, 8, 16, 32])
def test_interp_upsamples_constant_and_ramps(tmp_path, factor, grouped):
    channels, size = 3, 5
    net = deconv_net(tmp_path, channels, size, factor, group=channels if grouped else 1)
    net.params['upscore'][0].data[...] = 7  # interp must clear what it does not set
    surgery.interp(net, ['upscore'])

    y, x = np.mgrid[:size, :size].astype(np.float64)
    slopes = [(0, 0, 3.), (1.5, -2, 0.5), (-0.25, 4, -1)]  # channel 0 constant
    net.blobs['data'].data[0] = [a * y + b * x + c for a, b, c in slopes]
    out = net.forward()['upscore'][0]
    assert out.shape == (channels, (size + 1) * factor, (size + 1) * factor)

    # Input pixel u lands on output coordinate u * factor + factor - 0.5;
    # outputs in [factor, size * factor) have both neighbours.
    interior = np.arange(factor, size * factor)
    u = (interior - factor + 0.5) / factor
    for channel, (a, b, c) in enumerate(slopes):
        expected = a * u[:, None] + b * u[None, :] + c
        np.testing.assert_allclose(out[channel][np.ix_(interior, interior)], expected,
                                   rtol=1e-5, atol=1e-4)


def test_interp_rejects_non_square_and_mixed_channels(tmp_path):
    net = deconv_net(tmp_path, 2, 4, 2, kernel=(4, 2))
    with pytest.raises(ValueError, match='upscore.*4x2'):
        surgery.interp(net, ['upscore'])
    net = deconv_net(tmp_path, 3, 4, 2, num_output=2)
    with pytest.raises(ValueError, match='upscore'):
        surgery.interp(net, ['upscore'])


def score_net(tmp_path, classes, name):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 4, 2, 2]))
    n.score = L.Convolution(n.data, kernel_size=1, num_output=classes)
    return caffe.Net(write_net(n, tmp_path / name), caffe.TEST)


def test_expand_score_keeps_old_classes(tmp_path):
    old = randomize(score_net(tmp_path, 3, 'old.prototxt'))
    new = score_net(tmp_path, 5, 'new.prototxt')
    surgery.expand_score(new, 'score', old, 'score')
    np.testing.assert_array_equal(new.params['score'][0].data[:3], old.params['score'][0].data)
    np.testing.assert_array_equal(new.params['score'][1].data[:3], old.params['score'][1].data)
    assert not new.params['score'][0].data[3:].any() and not new.params['score'][1].data[3:].any()
    with pytest.raises(ValueError, match='score'):
        surgery.expand_score(old, 'score', new, 'score')


def first_conv_net(tmp_path, channels, name):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, channels, 6, 6]))
    n[name] = L.Convolution(n.data, kernel_size=3, num_output=4, pad=1)
    return caffe.Net(write_net(n, tmp_path / f'{name}.prototxt'), caffe.TEST)


@pytest.mark.parametrize('depth', ['zero', 'mean'])
def test_init_early_fusion(tmp_path, depth):
    color = randomize(first_conv_net(tmp_path, 3, 'conv1_1'))
    fused = first_conv_net(tmp_path, 4, 'conv1_1_bgrd')
    surgery.init_early_fusion(fused, color, depth=depth)
    weights = color.params['conv1_1'][0].data
    np.testing.assert_array_equal(fused.params['conv1_1_bgrd'][0].data[:, :3], weights)
    np.testing.assert_array_equal(fused.params['conv1_1_bgrd'][1].data,
                                  color.params['conv1_1'][1].data)
    rng = np.random.RandomState(3)
    bgr, depth_map = rng.randn(1, 3, 6, 6), rng.randn(1, 1, 6, 6)
    color.blobs['data'].data[...] = bgr
    fused.blobs['data'].data[...] = np.concatenate([bgr, depth_map], axis=1)
    color_out = color.forward()['conv1_1']
    fused_out = fused.forward()['conv1_1_bgrd']
    if depth == 'zero':
        np.testing.assert_allclose(fused_out, color_out, rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_allclose(fused.params['conv1_1_bgrd'][0].data[:, 3],
                                   weights.mean(axis=1), rtol=1e-6)


@pytest.fixture
def fake_ilsvrc(tmp_path, classifier):
    weights = str(tmp_path / 'classifier.caffemodel')
    classifier.save(weights)
    fcn_proto = write_net(tiny_ilsvrc(WINDOW, False), tmp_path / 'fcn.prototxt')
    return dict(weights=weights, fcn_proto=fcn_proto,
                classifier_proto=str(tmp_path / 'classifier.prototxt'),
                out=str(tmp_path / 'out' / 'fcn.caffemodel'))


def convert_args(files, *extra):
    return ['convert', '--net', 'vgg16', '--weights', files['weights'], '--out', files['out'],
            '--classifier-proto', files['classifier_proto'],
            '--fcn-proto', files['fcn_proto'], *extra]


def test_convert_writes_reshaped_fc_weights(fake_ilsvrc, classifier):
    surgery.main(convert_args(fake_ilsvrc))
    fcn = caffe.Net(fake_ilsvrc['fcn_proto'], caffe.TEST, weights=fake_ilsvrc['out'])
    for name, shape in (('fc6', (10, 6, 3, 3)), ('fc7', (8, 10, 1, 1)), ('fc8', (5, 8, 1, 1))):
        np.testing.assert_array_equal(fcn.params[name][0].data,
                                      classifier.params[name][0].data.reshape(shape))
        np.testing.assert_array_equal(fcn.params[name][1].data, classifier.params[name][1].data)
    np.testing.assert_array_equal(fcn.params['conv2'][0].data, classifier.params['conv2'][0].data)


def test_convert_refuses_to_overwrite(fake_ilsvrc):
    os.makedirs(os.path.dirname(fake_ilsvrc['out']))
    with open(fake_ilsvrc['out'], 'w') as f:
        f.write('precious')
    result = subprocess.run([sys.executable, surgery.__file__, *convert_args(fake_ilsvrc)],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert fake_ilsvrc['out'] in result.stderr and '--force' in result.stderr
    with open(fake_ilsvrc['out']) as f:
        assert f.read() == 'precious'
    surgery.main(convert_args(fake_ilsvrc, '--force'))
    assert os.path.getsize(fake_ilsvrc['out']) > len('precious')


def test_convert_missing_inputs(fake_ilsvrc, tmp_path):
    missing = str(tmp_path / 'nope.caffemodel')
    with pytest.raises(SystemExit, match='nope.caffemodel'):
        surgery.main(convert_args(dict(fake_ilsvrc, weights=missing)))
    # a caffemodel without the classifier's fc8: Caffe would keep fillers silently
    spec = tiny_ilsvrc(WINDOW, True).to_proto()
    assert spec.layer[-1].name == 'fc8'
    del spec.layer[-1]
    partial_proto = tmp_path / 'partial.prototxt'
    partial_proto.write_text(str(spec))
    partial_weights = str(tmp_path / 'partial.caffemodel')
    caffe.Net(str(partial_proto), caffe.TEST).save(partial_weights)
    with pytest.raises(SystemExit, match='fc8'):
        surgery.main(convert_args(dict(fake_ilsvrc, weights=partial_weights)))
    assert not os.path.exists(fake_ilsvrc['out'])

