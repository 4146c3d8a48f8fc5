"""export.py and the ONNX Runtime engine: every deploy net of the repository
exported and matched against Caffe (random weights, small odd sizes), the
command's file and messages, and infer.py's and score.py's onnx engine
against their Caffe engine.

A VGG16 deploy net holds 134 M parameters (fc6 alone 103 M), and making,
converting and loading them takes 10-40 s a net on 2 cores: the nets of
FULL_WIDTH run as they are, the others with their trunk's convolutions
narrowed (helpers.NARROWING; same layers, kernels, strides, pads, groups, crops and
class counts, fewer channels). FCN_EXPORT_FULL_WIDTH=1 runs every net at
full width (about 9 minutes on 2 busy cores).
"""
import hashlib
import json
import math
import os

import numpy as np
import onnx
import pytest
from PIL import Image

import caffe
import export
import infer
import nets
import onnx_engine
import openvino_engine
from common import caffe_setup, snapshots
import score
from helpers import BF16_AGREEMENT, agreement, narrowed, random_weights

caffe.set_mode_cpu()
# (engine, precision): the rows of engines.ENGINES whose labels must agree
# exactly, and OpenVINO's bf16, held to BF16_AGREEMENT (where the CPU has it)
EXACT_RUNS = (('caffe', None), ('onnx', None), ('openvino', 'f32'))
BF16_RUN = ('openvino', 'bf16')

# Full-width nets, one per trunk.
FULL_WIDTH = ('voc-fcn8s', 'voc-fcn-alexnet', 'voc-fcn-googlenet')
SECOND_SIZE = (45, 71)  # (height, width): a second size where shapes must follow
# Nets also run at SECOND_SIZE, a size the file was not checked at: every
# skip crop (FCN-8s), two outputs (SIFT Flow), two inputs (late fusion).
TWO_SIZES = ('voc-fcn8s', 'siftflow-fcn16s', 'nyud-fcn16s-color-hha')


@pytest.mark.parametrize('name', nets.model_names())
def test_every_deploy_net_matches_caffe(name, tmp_path):
    deploy = os.path.join(nets.load(name).folder, 'deploy.prototxt')
    net_param = onnx_engine.read_deploy(deploy)
    if name not in FULL_WIDTH and os.environ.get('FCN_EXPORT_FULL_WIDTH') != '1':
        deploy = narrowed(net_param, str(tmp_path / 'narrow.prototxt'))
    net = caffe.Net(deploy, caffe.TEST)
    random_weights(net, seed=len(name))
    out = str(tmp_path / f'{name}.onnx')
    worst, onnx_net = onnx_engine.export_net(net_param, net, out, where=deploy)
    # every output checked, within the tolerance of its range
    assert sorted(worst) == sorted(net.outputs)
    assert all(ratio <= onnx_engine.CHECK_TOLERANCE for ratio in worst.values())
    assert onnx_net.inputs == list(net.inputs) and onnx_net.outputs == list(net.outputs)
    assert f'{name}.onnx' in os.listdir(tmp_path) and not any(f.endswith('.part') for f in os.listdir(tmp_path))
    for graph_input in onnx_net.session.get_inputs():
        assert graph_input.shape[2:] == ['height', 'width']
    if name in TWO_SIZES:
        inputs = onnx_engine.random_inputs(net, SECOND_SIZE, seed=1)
        expected = onnx_engine.caffe_outputs(net, inputs)
        assert all(a.shape[2:] == SECOND_SIZE for a in expected.values())
        onnx_engine.compare(expected, onnx_net.run(inputs), out)


UNMAPPABLE = '''
layer {
  name: "softplus"
  type: "BNLL"
  bottom: "score"
  top: "softplus"
}
'''


def test_an_unmappable_layer_is_one_line_and_leaves_nothing(tiny_model, tmp_path):
    folder, weights = tiny_model
    other = tmp_path / 'tiny-bnll'
    other.mkdir()  # a folder of prototxts only: no net.py its deploy net would be stale against
    (other / 'deploy.prototxt').write_text(open(os.path.join(folder, 'deploy.prototxt')).read())
    with open(other / 'deploy.prototxt', 'a') as f:
        f.write(UNMAPPABLE)
    out = tmp_path / 'out.onnx'
    with pytest.raises(SystemExit) as err:
        export.main(['--model', str(other), '--weights', weights, '--out', str(out)])
    message = str(err.value)
    assert message.startswith('export.py: error: ') and '\n' not in message
    assert 'layer softplus of type BNLL: no ONNX mapping' in message
    assert sorted(os.listdir(tmp_path)) == ['tiny-bnll']


def test_export_command_writes_a_checked_file_with_metadata(tiny_model, tmp_path, capsys):
    folder, weights = tiny_model
    out = tmp_path / 'tiny.onnx'
    export.main(['--model', folder, '--weights', weights, '--out', str(out), '--opset', '18'])
    printed = capsys.readouterr().out
    assert f'wrote {out}' in printed and 'matches Caffe' in printed
    model = onnx.load(str(out))
    assert model.opset_import[0].version == 18
    meta = {p.key: p.value for p in model.metadata_props}
    source = nets.load(folder).source
    assert meta['model'] == 'tiny-fcn8s'
    assert json.loads(meta['classes']) == {'score': list(source.heads[0].classes)}
    assert json.loads(meta['inputs'])['data']['mean'] == list(source.mean)
    assert json.loads(meta['inputs'])['data']['channels'] == 'B,G,R'
    with open(weights, 'rb') as f:
        assert meta['caffemodel_sha256'] == hashlib.sha256(f.read()).hexdigest()
    # the weights in a file of their own beside the graph, its sha256 in the metadata
    assert sorted(os.listdir(tmp_path)) == ['tiny.onnx', 'tiny.onnx.data']
    graph = onnx.load(str(out), load_external_data=False).graph
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer if len(t.raw_data) >= 1024)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer)
    with open(f'{out}.data', 'rb') as f:
        assert meta['data_sha256'] == hashlib.sha256(f.read()).hexdigest()
    assert os.path.getsize(out) < os.path.getsize(f'{out}.data')


def test_a_mismatch_is_refused_and_removed(tiny_model, tmp_path, monkeypatch):
    folder, weights = tiny_model
    out = tmp_path / 'tiny.onnx'
    # no tolerance at all: the float sums of the two engines differ in the last bits
    monkeypatch.setattr(onnx_engine, 'CHECK_TOLERANCE', 0.0)
    with pytest.raises(SystemExit, match=r'export.py: error: .*tiny.onnx: output score differs '
                                         r'from Caffe by .* of its range .*; refused'):
        export.main(['--model', folder, '--weights', weights, '--out', str(out)])
    assert os.listdir(tmp_path) == []
    export.main(['--model', folder, '--weights', weights, '--out', str(out), '--no-check'])
    assert sorted(os.listdir(tmp_path)) == ['tiny.onnx', 'tiny.onnx.data']


def test_export_command_errors(tiny_model, tmp_path):
    folder, weights = tiny_model
    with pytest.raises(SystemExit, match='weights not found: .*none.caffemodel'):
        export.main(['--model', folder, '--weights', str(tmp_path / 'none.caffemodel'),
                     '--out', str(tmp_path / 'a.onnx')])
    with pytest.raises(SystemExit, match='--out .*: no folder'):
        export.main(['--model', folder, '--weights', weights, '--out', str(tmp_path / 'no' / 'a.onnx')])
    with pytest.raises(SystemExit):
        export.main(['--model', folder, '--weights', weights, '--out', str(tmp_path / 'a.onnx'),
                     '--opset', '9'])
    # --out's weights file onto an input (here the weights): refused before any work
    named = tmp_path / 'w.onnx.data'
    named.write_bytes(open(weights, 'rb').read())
    with pytest.raises(SystemExit, match="--out's weights file .*w.onnx.data.*the weights"):
        export.main(['--model', folder, '--weights', str(named), '--out', str(tmp_path / 'w.onnx')])
    assert named.read_bytes() == open(weights, 'rb').read() and not (tmp_path / 'w.onnx').exists()


def test_infer_engines_give_the_same_labels(tiny_model, tmp_path, capsys):
    folder, weights = tiny_model
    photo = tmp_path / 'photo.jpg'
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (83, 121, 3), dtype=np.uint8)).save(photo)
    labels = {}
    runs = EXACT_RUNS + ((BF16_RUN,) if 'bf16' in openvino_engine.supported_precisions() else ())
    for engine, precision in runs:
        out = tmp_path / f'{engine}-{precision}'
        infer.main([str(photo), '--model', folder, '--weights', weights, '--out', str(out),
                    '--engine', engine, '--json', str(tmp_path / f'{engine}-{precision}.json')]
                   + (['--precision', precision] if precision else []))
        labels[engine, precision] = np.asarray(Image.open(out / 'photo.png'))
        about = json.loads((tmp_path / f'{engine}-{precision}.json').read_text())
        assert about['engine'] == engine and about.get('precision') == precision
        printed = capsys.readouterr().out
        assert f'tiny-fcn8s: engine {engine} ({precision + ", " if precision else ""}cpu)' in printed
    caffe_labels = labels['caffe', None]
    assert len(np.unique(caffe_labels)) > 1
    for run in EXACT_RUNS:
        np.testing.assert_array_equal(labels[run], caffe_labels)
    if BF16_RUN in labels:
        assert agreement(labels[BF16_RUN], caffe_labels) >= BF16_AGREEMENT[1]  # one image: the worst's share
    labels = {'caffe': caffe_labels}
    with open(weights, 'rb') as f:
        cached = f'{weights}.{hashlib.sha256(f.read()).hexdigest()[:16]}.onnx'
    optimized = onnx_engine.optimized_path(cached)  # ONNX Runtime's, for this CPU
    assert optimized.startswith(cached[:-len('.onnx')] + '.ort-')
    made = {path: os.path.getmtime(path) for path in (cached, optimized)}
    infer.run([str(photo)], model=folder, weights=weights, out=str(tmp_path / 'again'),
              progress=False, engine='onnx')
    assert {path: os.path.getmtime(path) for path in made} == made  # exported and optimized once
    with open(cached, 'wb') as f:
        f.write(b'damaged')
    infer.run([str(photo)], model=folder, weights=weights, out=str(tmp_path / 'third'),
              progress=False, engine='onnx')
    assert onnx_engine.read_export(cached)['export_format'] == onnx_engine.EXPORT_FORMAT  # exported again
    # a byte changed in each weights' file; the optimized graph cut short
    for damaged in (f'{cached}.data', f'{optimized}.data', optimized):
        with open(damaged, 'r+b') as f:
            if damaged == optimized:
                f.truncate(os.path.getsize(damaged) // 2)
            else:
                f.seek(os.path.getsize(damaged) // 2)
                byte = f.read(1)
                f.seek(-1, os.SEEK_CUR)
                f.write(bytes([byte[0] ^ 1]))
        snapshots._sha256_of.cache_clear()  # as a later command finds it: hashed afresh
        with pytest.raises(onnx_engine.ExportError):
            onnx_engine.read_export(damaged[:-len('.data')] if damaged.endswith('.data') else damaged)
        out = tmp_path / f'after-{os.path.basename(damaged)}'
        infer.run([str(photo)], model=folder, weights=weights, out=str(out), progress=False, engine='onnx')
        np.testing.assert_array_equal(np.asarray(Image.open(out / 'photo.png')), labels['caffe'])
        onnx_engine.read_export(cached), onnx_engine.read_export(optimized)  # made again, whole
    with pytest.raises(SystemExit):
        infer.main([str(photo), '--model', folder, '--weights', weights, '--engine', 'onnx', '--gpu', '0'])
    # a CPU-only Caffe refuses any --gpu first; a CUDA one refuses it for this engine
    expected = ('--engine onnx runs on the CPU: not with --gpu' if caffe_setup.cuda_available()
                else 'this Caffe is built for the CPU only')
    assert expected in capsys.readouterr().err
    for engine in ('caffe', 'onnx'):  # refused, not ignored: no figure read as another precision's
        with pytest.raises(SystemExit):
            infer.main([str(photo), '--model', folder, '--weights', weights, '--engine', engine,
                        '--precision', 'bf16'])
        assert (f'--precision bf16 is an option of --engine openvino; --engine {engine} computes in f32 only'
                in capsys.readouterr().err)


def test_segmenter_runs_openvino_from_python(tiny_model):
    folder, weights = tiny_model
    rgb = np.random.default_rng(5).integers(0, 256, (61, 47, 3), dtype=np.uint8)
    reference = infer.Segmenter(folder, weights).predict(rgb)
    segmenter = infer.Segmenter(folder, weights, engine='openvino', precision='f32')
    assert segmenter.describe()['precision'] == 'f32' and segmenter.describe()['engine'] == 'openvino'
    np.testing.assert_array_equal(segmenter.predict(rgb).labels, reference.labels)
    assert isinstance(segmenter.memory_model, infer.OpenvinoMemoryModel)
    with pytest.raises(ValueError, match='precision bf16: the onnx engine computes in f32 only'):
        infer.Segmenter(folder, weights, engine='onnx', precision='bf16')


def test_onnx_memory_model_grows_with_the_image(tiny_model):
    folder, weights = tiny_model
    _, memory = infer.load_engine(nets.load(folder), weights, 'onnx')
    small, large = (memory.needed((h, w), (h, w)) for h, w in ((100, 100), (400, 300)))
    assert 0 < small < large
    assert memory.held(400, 300) == 0  # nothing stays reserved between photos


def test_openvino_memory_model_keeps_the_last_size(tiny_model):
    folder, weights = tiny_model
    model = nets.load(folder)
    _, onnx_memory = infer.load_engine(model, weights, 'onnx')
    _, memory = infer.load_engine(model, weights, 'openvino', precision='f32')
    small, large = (memory.needed((h, w), (h, w)) for h, w in ((100, 100), (400, 300)))
    assert 0 < small < large
    # a VGG16 trunk (narrowed): OpenVINO's measured share, below ONNX Runtime's
    assert model.trunk == 'vgg16' and memory.fraction == infer.OpenvinoMemoryModel.BLOB_FRACTION['vgg16']
    assert memory.fraction < onnx_memory.fraction
    held = memory.held_after(0.0, 400, 300)
    assert 0 < held < memory.fraction * memory.blob_bytes(400, 300)
    assert memory.held_after(held, 100, 100) == memory.held(100, 100) < held  # the last size's, not the largest
    caffe_memory = infer.load_engine(model, weights, 'caffe')[1]
    assert caffe_memory.held_after(caffe_memory.held(400, 300), 100, 100) == caffe_memory.held(400, 300)


def test_score_engines_give_the_same_numbers(tiny_model, tiny_val_images):
    folder, weights = tiny_model
    runs = EXACT_RUNS + ((BF16_RUN,) if 'bf16' in openvino_engine.supported_precisions() else ())
    reports = {run: score.evaluate(folder, weights, split='val', progress=False, engine=run[0],
                                   precision=run[1]) for run in runs}
    caffe_head = reports['caffe', None]['heads']['score']
    assert caffe_head['hist'].sum() > 0
    assert not math.isnan(caffe_head['loss'])
    for run, report in reports.items():
        head = report['heads']['score']
        assert report['images'] == len(tiny_val_images)
        assert report['engine']['engine'] == run[0] and report['engine'].get('precision') == run[1]
        if run == BF16_RUN:  # the share of pixels labelled alike: the confusion matrices' diagonal bounds it
            assert abs(head['mean_iu'] - caffe_head['mean_iu']) <= 1 - BF16_AGREEMENT[0] + 0.01
            continue
        np.testing.assert_array_equal(head['hist'], caffe_head['hist'])
        for key, _ in score.METRICS:
            assert head[key] == caffe_head[key]
        # the loss computed from the engine's scores as Caffe's SoftmaxWithLoss does
        assert head['loss'] == pytest.approx(caffe_head['loss'], rel=1e-4)


def every_layer_kind(tmp_path):
    """A small net with the layers and settings the deploy nets do not use
    but the exporter maps: average, FLOOR-rounded and global pooling,
    dilated grouped convolution, leaky ReLU, both LRN regions, Eltwise PROD
    and MAX, Scale with a bias, Sigmoid, TanH, Dropout, Softmax, a grouped
    Deconvolution and a Crop with an offset per axis."""
    from caffe import layers as L, params as P
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 4, 19, 23]))
    n.conv = L.Convolution(n.data, num_output=6, kernel_size=3, pad=2, dilation=2, group=2)
    n.relu = L.ReLU(n.conv, negative_slope=0.1, in_place=True)
    n.ave = L.Pooling(n.relu, pool=P.Pooling.AVE, kernel_size=3, stride=2, pad=1)
    n.floor = L.Pooling(n.relu, pool=P.Pooling.MAX, kernel_size=3, stride=2, round_mode=P.Pooling.FLOOR)
    n.within = L.LRN(n.relu, local_size=3, alpha=0.5, beta=0.75, norm_region=P.LRN.WITHIN_CHANNEL)
    n.across = L.LRN(n.relu, local_size=5, alpha=0.5, beta=0.75, k=2)
    n.prod = L.Eltwise(n.within, n.across, operation=P.Eltwise.PROD)
    n.max = L.Eltwise(n.prod, n.relu, operation=P.Eltwise.MAX)
    n.scale = L.Scale(n.max, bias_term=True)
    n.sigmoid = L.Sigmoid(n.scale)
    n.tanh = L.TanH(n.sigmoid, in_place=True)
    n.drop = L.Dropout(n.tanh, dropout_ratio=0.5)
    n.softmax = L.Softmax(n.drop)
    n.global_max = L.Pooling(n.drop, pool=P.Pooling.MAX, global_pooling=True)
    n.up = L.Deconvolution(n.ave, convolution_param=dict(num_output=6, kernel_size=4, stride=2, pad=1,
                                                         group=2))
    n.crop = L.Crop(n.up, n.relu, axis=2, offset=[1, 0])
    n.concat = L.Concat(n.crop, n.softmax, n.prod)
    path = tmp_path / 'every.prototxt'
    path.write_text(str(n.to_proto()))
    return str(path)


def test_the_layers_the_deploy_nets_do_not_use_match_caffe(tmp_path):
    deploy = every_layer_kind(tmp_path)
    net = caffe.Net(deploy, caffe.TEST)
    random_weights(net, seed=5)
    out = str(tmp_path / 'every.onnx')
    worst, onnx_net = onnx_engine.export_net(onnx_engine.read_deploy(deploy), net, out, where=deploy)
    assert sorted(worst) == sorted(net.outputs) == ['concat', 'floor', 'global_max']
    for size in ((20, 24), (7, 9)):  # other sizes: even, and smaller than a pooling window's reach
        inputs = onnx_engine.random_inputs(net, size, seed=2)
        onnx_engine.compare(onnx_engine.caffe_outputs(net, inputs), onnx_net.run(inputs), out)
