"""The reference release's nets run here unchanged: its module names
(voc_layers, nyud_layers, siftflow_layers, pascalcontext_layers) and its data
layers' param_str strings, verbatim, set up every dataset layer on small
fixtures in each dataset's real on-disk format; and the generated model
folders write those same strings."""
import ast
import importlib
import os
from dataclasses import replace

import numpy as np
import pytest
import scipy.io

import caffe
from caffe import layers as L
from caffe.proto import caffe_pb2
from google.protobuf import text_format

import layers
import nets
import score
from common import datasets, locations
from nets.fcn import fcn

caffe.set_mode_cpu()

# The reference release's data-layer param_str strings, as its prototxts
# carry them (key order as written), and the module each names: test data,
# copied verbatim. PASCAL-Context's '../../data' is the release's own quirk.
RELEASE = {
    'SBDDSegDataLayer': (
        'voc_layers',
        "{'sbdd_dir': '../data/sbdd/dataset', 'seed': 1337, 'split': 'train', "
        "'mean': (104.00699, 116.66877, 122.67892)}"),
    'VOCSegDataLayer': (
        'voc_layers',
        "{'voc_dir': '../data/pascal/VOC2011', 'seed': 1337, 'split': 'seg11valid', "
        "'mean': (104.00699, 116.66877, 122.67892)}"),
    'NYUDSegDataLayer': (
        'nyud_layers',
        "{'tops': ['color', 'hha', 'label'], 'seed': 1337, 'nyud_dir': '../data/nyud', "
        "'split': 'trainval'}"),
    'SIFTFlowSegDataLayer': (
        'siftflow_layers',
        "{'siftflow_dir': '../data/sift-flow', 'seed': 1337, 'split': 'trainval'}"),
    'PASCALContextSegDataLayer': (
        'pascalcontext_layers',
        "{'context_dir': '../../data/pascal-context', 'seed': 1337, 'split': 'val', "
        "'voc_dir': '../../data/pascal'}"),
}
RELEASE_TOPS = "['color', 'hha', 'label']"  # NYUD's, in the string above


def release_param_str(layer, split=None, tops=None):
    """The release's string for `layer`, with another split or NYUD tops
    where the release's other nets give those (the rest verbatim)."""
    text = RELEASE[layer][1]
    if split:
        current = ast.literal_eval(text)['split']
        text = text.replace(f"'split': '{current}'", f"'split': '{split}'")
    if tops:
        text = text.replace(RELEASE_TOPS, repr(list(tops)))
    return text


# The PASCAL-Context fixture's labels: task classes (some renamed in the full
# list, some above index 255), then a filler label and 0 (both background).
CONTEXT_PICKS = ('diningtable', 'bedcloth', 'wood', 'aeroplane', 'tvmonitor')


@pytest.fixture
def release(tmp_path, dataset_writers, monkeypatch):
    """Each dataset under tmp/data, and tmp/repo/model as the current folder,
    where both '../data' (tmp/repo/data, a link) and the release's
    '../../data' reach it. Returns what the fixtures hold."""
    data = tmp_path / 'data'
    w = dataset_writers
    context_map = np.array([[w.context_index(t) for t in CONTEXT_PICKS] + [3, 0]] * 4, np.uint16)
    held = {
        'voc': w.voc(str(data / 'pascal' / 'VOC2011'), {'seg11valid': ['v0', 'v1']}),
        'sbdd': w.sbdd(data / 'sbdd' / 'dataset', n=2)[1],
        'nyud': w.nyud(data / 'nyud', splits=('trainval', 'test')),
        'siftflow': w.siftflow(data / 'sift-flow', splits=('trainval', 'test')),
        'context': w.context(data / 'pascal-context', data / 'pascal', context_map,
                             splits=('train', 'val')),
    }
    held['context_label'] = np.array(
        [[datasets.CONTEXT_CLASSES.index(t) for t in CONTEXT_PICKS] + [0, 0]] * 4)
    (tmp_path / 'repo').mkdir()
    (tmp_path / 'repo' / 'data').symlink_to(os.path.join('..', 'data'))
    folder = tmp_path / 'repo' / 'model'
    folder.mkdir()
    monkeypatch.chdir(folder)
    held['folder'] = folder
    return held


def bgr_minus(rgb, mean):
    return (rgb[:, :, ::-1].astype(np.float64) - mean).astype(np.float32).transpose(2, 0, 1)


def expected_tops(layer, held):
    """[{top: array}], one per example the release string's split may serve
    first (training splits shuffle), each top as the layer should give it."""
    if layer == 'VOCSegDataLayer':
        rgb, label = held['voc']['v0']  # seg11valid runs in file order
        return [{'data': bgr_minus(rgb, datasets.VOC_MEAN), 'label': label}]
    if layer == 'SBDDSegDataLayer':
        return [{'data': bgr_minus(rgb, datasets.VOC_MEAN), 'label': seg}
                for rgb, seg in held['sbdd'].values()]
    if layer == 'NYUDSegDataLayer':
        return [{'color': bgr_minus(color, datasets.NYUD_MEAN),
                 'hha': (hha.astype(np.float64) - datasets.NYUD_HHA_MEAN).astype(np.float32)
                 .transpose(2, 0, 1),
                 'depth': (np.log(np.maximum(depth, 1).astype(np.float64))
                           - datasets.NYUD_LOG_DEPTH_MEAN)[np.newaxis].astype(np.float32),
                 'label': np.where(seg == 0, 255, seg.astype(int) - 1)}
                for color, depth, hha, seg in held['nyud'].values()]
    if layer == 'SIFTFlowSegDataLayer':
        rgb, sem, geo = held['siftflow']
        return [{'data': bgr_minus(rgb, datasets.SIFTFLOW_MEAN), 'sem': np.where(sem == 0, 255, sem - 1),
                 'geo': np.where(geo == -1, 255, geo - 1)}]
    return [{'data': bgr_minus(held['context'], datasets.CONTEXT_MEAN), 'label': held['context_label']}]


def top_names(layer, tops=None):
    return {'NYUDSegDataLayer': list(tops or ast.literal_eval(RELEASE_TOPS)),
            'SIFTFlowSegDataLayer': ['data', 'sem', 'geo']}.get(layer, ['data', 'label'])


def release_data_net(layer, param_str, names, path='data.prototxt'):
    """A prototxt holding the data layer as the release declares it (its
    module name, `param_str` as given) and the caffe.Net Caffe builds from it."""
    n = caffe.NetSpec()
    out = L.Python(module=RELEASE[layer][0], layer=layer, ntop=len(names), param_str=param_str)
    for name, top in zip(names, out if len(names) > 1 else [out]):
        n[name] = top
    with open(path, 'w') as f:
        f.write(str(n.to_proto()))
    proto = caffe_pb2.NetParameter()
    with open(path) as f:
        text_format.Merge(f.read(), proto)
    assert proto.layer[0].python_param.param_str == param_str  # what Caffe reads: verbatim
    return caffe.Net(path, caffe.TEST)


SETUPS = [('SBDDSegDataLayer', {}), ('VOCSegDataLayer', {}), ('NYUDSegDataLayer', {}),
          ('NYUDSegDataLayer', dict(split='test', tops=['color', 'label'])),
          ('NYUDSegDataLayer', dict(tops=['hha', 'label'])),
          ('NYUDSegDataLayer', dict(split='test', tops=['color', 'depth', 'label'])),
          ('SIFTFlowSegDataLayer', {}), ('SIFTFlowSegDataLayer', dict(split='test')),
          ('PASCALContextSegDataLayer', {})]
CLASS_COUNTS = {'SBDDSegDataLayer': {'label': 21}, 'VOCSegDataLayer': {'label': 21},
                'NYUDSegDataLayer': {'label': 40}, 'SIFTFlowSegDataLayer': {'sem': 33, 'geo': 3},
                'PASCALContextSegDataLayer': {'label': 60}}


@pytest.mark.parametrize('layer, change', SETUPS,
                         ids=['-'.join([l, c.get('split', 'verbatim'), *c.get('tops', ())])
                              for l, c in SETUPS])
def test_release_param_str_sets_up_each_layer(release, layer, change):
    """Each release string, verbatim, under its release module name: the
    layer is this project's, checks labels against its dataset's class
    count(s), and gives the fixture's pixels minus the dataset's mean."""
    names = top_names(layer, change.get('tops'))
    net = release_data_net(layer, release_param_str(layer, **change), names)
    assert type(net.layers[0]) is getattr(layers, layer)
    assert net.layers[0].num_classes == CLASS_COUNTS[layer]
    net.forward()
    got = {name: net.blobs[name].data[0] for name in names}
    candidates = expected_tops(layer, release)
    label_top = 'sem' if layer == 'SIFTFlowSegDataLayer' else 'label'
    (expected,) = [c for c in candidates if np.array_equal(got[label_top][0], c[label_top])]
    for name in names:
        want = expected[name] if expected[name].ndim == 3 else expected[name][np.newaxis]
        np.testing.assert_allclose(got[name], want, rtol=0, atol=1e-5, err_msg=name)


def corrupt_labels(layer, held, save_palette_png):
    """Put a value outside the dataset's classes into every label file the
    release string reads; returns (part of a file's path the message names,
    the values as it shows them, the count it names)."""
    if layer == 'VOCSegDataLayer':
        label = held['voc']['v0'][1].copy()
        label[2, 2] = 21
        save_palette_png('../data/pascal/VOC2011/SegmentationClass/v0.png', label)
        return 'pascal/VOC2011/SegmentationClass/v0.png', 'label values 21 outside 0..20', \
            "the net's 21 classes"
    if layer == 'SBDDSegDataLayer':
        for idx, (_, seg) in held['sbdd'].items():
            scipy.io.savemat(f'../data/sbdd/dataset/cls/{idx}.mat',
                             {'GTcls': {'Segmentation': np.where(seg == 255, 21, seg)}})
        return 'sbdd/dataset/cls/2008_00000', 'label values 21 outside 0..20', "the net's 21 classes"
    if layer == 'NYUDSegDataLayer':
        for idx in held['nyud']:
            scipy.io.savemat(f'../data/nyud/segmentation/img_{idx}.mat',
                             {'segmentation': np.full((6, 8), 41, np.uint8)})
        return 'nyud/segmentation/img_000', 'label values [41]', "the net's 40 classes"
    if layer == 'SIFTFlowSegDataLayer':
        scipy.io.savemat(f'../data/sift-flow/SemanticLabels/{layers.SIFTFlowSegDataLayer.SUBDIR}/'
                         'coast_n1.mat', {'S': np.full((8, 8), 34, np.int32)})
        return 'sift-flow/SemanticLabels/', 'label values [34]', "the net's 33 classes"
    scipy.io.savemat('../../data/pascal-context/trainval/2008_000002.mat',
                     {'LabelMap': np.full((4, 7), 460, np.uint16)})
    return 'pascal-context/trainval/2008_000002.mat', 'LabelMap values [460]', 'label list 0..459'


@pytest.mark.parametrize('layer', list(RELEASE))
def test_release_param_str_rejects_a_label_outside_the_datasets_classes(release, dataset_writers,
                                                                        layer):
    """With no class count in param_str, the dataset's own is the check: a
    label outside it is one line naming the file and the value."""
    where, values, count = corrupt_labels(layer, release, dataset_writers.save_palette_png)
    with pytest.raises(layers.DataError) as err:
        release_data_net(layer, release_param_str(layer), top_names(layer))
    message = str(err.value)
    assert '\n' not in message
    assert where in message and values in message and count in message, message


# The release's train and val nets this checks, the data layer of each: the
# release string (with its split) of that layer.
RELEASE_NETS = {
    'voc-fcn8s': {'train': ('SBDDSegDataLayer', None), 'val': ('VOCSegDataLayer', None)},
    'nyud-fcn32s-color-hha': {'train': ('NYUDSegDataLayer', None), 'val': ('NYUDSegDataLayer', 'test')},
    'siftflow-fcn8s': {'train': ('SIFTFlowSegDataLayer', None), 'val': ('SIFTFlowSegDataLayer', 'test')},
    'pascalcontext-fcn8s': {'train': ('PASCALContextSegDataLayer', 'train'),
                            'val': ('PASCALContextSegDataLayer', None)},
}


def release_net(name, phase):
    """Model `name`'s `phase` net with the release's data layer (module name
    and param_str verbatim), on a trunk 1/32 as wide as the published one
    (the same layers, so it runs in a moment)."""
    model = replace(nets.load(name), trunk_width=1 / 32, trunk_filler='msra')
    proto = fcn(model, phase).to_proto()
    layer, split = RELEASE_NETS[name][phase]
    (data,) = [l for l in proto.layer if l.type == 'Python' and l.python_param.layer == layer]
    data.python_param.module = RELEASE[layer][0]
    data.python_param.param_str = release_param_str(layer, split)
    return proto


@pytest.mark.parametrize('name', list(RELEASE_NETS))
def test_release_train_and_val_nets_run(release, name):
    """VOC FCN-8s, NYUD RGB-HHA, SIFT Flow and PASCAL-Context train and val
    nets, as the release writes their data layers, build and run a forward
    pass: every head scores every pixel of its label, with a finite loss."""
    heads = nets.load(name).source.heads
    for phase in ('train', 'val'):
        path = f'{phase}.prototxt'
        with open(path, 'w') as f:
            f.write(str(release_net(name, phase)))
        net = caffe.Net(path, caffe.TRAIN if phase == 'train' else caffe.TEST)
        assert type(net.layers[0]).__module__ == 'layers'
        net.forward()
        for head in heads:
            assert net.blobs[head.score].data.shape[1] == head.num_classes
            assert net.blobs[head.score].data.shape[2:] == net.blobs[head.label].data.shape[2:]
            assert np.isfinite(float(net.blobs[head.loss].data)), (name, phase, head.loss)
            assert (net.blobs[head.label].data != datasets.VOID).any()


def test_score_reads_a_release_val_net(release):
    """score.py finds the data layer of a folder holding only the release's
    val.prototxt (module voc_layers, no class count) and scores its labels
    with the dataset's classes (the stride upper bound needs no weights)."""
    with open('val.prototxt', 'w') as f:
        f.write(str(release_net('voc-fcn8s', 'val')))
    report = score.upper_bounds(str(release['folder']), [1], progress=False)
    assert report['split'] == 'seg11valid' and report['images'] == 2
    result = report['factors'][1]['label']
    assert result['hist'].shape == (21, 21)
    assert result['pixel_acc'] == pytest.approx(1.0)  # the ground truth at stride 1 is itself


# What each generated train/val net's data layer must be: the release's
# layer and string (paths as the repository has them), by model and file.
NYUD_TOPS = {'nyud-fcn32s': ['color', 'label'], 'nyud-fcn32s-hha': ['hha', 'label'],
             'nyud-fcn32s-color-d': ['color', 'depth', 'label'],
             'nyud-fcn32s-color-hha': ['color', 'hha', 'label'],
             'nyud-fcn16s-color-hha': ['color', 'hha', 'label']}
FILE_SPLITS = {'train.prototxt': 'train', 'val.prototxt': 'val', 'trainval.prototxt': 'trainval',
               'test.prototxt': 'test'}


def expected_data_layer(name, file):
    """(layer, param_str) the release gives model `name`'s `file`."""
    if name.startswith('voc-'):
        layer = 'SBDDSegDataLayer' if file == 'train.prototxt' else 'VOCSegDataLayer'
        return layer, release_param_str(layer)
    if name.startswith('nyud-'):
        return 'NYUDSegDataLayer', release_param_str('NYUDSegDataLayer', FILE_SPLITS[file],
                                                     NYUD_TOPS[name])
    if name.startswith('siftflow-'):
        return 'SIFTFlowSegDataLayer', release_param_str('SIFTFlowSegDataLayer', FILE_SPLITS[file])
    text = release_param_str('PASCALContextSegDataLayer', FILE_SPLITS[file])
    return 'PASCALContextSegDataLayer', text.replace("'../../data/", f"'{locations.DATA_FROM_MODEL}/")


def test_generated_data_layers_are_the_releases():
    """Every published model's committed train/val net: its data layer's
    param_str is the release's string, byte for byte (module `layers`, this
    project's name)."""
    checked = 0
    for name in nets.model_names():
        model = nets.load(name)
        for file in (model.source.train_file, model.source.val_file):
            proto = caffe_pb2.NetParameter()
            with open(os.path.join(model.folder, file)) as f:
                text_format.Merge(f.read(), proto)
            (data,) = [l for l in proto.layer if l.type == 'Python']
            layer, param_str = expected_data_layer(name, file)
            assert (data.python_param.module, data.python_param.layer) == ('layers', layer), (name, file)
            assert data.python_param.param_str == param_str, (name, file)
            checked += 1
    assert checked == 2 * len(nets.model_names()) == 34


def test_a_net_that_overrides_a_fact_writes_it():
    """A fact the layer holds goes into param_str only where the net's
    differs: another class count, another mean, a user's own data. The
    release's keys come first, in its order."""
    five = nets.VOC(heads=(nets.Head('', datasets.VOC_CLASSES[:5]),))
    layer, params = five.data_layer_params('train')
    assert layer == 'SBDDSegDataLayer'
    assert list(params) == ['sbdd_dir', 'seed', 'split', 'mean', 'num_classes']
    assert params['num_classes'] == 5
    assert nets.VOC(mean=(1.0, 2.0, 3.0)).data_layer_params('seg11valid')[1]['mean'] == (1.0, 2.0, 3.0)

    sift = nets.SIFTFlow(mean=(1.0, 2.0, 3.0)).data_layer_params('test')[1]
    assert sift['mean'] == (1.0, 2.0, 3.0) and 'num_classes' not in sift
    geo_only = replace(nets.SIFTFlow(), heads=nets.SIFTFlow().heads[1:])
    assert geo_only.data_layer_params('test')[1]['num_classes'] == 3
    context = nets.Context(heads=(nets.Head('', datasets.CONTEXT_CLASSES[:10]),))
    assert context.data_layer_params('val')[1]['num_classes'] == 10
    assert 'mean' in nets.Context(mean=datasets.VOC_MEAN).data_layer_params('val')[1]

    hha = nets.NYUD(modalities=('color', 'hha'),
                    means=dict(datasets.NYUD_MEANS, hha=(1.0, 2.0, 3.0))).data_layer_params('test')[1]
    assert hha['means'] == {'color': datasets.NYUD_MEAN, 'hha': (1.0, 2.0, 3.0)}
    depth = nets.NYUD(modalities=('color', 'depth'),
                      means=dict(datasets.NYUD_MEANS, hha=(1.0, 2.0, 3.0))).data_layer_params('test')[1]
    assert 'means' not in depth  # its own modalities subtract the dataset's means

    class OwnData(nets.VOC):
        def dataset_params(self, split):
            return 'SegDataLayer', dict(list_file=f'{split}.txt', seed=nets.SEED)

    own = OwnData(heads=(nets.Head('', datasets.VOC_CLASSES),)).data_layer_params('val')[1]
    assert own['num_classes'] == 21  # SegDataLayer knows no classes of its own
    assert 'mean' not in own  # the VOC mean, SegDataLayer's own default


def test_release_module_names_are_this_layers_module():
    """voc_layers, nyud_layers, siftflow_layers and pascalcontext_layers
    import from layers_aliases/ (on the environment's path, not the
    repository's root) and give the very classes of layers.py."""
    aliases = os.path.join(locations.REPO_DIR, 'layers_aliases')
    assert sorted(f[:-3] for f in os.listdir(aliases) if f.endswith('.py')) == \
        sorted(layers.RELEASE_MODULES)
    classes = [name for name, value in vars(layers).items() if not name.startswith('_')
               and isinstance(value, type) and issubclass(value, caffe.Layer)]
    assert set(RELEASE) < set(classes)
    for module in layers.RELEASE_MODULES:
        assert not os.path.exists(os.path.join(locations.REPO_DIR, module + '.py'))
        try:
            alias = importlib.import_module(module)
        except ImportError:
            pytest.fail(f'{module} does not import: run `make venv` to put {aliases} on the path')
        assert os.path.dirname(alias.__file__) == aliases
        for name in classes:
            assert getattr(alias, name) is getattr(layers, name), (module, name)
