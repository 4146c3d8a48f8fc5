"""nets/: the generated model folders are the published nets."""
import ast
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

import caffe
from common import locations
import nets
from nets.fcn import fcn
from nets.__main__ import generated, stale

from helpers import write_voc

caffe.set_mode_cpu()

ALL_MODELS = [
    'voc-fcn32s', 'voc-fcn16s', 'voc-fcn8s', 'voc-fcn8s-atonce', 'voc-fcn-alexnet',
    'voc-fcn-googlenet', 'nyud-fcn32s', 'nyud-fcn32s-hha', 'nyud-fcn32s-color-d',
    'nyud-fcn32s-color-hha', 'nyud-fcn16s-color-hha', 'siftflow-fcn32s', 'siftflow-fcn16s',
    'siftflow-fcn8s', 'pascalcontext-fcn32s', 'pascalcontext-fcn16s', 'pascalcontext-fcn8s']

# 20+ input sizes between 32 and 640, odd and even.
SIZES = [(32, 32), (33, 47), (64, 95), (100, 101), (127, 128), (161, 200), (187, 250),
         (224, 224), (255, 301), (256, 256), (299, 333), (320, 480), (375, 500), (400, 401),
         (437, 512), (480, 640), (500, 375), (511, 513), (555, 600), (640, 639), (601, 33)]


def deploy_net(name):
    return caffe.Net(os.path.join(locations.MODELS_DIR, name, 'deploy.prototxt'), caffe.TEST)


def net_param(path):
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    param = caffe_pb2.NetParameter()
    with open(path) as f:
        text_format.Merge(f.read(), param)
    return param


def test_every_model_folder_exists():
    assert nets.model_names() == sorted(ALL_MODELS)
    for name in ALL_MODELS:
        model = nets.load(name)
        files = set(os.listdir(model.folder))
        assert {'net.py', 'solver.prototxt', 'deploy.prototxt',
                model.source.train_file, model.source.val_file} <= files


def test_committed_prototxts_match_generators():
    assert stale(generated()) == []


def test_stale_detects_a_changed_file():
    files = generated()
    path = next(iter(files))
    assert stale({path: files[path] + '# edited\n'}) == [path]


@pytest.mark.parametrize('name', ALL_MODELS)
def test_deploy_score_matches_input_size(name):
    net = deploy_net(name)
    inputs = [b for b in net.inputs]
    assert net._layer_names[0] == 'input'
    heads = [k for k in net.blobs if k.startswith('score') and k in net.outputs]
    assert heads, f'{name}: no score output'
    # Every size for the staple VOC nets; a spread of sizes for the rest keeps
    # the suite quick (the VGG16 trunk and heads are the same code).
    sizes = SIZES if name.startswith('voc') else SIZES[::4]
    for h, w in sizes:
        for blob in inputs:
            c = net.blobs[blob].data.shape[1]
            net.blobs[blob].reshape(1, c, h, w)
        net.reshape()
        for head in heads:
            assert net.blobs[head].data.shape[2:] == (h, w), (name, head, h, w)


def test_deploy_nets_have_no_loss_or_dropout():
    for name in ALL_MODELS:
        types = {l.type for l in net_param(os.path.join(locations.MODELS_DIR, name, 'deploy.prototxt')).layer}
        assert not types & {'SoftmaxWithLoss', 'Dropout', 'Python'}, name


def crop_offsets(name, file='deploy.prototxt'):
    param = net_param(os.path.join(locations.MODELS_DIR, name, file))
    return {l.name: list(l.crop_param.offset) for l in param.layer if l.type == 'Crop'}


def test_crop_offsets_are_the_published_ones():
    assert crop_offsets('voc-fcn32s') == {'score': [19]}
    assert crop_offsets('voc-fcn16s') == {'score_pool4c': [5], 'score': [27]}
    assert crop_offsets('voc-fcn8s') == {'score_pool4c': [5], 'score_pool3c': [9], 'score': [31]}
    assert crop_offsets('voc-fcn8s-atonce') == crop_offsets('voc-fcn8s')
    assert crop_offsets('voc-fcn-alexnet') == {'score': [18]}
    for split in ('train.prototxt', 'val.prototxt'):
        assert crop_offsets('voc-fcn8s', split) == crop_offsets('voc-fcn8s')


def test_published_parameter_shapes():
    net = deploy_net('voc-fcn8s')
    shapes = {k: [p.data.shape for p in v] for k, v in net.params.items()}
    assert shapes['conv1_1'] == [(64, 3, 3, 3), (64,)]
    assert shapes['fc6'] == [(4096, 512, 7, 7), (4096,)]
    assert shapes['fc7'] == [(4096, 4096, 1, 1), (4096,)]
    assert shapes['score_fr'] == [(21, 4096, 1, 1), (21,)]
    assert shapes['upscore2'] == [(21, 21, 4, 4)]
    assert shapes['score_pool4'] == [(21, 512, 1, 1), (21,)]
    assert shapes['upscore_pool4'] == [(21, 21, 4, 4)]
    assert shapes['score_pool3'] == [(21, 256, 1, 1), (21,)]
    assert shapes['upscore8'] == [(21, 21, 16, 16)]
    total = sum(p.data.size for v in net.params.values() for p in v)
    assert 134e6 < total < 135e6, total

    assert [p.data.shape for p in deploy_net('voc-fcn32s').params['upscore']] == [(21, 21, 64, 64)]
    assert [p.data.shape for p in deploy_net('voc-fcn16s').params['upscore16']] == [(21, 21, 32, 32)]
    alex = deploy_net('voc-fcn-alexnet')
    assert alex.params['conv1'][0].data.shape == (96, 3, 11, 11)
    assert alex.params['conv2'][0].data.shape == (256, 48, 5, 5)  # grouped
    assert alex.params['fc6'][0].data.shape == (4096, 256, 6, 6)
    assert alex.params['upscore'][0].data.shape == (21, 21, 63, 63)
    assert deploy_net('pascalcontext-fcn8s').params['score_fr'][0].data.shape == (60, 4096, 1, 1)
    assert deploy_net('nyud-fcn32s').params['score_fr'][0].data.shape == (40, 4096, 1, 1)


def test_dataset_variants():
    sift = deploy_net('siftflow-fcn16s')
    assert sift.params['score_fr_sem'][0].data.shape == (33, 4096, 1, 1)
    assert sift.params['score_fr_geo'][0].data.shape == (3, 4096, 1, 1)
    assert 'score_pool4_semc' in sift.blobs and 'upscore16_geo' in sift.params
    assert set(sift.outputs) == {'score_sem', 'score_geo'}
    sift_layers = {l.name for l in net_param(os.path.join(locations.MODELS_DIR, 'siftflow-fcn8s', 'trainval.prototxt')).layer}
    assert {'loss', 'loss_geo'} <= sift_layers

    early = deploy_net('nyud-fcn32s-color-d')
    assert early.blobs['data'].data.shape == (1, 4, 500, 500)
    assert early.params['conv1_1_bgrd'][0].data.shape == (64, 4, 3, 3)
    assert 'conv1_1' not in early.params

    late = net_param(os.path.join(locations.MODELS_DIR, 'nyud-fcn32s-color-hha', 'trainval.prototxt'))
    by_name = {l.name: l for l in late.layer}
    assert {'conv1_1color', 'conv1_1hha', 'fc7color', 'fc7hha', 'score_frcolor', 'score_frhha'} <= set(by_name)
    fused = by_name['score_fused']
    assert fused.type == 'Eltwise' and list(fused.eltwise_param.coeff) == [0.5, 0.5]
    assert list(fused.bottom) == ['score_frcolor', 'score_frhha']
    late16 = deploy_net('nyud-fcn16s-color-hha')
    assert {'score_pool4color', 'score_pool4hha'} <= set(late16.params)
    assert list(late16.inputs) == ['color', 'hha']

    atonce = {l.name: l for l in net_param(os.path.join(locations.MODELS_DIR, 'voc-fcn8s-atonce', 'train.prototxt')).layer}
    assert atonce['scale_pool4'].scale_param.filler.value == pytest.approx(0.01)
    assert atonce['scale_pool3'].scale_param.filler.value == pytest.approx(0.0001)
    assert atonce['scale_pool4'].param[0].lr_mult == 0
    assert list(atonce['score_pool4'].bottom) == ['scale_pool4']
    # other constants (Model.at_once_scales) reach the Scale layers; without
    # at_once there are none
    atonce_model = nets.load(os.path.join(locations.MODELS_DIR, 'voc-fcn8s-atonce'))
    rescaled = {l.name: l for l in fcn(replace(atonce_model, at_once_scales=(0.5, 0.25)), 'deploy').to_proto().layer}
    assert [rescaled[f'scale_{p}'].scale_param.filler.value for p in ('pool4', 'pool3')] == [0.5, 0.25]
    staged = fcn(replace(atonce_model, at_once=False), 'deploy').to_proto().layer
    assert not [l for l in staged if l.type == 'Scale']


def test_learning_rates_losses_and_data_layers():
    import ast
    layers = {l.name: l for l in net_param(os.path.join(locations.MODELS_DIR, 'voc-fcn8s', 'train.prototxt')).layer}
    for name in ('conv1_1', 'fc6', 'score_fr', 'score_pool3'):
        assert [(p.lr_mult, p.decay_mult) for p in layers[name].param] == [(1, 1), (2, 0)]
    for name in ('upscore2', 'upscore_pool4', 'upscore8'):
        assert [p.lr_mult for p in layers[name].param] == [0]
        assert layers[name].convolution_param.bias_term is False
    loss = layers['loss']
    assert loss.loss_param.normalize is False and loss.loss_param.ignore_label == 255
    assert layers['drop6'].dropout_param.dropout_ratio == pytest.approx(0.5)

    data = layers['data']
    assert data.python_param.module == 'layers'
    assert data.python_param.layer == 'SBDDSegDataLayer'
    params = ast.literal_eval(data.python_param.param_str)
    assert params['split'] == 'train' and params['seed'] == 1337
    assert params['sbdd_dir'].startswith('../data/')
    val = {l.name: l for l in net_param(os.path.join(locations.MODELS_DIR, 'voc-fcn8s', 'val.prototxt')).layer}
    vparams = ast.literal_eval(val['data'].python_param.param_str)
    assert val['data'].python_param.layer == 'VOCSegDataLayer' and vparams['split'] == 'seg11valid'

    alex = {l.name: l for l in net_param(os.path.join(locations.MODELS_DIR, 'voc-fcn-alexnet', 'train.prototxt')).layer}
    assert alex['loss'].loss_param.normalize is True
    nyud = {l.name: l for l in net_param(os.path.join(locations.MODELS_DIR, 'nyud-fcn32s-color-hha', 'trainval.prototxt')).layer}
    nparams = ast.literal_eval(nyud['color'].python_param.param_str)
    assert nparams['tops'] == ['color', 'hha', 'label'] and nparams['split'] == 'trainval'


def solver_settings(name):
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    s = caffe_pb2.SolverParameter()
    with open(os.path.join(locations.MODELS_DIR, name, 'solver.prototxt')) as f:
        text_format.Merge(f.read(), s)
    return s


def test_solver_settings_are_the_reference_ones():
    lrs = {'voc-fcn32s': 1e-10, 'voc-fcn16s': 1e-12, 'voc-fcn8s': 1e-14, 'voc-fcn8s-atonce': 1e-10,
           'nyud-fcn32s': 1e-10, 'nyud-fcn32s-hha': 1e-10, 'nyud-fcn32s-color-d': 1e-10,
           'nyud-fcn32s-color-hha': 1e-12, 'pascalcontext-fcn32s': 1e-10,
           'pascalcontext-fcn16s': 1e-12, 'pascalcontext-fcn8s': 1e-14, 'siftflow-fcn32s': 1e-10,
           'siftflow-fcn16s': 1e-12, 'siftflow-fcn8s': 1e-12, 'voc-fcn-alexnet': 1e-4}
    for name, lr in lrs.items():
        s = solver_settings(name)
        assert s.base_lr == pytest.approx(lr), name
        assert s.lr_policy == 'fixed' and s.weight_decay == pytest.approx(5e-4)
        if name == 'voc-fcn-alexnet':
            assert (s.momentum, s.iter_size) == (pytest.approx(0.9), 20)
        else:
            assert (s.momentum, s.iter_size) == (pytest.approx(0.99), 1)
    assert solver_settings('voc-fcn8s').snapshot == 4000
    assert solver_settings('nyud-fcn32s').snapshot == 2000
    assert solver_settings('siftflow-fcn8s').snapshot == 2000
    assert solver_settings('pascalcontext-fcn8s').snapshot == 8000
    assert solver_settings('voc-fcn8s').test_iter == [736]


def test_ilsvrc_nets_convolutionalize():
    classifier = caffe.Net(locations.ilsvrc_prototxt('vgg16', 'classifier'), caffe.TEST)
    fcn = caffe.Net(locations.ilsvrc_prototxt('vgg16', 'fcn'), caffe.TEST)
    assert classifier.params['fc6'][0].data.shape == (4096, 25088)
    assert fcn.params['fc6'][0].data.shape == (4096, 512, 7, 7)
    assert fcn.params['fc8'][0].data.shape == (1000, 4096, 1, 1)
    assert classifier.params.keys() == fcn.params.keys()
    cn = caffe.Net(locations.ilsvrc_prototxt('caffenet', 'fcn'), caffe.TEST)
    assert cn.params['fc6'][0].data.shape == (4096, 256, 6, 6)


def test_model_folder_is_declarative():
    """net.py says only what differs: a short declaration, no layer code."""
    for name in ALL_MODELS:
        with open(os.path.join(locations.MODELS_DIR, name, 'net.py')) as f:
            text = f.read()
        assert len(text.splitlines()) <= 15, name
        assert 'caffe' not in text.replace('caffenet', ''), name


def test_write_regenerates_a_folder(tmp_path):
    model = nets.load('voc-fcn32s')
    model.write(str(tmp_path))
    for name, text in model.prototxts().items():
        assert (tmp_path / name).read_text() == text


@pytest.mark.parametrize('name', ['voc-fcn32s', 'voc-fcn8s'])
def test_val_net_runs_on_fixture_data(tmp_path, name, monkeypatch):
    """The committed val net, as is, reads VOC-layout data from ../data and
    scores every pixel of each image."""
    write_voc(str(tmp_path / 'data' / 'pascal' / 'VOC2011'), {'seg11valid': ['v0', 'v1']}, learnable=True)
    folder = tmp_path / name
    folder.mkdir()
    (folder / 'val.prototxt').write_text(open(os.path.join(locations.MODELS_DIR, name, 'val.prototxt')).read())
    monkeypatch.chdir(folder)
    net = caffe.Net('val.prototxt', caffe.TEST)
    for _ in range(2):
        net.forward()
        assert net.blobs['score'].data.shape[2:] == net.blobs['label'].data.shape[2:]
        assert net.blobs['score'].data.shape[1] == 21
        assert np.isfinite(float(net.blobs['loss'].data))


def test_loss_ablation_options():
    """Model.loss 'sigmoid' and Model.loss_sampling p (PAMI ablations): the
    layers they add, where, and the solver's images per step."""
    base = nets.load(os.path.join(locations.MODELS_DIR, 'voc-fcn16s'))
    sampled = replace(base, loss_sampling=0.25)
    train = {l.name: l for l in fcn(sampled, 'train').to_proto().layer}
    sampling = train['label_sampled']
    assert sampling.python_param.layer == 'LossSamplingLayer' and list(sampling.bottom) == ['label']
    assert ast.literal_eval(sampling.python_param.param_str) == dict(keep=0.25, cell=16, seed=1337)
    assert list(train['loss'].bottom) == ['score', 'label_sampled']
    val = {l.name: l for l in fcn(sampled, 'val').to_proto().layer}
    assert 'label_sampled' not in val and list(val['loss'].bottom) == ['score', 'label']
    assert 'iter_size: 4' in sampled.solver_text() and 'iter_size: 1' in base.solver_text()

    sigmoid = replace(base, loss='sigmoid', loss_sampling=0.5)
    for phase in ('train', 'val'):
        layers = {l.name: l for l in fcn(sigmoid, phase).to_proto().layer}
        assert layers['loss'].type == 'SigmoidCrossEntropyLoss'
        assert layers['loss'].loss_param.ignore_label == 255
        assert not layers['loss'].loss_param.normalize
        assert list(layers['loss'].bottom) == ['score', 'label_onehot']
        assert layers['label_onehot'].python_param.layer == 'OneHotLabelLayer'
        assert list(layers['label_onehot'].bottom) == ['label_sampled' if phase == 'train' else 'label']
    # SIFT Flow: each head gets its own
    siftflow = replace(nets.load(os.path.join(locations.MODELS_DIR, 'siftflow-fcn16s')), loss='sigmoid')
    layers = {l.name: l for l in fcn(siftflow, 'train').to_proto().layer}
    assert ast.literal_eval(layers['geo_onehot'].python_param.param_str) == dict(num_classes=3)
    assert list(layers['loss_geo'].bottom) == ['score_geo', 'geo_onehot']
    with pytest.raises(ValueError, match="loss must be 'softmax' or 'sigmoid'"):
        replace(base, loss='hinge')
    with pytest.raises(ValueError, match='loss_sampling must be a fraction'):
        replace(base, loss_sampling=0)


def test_lr_decay_option():
    """Model.lr_decay_power: Caffe's "poly" policy, which Caffe parses and
    which brings the rate to zero at max_iter; 0 keeps the published fixed rate."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    base = nets.load('voc-fcn32s')
    decayed = replace(base, lr_decay_power=1.0)
    s = caffe_pb2.SolverParameter()
    text_format.Merge(decayed.solver_text(), s)
    assert (s.lr_policy, s.power, s.max_iter) == ('poly', 1.0, base.training_length)
    assert 'lr_policy: "fixed"' in base.solver_text() and 'power' not in base.solver_text()
    with pytest.raises(ValueError, match='lr_decay_power must be >= 0'):
        replace(base, lr_decay_power=-1)


def test_design_card_layout():
    """The model folders sit at the repository root beside the library, reach
    the data as ../data with no link, and `python solve.py` runs in them."""
    root = locations.REPO_DIR
    for entry in ('nets', 'surgery.py', 'score.py', 'layers.py', 'infer.py', 'tests', 'README.md',
                  *ALL_MODELS):
        assert os.path.exists(os.path.join(root, entry)), entry
    assert not os.path.lexists(os.path.join(root, 'nets', 'data'))
    assert nets.load('voc-fcn32s').folder == os.path.join(root, 'voc-fcn32s')
    out = subprocess.run([sys.executable, 'solve.py', '--help'], cwd=os.path.join(root, 'voc-fcn32s'),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and '--resume' in out.stdout, out.stderr


def test_reference_training_lengths():
    """max_iter is the reference solve.py's loop: 25 x 4,000 for VOC, 75 x
    4,000 for all-at-once, 50 x 2,000 NYUD and SIFT Flow, 50 x 8,000 Context."""
    expected = {name: 100000 for name in ALL_MODELS}
    expected.update({'voc-fcn8s-atonce': 300000, 'pascalcontext-fcn32s': 400000,
                     'pascalcontext-fcn16s': 400000, 'pascalcontext-fcn8s': 400000})
    assert {name: solver_settings(name).max_iter for name in ALL_MODELS} == expected


def test_alexnet_convolutions_keep_caffe_defaults():
    """The reference FCN-AlexNet declares no `param` on its trunk's
    convolutions; its score_fr has the learned pair (weights 1/1, biases
    2/0) and the fixed upsampling lr_mult 0."""
    for file in ('train.prototxt', 'val.prototxt', 'deploy.prototxt'):
        layers = net_param(os.path.join(locations.MODELS_DIR, 'voc-fcn-alexnet', file)).layer
        convs = [l for l in layers if l.type == 'Convolution']
        assert [l.name for l in convs] == ['conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7',
                                           'score_fr']
        assert all(len(l.param) == 0 for l in convs[:-1]), file
        assert [(p.lr_mult, p.decay_mult) for p in convs[-1].param] == [(1, 1), (2, 0)], file
        upscore = next(l for l in layers if l.type == 'Deconvolution')
        assert [p.lr_mult for p in upscore.param] == [0]
    vgg = {l.name: l for l in net_param(os.path.join(locations.MODELS_DIR, 'voc-fcn32s', 'train.prototxt')).layer}
    assert len(vgg['conv1_1'].param) == 2


def test_each_dataset_mean_reaches_its_data_layer():
    """Each data layer subtracts its dataset's mean(s): VOC's written in
    param_str, as the reference writes it, the others held by the layer
    (the PASCAL-Context one is the reference's own constant, not the VOC
    mean)."""
    import layers
    means = {}
    for name in ('voc-fcn8s', 'nyud-fcn32s-color-d', 'nyud-fcn32s-color-hha', 'nyud-fcn32s-hha',
                 'siftflow-fcn16s', 'pascalcontext-fcn8s'):
        model = nets.load(name)
        for file in (model.source.train_file, model.source.val_file):
            layer = next(l for l in net_param(os.path.join(model.folder, file)).layer if l.type == 'Python')
            params = ast.literal_eval(layer.python_param.param_str)
            held = getattr(layers, layer.python_param.layer).defaults
            means[name, file] = params.get('mean', params.get('means', held.get('mean', held.get('means'))))
    assert means['pascalcontext-fcn8s', 'train.prototxt'] == (104.007, 116.669, 122.679)
    assert means['voc-fcn8s', 'val.prototxt'] == (104.00699, 116.66877, 122.67892)
    assert means['siftflow-fcn16s', 'test.prototxt'] == (114.578, 115.294, 108.353)
    for name in ('nyud-fcn32s-color-d', 'nyud-fcn32s-color-hha', 'nyud-fcn32s-hha'):
        assert means[name, 'test.prototxt'] == {
            'color': (116.190, 97.203, 92.318), 'hha': (132.431, 94.076, 118.477), 'depth': 7.844}
    assert nets.load('pascalcontext-fcn8s').source.mean == (104.007, 116.669, 122.679)
