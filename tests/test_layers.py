"""layers.py inside real Caffe nets, on small fixtures in each dataset's real
on-disk format (JPEG/PNG images, palette PNG labels, MATLAB .mat labels,
16-bit depth PNGs, PASCAL-Context label lists)."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.io
from PIL import Image

import caffe
from caffe import layers as L

from common import datasets
import layers
from helpers import save_palette_png, write_voc
from nets import NYUD
from nets.sources import source_of_data_layer

# ---------------------------------------------------------------- helpers

def dataset_means(layer):
    """The mean param(s) and class counts the dataset's own nets give data
    layer `layer` (NYUD: every modality's mean)."""
    source = source_of_data_layer(layer)
    if source is None:
        return {}
    means = {'means': dict(source.means)} if isinstance(source, NYUD) else {'mean': source.mean}
    return dict(means, num_classes=source.label_classes)


def make_net(tmp_path, layer, params, top_names, phase=caffe.TEST):
    """A net holding only the data layer, built from a prototxt file; a dict
    of params gets the dataset's mean(s) where it names none."""
    if isinstance(params, dict):
        params = {**dataset_means(layer), **params}
    n = caffe.NetSpec()
    tops = L.Python(module='layers', layer=layer, ntop=len(top_names),
                    param_str=params if isinstance(params, str) else str(params))
    for name, top in zip(top_names, tops if len(top_names) > 1 else [tops]):
        setattr(n, name, top)
    path = tmp_path / f'{layer}-{len(list(tmp_path.glob("*.prototxt")))}.prototxt'
    path.write_text(str(n.to_proto()))
    return caffe.Net(str(path), phase)


def step(net):
    """Forward once; copies of all blobs by name."""
    net.forward()
    return {name: blob.data.copy() for name, blob in net.blobs.items()}


def expected_data(rgb, mean):
    """RGB -> BGR minus the mean, float32 C x H x W, computed independently."""
    return (rgb[:, :, ::-1].astype(np.float64) - np.array(mean)).astype(np.float32).transpose(2, 0, 1)


def voc_fixture(root, ids=('a', 'b', 'c'), split='val', sizes=None, seed=0):
    """VOC layout; returns {id: (rgb as decoded, label)}."""
    return write_voc(str(root), {split: list(ids)}, sizes=sizes, seed=seed)


def sbd_sequence(tmp_path, root, steps, **params):
    net = make_net(tmp_path, 'SBDDSegDataLayer', dict(sbdd_dir=str(root), split='train', **params),
                   ['data', 'label'])
    return [step(net) for _ in range(steps)]


# ---------------------------------------------------------------- datasets

def test_voc_bgr_mean_palette_labels_and_file_order(tmp_path):
    data = voc_fixture(tmp_path / 'voc')
    net = make_net(tmp_path, 'VOCSegDataLayer',
                   dict(voc_dir=str(tmp_path / 'voc'), split='val', mean=datasets.VOC_MEAN),
                   ['data', 'label'])
    for idx in ['a', 'b', 'c', 'a']:  # file order, wrapping around
        rgb, label = data[idx]
        blobs = step(net)
        assert blobs['data'].shape == (1, 3) + rgb.shape[:2]
        assert blobs['label'].shape == (1, 1) + label.shape
        assert blobs['data'].dtype == np.float32 and blobs['label'].dtype == np.float32
        np.testing.assert_array_equal(blobs['data'][0], expected_data(rgb, datasets.VOC_MEAN))
        np.testing.assert_array_equal(blobs['label'][0, 0], label)
    assert 255 in blobs['label'] and 20 in blobs['label']


def test_voc_val_split_ignores_randomize(tmp_path):
    voc_fixture(tmp_path / 'voc', ids=('a', 'b', 'c'))
    net = make_net(tmp_path, 'VOCSegDataLayer',
                   dict(voc_dir=str(tmp_path / 'voc'), split='val', randomize=True, seed=3),
                   ['data', 'label'])
    shapes = [step(net)['data'].shape for _ in range(4)]
    assert shapes == [(1, 3, 6, 9), (1, 3, 7, 8), (1, 3, 8, 7), (1, 3, 6, 9)]


def test_sbdd_struct_labels_and_seeded_shuffle(tmp_path, dataset_writers):
    ids, data = dataset_writers.sbdd(tmp_path / 'sbdd', n=5)
    runs = [sbd_sequence(tmp_path, tmp_path / 'sbdd', 10, seed=seed) for seed in (7, 7, 8)]
    order = [int(b['label'][0, 0, 0, 0]) for b in runs[0]]
    # Shuffled per epoch: each epoch visits every example once.
    assert sorted(order[:5]) == sorted(order[5:]) == list(range(5))
    assert order[:5] != list(range(5))
    assert order == [int(b['label'][0, 0, 0, 0]) for b in runs[1]]  # same seed, same order
    assert order != [int(b['label'][0, 0, 0, 0]) for b in runs[2]]
    for blobs in runs[0]:
        k = int(blobs['label'][0, 0, 0, 0])
        rgb, seg = data[ids[k]]
        np.testing.assert_array_equal(blobs['data'][0], expected_data(rgb, datasets.VOC_MEAN))
        np.testing.assert_array_equal(blobs['label'][0, 0], seg)


def test_sbdd_randomize_false_runs_in_file_order(tmp_path, dataset_writers):
    dataset_writers.sbdd(tmp_path / 'sbdd', n=3)
    runs = sbd_sequence(tmp_path, tmp_path / 'sbdd', 4, randomize=False)
    assert [int(b['label'][0, 0, 0, 0]) for b in runs] == [0, 1, 2, 0]


def test_nyud_color_depth_hha_label(tmp_path, dataset_writers):
    data = dataset_writers.nyud(tmp_path / 'nyud')
    net = make_net(tmp_path, 'NYUDSegDataLayer',
                   dict(nyud_dir=str(tmp_path / 'nyud'), split='test',
                        tops=['color', 'depth', 'hha', 'label']),
                   ['color', 'depth', 'hha', 'label'])
    for idx in ('0001', '0002'):
        color, depth, hha, seg = data[idx]
        blobs = step(net)
        assert blobs['depth'].shape == (1, 1, 6, 8) and blobs['label'].shape == (1, 1, 6, 8)
        np.testing.assert_array_equal(blobs['color'][0], expected_data(color, datasets.NYUD_MEAN))
        logd = np.log(np.maximum(depth, 1).astype(np.float64)) - datasets.NYUD_LOG_DEPTH_MEAN
        np.testing.assert_allclose(blobs['depth'][0, 0], logd, rtol=0, atol=1e-5)
        assert np.all(np.isfinite(blobs['depth']))
        assert blobs['depth'][0, 0, 0, 0] == pytest.approx(-datasets.NYUD_LOG_DEPTH_MEAN, abs=1e-6)
        hha_expected = (hha.astype(np.float64) - datasets.NYUD_HHA_MEAN).astype(np.float32)
        np.testing.assert_array_equal(blobs['hha'][0], hha_expected.transpose(2, 0, 1))
        expected_label = np.where(seg == 0, 255, seg.astype(int) - 1)  # 0 -> 255, 40 -> 39
        np.testing.assert_array_equal(blobs['label'][0, 0], expected_label)
        assert blobs['label'][0, 0, 0, 0] == 255 and blobs['label'][0, 0, 0, 1] == 39


def test_nyud_outputs_tops_in_listed_order(tmp_path, dataset_writers):
    data = dataset_writers.nyud(tmp_path / 'nyud')
    net = make_net(tmp_path, 'NYUDSegDataLayer',
                   dict(nyud_dir=str(tmp_path / 'nyud'), split='test', tops=['label', 'hha']),
                   ['first', 'second'])
    blobs = step(net)
    _, _, hha, seg = data['0001']
    assert blobs['first'].shape == (1, 1, 6, 8) and blobs['second'].shape == (1, 3, 6, 8)
    np.testing.assert_array_equal(blobs['first'][0, 0], np.where(seg == 0, 255, seg.astype(int) - 1))


def test_siftflow_semantic_and_geometric_labels(tmp_path, dataset_writers):
    root = tmp_path / 'sift'
    rgb, sem, geo = dataset_writers.siftflow(root)
    net = make_net(tmp_path, 'SIFTFlowSegDataLayer', dict(siftflow_dir=str(root), split='test'),
                   ['data', 'sem', 'geo'])
    blobs = step(net)
    np.testing.assert_array_equal(blobs['data'][0], expected_data(rgb, datasets.SIFTFLOW_MEAN))
    np.testing.assert_array_equal(blobs['sem'][0, 0], np.where(sem == 0, 255, sem - 1))
    np.testing.assert_array_equal(blobs['geo'][0, 0], np.where(geo == -1, 255, geo - 1))
    assert set(np.unique(blobs['geo'])) <= {0, 1, 2, 255}


def test_pascal_context_maps_full_labels_to_59(tmp_path, dataset_writers):
    task = list(datasets.CONTEXT_CLASSES[1:])
    idx = {t: dataset_writers.context_index(t) for t in task}
    # Renamed classes, a spaced name, indices above 255, a filler and 0.
    picks = [idx['diningtable'], idx['bedcloth'], idx['clothes'], idx['pottedplant'],
             idx['wood'], idx['aeroplane'], 3, 459, 0, idx['tvmonitor']]
    label_map = np.array(picks * 2, dtype=np.uint16).reshape(4, 5)
    assert label_map.max() > 255
    rgb = dataset_writers.context(tmp_path / 'context', tmp_path / 'pascal', label_map)
    net = make_net(tmp_path, 'PASCALContextSegDataLayer',
                   dict(voc_dir=str(tmp_path / 'pascal'), context_dir=str(tmp_path / 'context'),
                        split='val'),
                   ['data', 'label'])
    blobs = step(net)
    expected_row = [task.index('diningtable') + 1, task.index('bedcloth') + 1,
                    task.index('clothes') + 1, task.index('pottedplant') + 1, 59, 1, 0, 0, 0,
                    task.index('tvmonitor') + 1]
    np.testing.assert_array_equal(blobs['label'][0, 0], np.array(expected_row * 2).reshape(4, 5))
    np.testing.assert_array_equal(blobs['data'][0], expected_data(rgb, datasets.CONTEXT_MEAN))


# ---------------------------------------------------------------- SegDataLayer

def test_seg_data_layer_list_file_exact_png_and_label_map(tmp_path, dataset_writers):
    rng = np.random.default_rng(3)
    (tmp_path / 'img').mkdir()
    rgb = dataset_writers.random_rgb(rng, 5, 6)
    Image.fromarray(rgb).save(tmp_path / 'img' / 'x.png')
    label = rng.choice([0, 1, 7, 255], (5, 6)).astype(np.uint8)
    Image.fromarray(label).save(tmp_path / 'x_label.png')  # grayscale index PNG
    absolute = tmp_path / 'abs_label.png'
    save_palette_png(absolute, label)
    lst = tmp_path / 'list.txt'
    lst.write_text(f'img/x.png x_label.png\n\nimg/x.png {absolute}\n')
    mean = (10.5, 20.25, 30.125)
    net = make_net(tmp_path, 'SegDataLayer',
                   dict(list_file=str(lst), mean=mean, num_classes=3, label_map={7: 2}),
                   ['data', 'label'])
    for _ in range(3):
        blobs = step(net)
        np.testing.assert_array_equal(blobs['data'][0], expected_data(rgb, mean))
        np.testing.assert_array_equal(blobs['label'][0, 0], np.where(label == 7, 2, label))


def test_seg_data_layer_folders_paired_by_stem_and_rgb_labels(tmp_path, dataset_writers):
    rng = np.random.default_rng(4)
    (tmp_path / 'images').mkdir()
    (tmp_path / 'labels').mkdir()
    labels = {}
    for stem in ('b', 'a'):
        Image.fromarray(dataset_writers.random_rgb(rng, 4, 4)).save(tmp_path / 'images' / f'{stem}.png')
        labels[stem] = rng.choice([0, 1, 2, 255], (4, 4))
        # VOC-coloured RGB label image
        Image.fromarray(datasets.voc_palette()[labels[stem]]).save(tmp_path / 'labels' / f'{stem}.png')
    (tmp_path / 'images' / 'notes.txt').write_text('not an image')
    net = make_net(tmp_path, 'SegDataLayer',
                   dict(image_dir=str(tmp_path / 'images'), label_dir=str(tmp_path / 'labels'),
                        num_classes=3), ['data', 'label'])
    for stem in ('a', 'b', 'a'):  # sorted by stem
        np.testing.assert_array_equal(step(net)['label'][0, 0], labels[stem])


def test_seg_data_layer_reads_a_data_folder(tmp_path):
    """data_dir + split: images/<stem>.<any image ending>, labels/<stem>.png
    (palette and grayscale), a split file as Windows saves it; in file order
    at TEST; a listed stem without an image is an error naming where it was
    looked for."""
    from helpers import write_own_data
    splits = write_own_data(tmp_path / 'd', train=4, val=2)
    stems = splits['train']
    os.replace(tmp_path / 'd' / 'images' / f'{stems[1]}.jpg', tmp_path / 'd' / 'images' / f'{stems[1]}.PNG')
    net = make_net(tmp_path, 'SegDataLayer', dict(data_dir=str(tmp_path / 'd'), split='train',
                                                  num_classes=3), ['data', 'label'])
    for stem in stems + stems[:1]:
        with Image.open(tmp_path / 'd' / 'labels' / f'{stem}.png') as im:
            expected = np.asarray(im)
        np.testing.assert_array_equal(step(net)['label'][0, 0], expected)
    (tmp_path / 'd' / 'val.txt').write_text('ghost\n')
    with pytest.raises(FileNotFoundError, match=r'val.txt: ghost: no image .*/images/ghost.<jpg\|'):
        make_net(tmp_path, 'SegDataLayer', dict(data_dir=str(tmp_path / 'd'), split='val',
                                                num_classes=3), ['data', 'label'])


def test_load_image_conversions(tmp_path, dataset_writers):
    rng = np.random.default_rng(5)
    gray = rng.integers(0, 256, (3, 4), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / 'gray.png')
    np.testing.assert_array_equal(layers.load_image(tmp_path / 'gray.png'), np.stack([gray] * 3, -1))
    rgba = rng.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / 'rgba.png')
    np.testing.assert_array_equal(layers.load_image(tmp_path / 'rgba.png'), rgba[..., :3])
    index = rng.integers(0, 21, (3, 4)).astype(np.uint8)
    save_palette_png(tmp_path / 'pal.png', index)
    np.testing.assert_array_equal(layers.load_image(tmp_path / 'pal.png'), datasets.voc_palette()[index])
    Image.fromarray(dataset_writers.random_rgb(rng, 3, 4)).convert('CMYK').save(tmp_path / 'cmyk.tif')
    with Image.open(tmp_path / 'cmyk.tif') as im:
        assert im.mode == 'CMYK'
        expected = np.asarray(im.convert('RGB'))
    out = layers.load_image(tmp_path / 'cmyk.tif')
    assert out.dtype == np.uint8 and out.shape == (3, 4, 3)
    np.testing.assert_array_equal(out, expected)
    rgb = dataset_writers.random_rgb(rng, 3, 4)
    np.testing.assert_array_equal(layers.preprocess(rgb, datasets.VOC_MEAN),
                                  expected_data(rgb, datasets.VOC_MEAN))


# ---------------------------------------------------------------- order, prefetch, augmentation

def test_prefetch_gives_the_same_sequence(tmp_path, dataset_writers):
    ids, _ = dataset_writers.sbdd(tmp_path / 'sbdd', n=4)
    aug = dict(seed=11, mirror=True, jitter=3)
    with_prefetch = sbd_sequence(tmp_path, tmp_path / 'sbdd', 9, prefetch=True, **aug)
    without = sbd_sequence(tmp_path, tmp_path / 'sbdd', 9, prefetch=False, **aug)
    for a, b in zip(with_prefetch, without):
        np.testing.assert_array_equal(a['data'], b['data'])
        np.testing.assert_array_equal(a['label'], b['label'])


def test_prefetch_loads_in_a_daemon_thread_and_close_stops_it(tmp_path, dataset_writers):
    dataset_writers.sbdd(tmp_path / 'sbdd', n=3)
    net = make_net(tmp_path, 'SBDDSegDataLayer',
                   dict(sbdd_dir=str(tmp_path / 'sbdd'), split='train', seed=1), ['data', 'label'])
    layer = net.layers[0]
    assert layer.prefetch  # on by default for a training split
    sequence = [step(net)['label'][0, 0, 0, 0]]
    assert layer._pending.thread.daemon
    layer.close()
    assert not layer._pending.thread.is_alive()
    sequence += [step(net)['label'][0, 0, 0, 0] for _ in range(2)]
    assert layer._pending is None  # no new thread after close
    assert sorted(sequence) == [0, 1, 2]  # the prefetched example was still served


def test_interpreter_exits_with_a_prefetch_in_flight(tmp_path, dataset_writers):
    dataset_writers.sbdd(tmp_path / 'sbdd', n=2)
    proto = tmp_path / 'train.prototxt'
    proto.write_text(textwrap.dedent(f'''\
        layer {{ name: "d" type: "Python" top: "data" top: "label"
          python_param {{ module: "layers" layer: "SBDDSegDataLayer"
            param_str: "{{'sbdd_dir': '{tmp_path / 'sbdd'}', 'split': 'train', 'seed': 0, 'mean': (104, 117, 123), 'num_classes': 21}}" }} }}
        '''))
    code = f'import caffe; net = caffe.Net({str(proto)!r}, caffe.TRAIN); net.forward(); print("ok")'
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, 'GLOG_minloglevel': '2'})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'ok'


def test_mirror_and_jitter_are_seeded_and_pad_correctly(tmp_path, dataset_writers):
    rng = np.random.default_rng(6)
    rgb = dataset_writers.random_rgb(rng, 10, 12)
    Image.fromarray(rgb).save(tmp_path / 'x.png')
    label = rng.integers(0, 3, (10, 12)).astype(np.uint8)
    Image.fromarray(label).save(tmp_path / 'y.png')
    (tmp_path / 'list.txt').write_text('x.png y.png\n')
    params = dict(list_file=str(tmp_path / 'list.txt'), num_classes=3, mean=(1.0, 2.0, 3.0),
                  seed=5, mirror=True, jitter=4)
    runs = []
    for _ in range(2):
        net = make_net(tmp_path, 'SegDataLayer', params, ['data', 'label'])
        runs.append([step(net) for _ in range(8)])
    base_data, flips, shifts = expected_data(rgb, (1.0, 2.0, 3.0)), set(), set()
    for a, b in zip(*runs):  # same seed, same augmentation
        np.testing.assert_array_equal(a['data'], b['data'])
        np.testing.assert_array_equal(a['label'], b['label'])
        match = [(flip, dy, dx) for flip in (False, True) for dy in range(-4, 5) for dx in range(-4, 5)
                 if np.array_equal(a['label'][0, 0], shifted(label, flip, dy, dx, 255))
                 and np.array_equal(a['data'][0], shifted(base_data, flip, dy, dx, 0))]
        assert match, 'output is not a mirrored/translated copy padded with mean and 255'
        flips.add(match[0][0])
        shifts.add(match[0][1:])
    assert flips == {False, True} and len(shifts) > 1


def shifted(array, flip, dy, dx, fill):
    """Reference translation: out[y, x] = in[y - dy, x - dx], else fill."""
    array = array[..., ::-1] if flip else array
    h, w = array.shape[-2:]
    out = np.full_like(array, fill)
    for y in range(h):
        for x in range(w):
            if 0 <= y - dy < h and 0 <= x - dx < w:
                out[..., y, x] = array[..., y - dy, x - dx]
    return out


# ---------------------------------------------------------------- errors

def voc_net(tmp_path, **extra):
    params = {'voc_dir': str(tmp_path / 'voc'), 'split': 'val', **extra}
    return make_net(tmp_path, 'VOCSegDataLayer', params, ['data', 'label'])


def test_param_str_with_a_call_is_rejected_unexecuted(tmp_path):
    marker = tmp_path / 'pwned'
    voc_fixture(tmp_path / 'voc')
    evil = (f"{{'voc_dir': __import__('pathlib').Path({str(marker)!r}).touch(), "
            f"'split': 'val'}}")
    with pytest.raises(layers.ParamError, match='no expressions or calls'):
        make_net(tmp_path, 'VOCSegDataLayer', evil, ['data', 'label'])
    with pytest.raises(layers.ParamError):
        layers.parse_params(f"__import__('os').system('touch {marker}')", 'X', ('a',), {})
    assert not marker.exists()


DROP = object()  # marks a key the bad-params case leaves out


@pytest.mark.parametrize('change, message', [
    ({'bogus': 1}, r"unknown keys \['bogus'\]; valid keys: \['jitter', 'mean', 'mirror', "
                   r"'num_classes', 'prefetch', 'randomize', 'seed', 'split', 'voc_dir'\]"),
    ({'num_classes': 0}, r"param 'num_classes' must be an int 1\.\.255"),
    ({'num_classes': {'sem': 3}}, r"param 'num_classes' must give a count for each label top "
                                  r"\['label'\], got \{'sem': 3\}"),
    ({'voc_dir': DROP, 'split': DROP}, r"missing keys \['voc_dir', 'split'\]; valid keys"),
    ({'voc_dir': None}, r"param 'voc_dir' must be a folder path, got None"),
    ({'jitter': 33}, r"param 'jitter' must be an int 0\.\.32"),
    ({'mean': (1, 2)}, r"param 'mean' must be three numbers"),
    ({'randomize': 'yes'}, r"param 'randomize' must be True or False"),
])
def test_bad_params_name_the_key(tmp_path, change, message):
    voc_fixture(tmp_path / 'voc')
    params = {**dict(voc_dir=str(tmp_path / 'voc'), split='val'), **change}
    params = {k: v for k, v in params.items() if v is not DROP}
    with pytest.raises(layers.ParamError, match=message):
        make_net(tmp_path, 'VOCSegDataLayer', params, ['data', 'label'])


def test_wrong_top_count_and_nyud_tops(tmp_path):
    voc_fixture(tmp_path / 'voc')
    with pytest.raises(layers.ParamError, match=r'needs 2 tops \(data, label\), got 3'):
        make_net(tmp_path, 'VOCSegDataLayer', dict(voc_dir=str(tmp_path / 'voc'), split='val'),
                 ['a', 'b', 'c'])
    with pytest.raises(layers.ParamError, match="'tops' must list distinct names"):
        make_net(tmp_path, 'NYUDSegDataLayer', dict(nyud_dir='x', split='test', tops=['rgb']), ['a'])
    with pytest.raises(layers.ParamError, match=r'give one of data_dir \+ split; list_file; image_dir \+ label_dir; got image_dir'):
        make_net(tmp_path, 'SegDataLayer', dict(image_dir='x', num_classes=2), ['a', 'b'])


def test_missing_split_image_and_label_files(tmp_path):
    voc_fixture(tmp_path / 'voc')
    with pytest.raises(FileNotFoundError, match=r'split file not found: .*nosuch\.txt'):
        voc_net(tmp_path, split='nosuch')
    (tmp_path / 'voc' / 'SegmentationClass' / 'a.png').unlink()
    with pytest.raises(FileNotFoundError, match=r'label not found: .*SegmentationClass/a\.png'):
        voc_net(tmp_path)
    (tmp_path / 'voc' / 'JPEGImages' / 'b.jpg').unlink()
    (tmp_path / 'voc' / 'ImageSets' / 'Segmentation' / 'val.txt').write_text('b\n')
    with pytest.raises(FileNotFoundError, match=r'image not found: .*JPEGImages/b\.jpg'):
        voc_net(tmp_path)


def test_error_found_while_running_names_the_file(tmp_path):
    voc_fixture(tmp_path / 'voc')
    net = voc_net(tmp_path)
    (tmp_path / 'voc' / 'JPEGImages' / 'b.jpg').write_bytes(b'not a jpeg')
    net.forward()  # a, loaded at set-up
    with pytest.raises(layers.DataError, match=r'JPEGImages/b\.jpg: cannot read image'):
        net.forward()


def test_prefetch_error_reaches_the_caller(tmp_path, dataset_writers):
    dataset_writers.sbdd(tmp_path / 'sbdd', n=2)
    net = make_net(tmp_path, 'SBDDSegDataLayer',
                   dict(sbdd_dir=str(tmp_path / 'sbdd'), split='train', randomize=False,
                        prefetch=True), ['data', 'label'])
    scipy.io.savemat(tmp_path / 'sbdd' / 'cls' / '2008_000001.mat', {'other': np.zeros((8, 10))})
    net.forward()  # example 0; example 1 is now loading in the background
    with pytest.raises(layers.DataError, match=r"2008_000001\.mat: expected variable 'GTcls'"):
        net.forward()


def test_size_mismatch_names_both_files(tmp_path):
    voc_fixture(tmp_path / 'voc')
    save_palette_png(tmp_path / 'voc' / 'SegmentationClass' / 'a.png', np.zeros((3, 3), np.uint8))
    with pytest.raises(layers.DataError, match=r'SegmentationClass/a\.png: label is 3x3 but '
                                               r'.*JPEGImages/a\.jpg \(data\) is 6x9'):
        voc_net(tmp_path)


def test_label_values_out_of_range(tmp_path):
    label = np.zeros((6, 9), np.uint8)
    label[2, 2] = 21
    voc_fixture(tmp_path / 'voc')
    save_palette_png(tmp_path / 'voc' / 'SegmentationClass' / 'a.png', label)
    with pytest.raises(layers.DataError, match=r'a\.png: label values 21 outside 0\.\.20 '
                                               r"\(and 255 void\) for the net's 21 classes"):
        voc_net(tmp_path)
    bad_nyud = tmp_path / 'n.mat'
    scipy.io.savemat(bad_nyud, {'segmentation': np.array([[0, 41]], np.uint8)})
    with pytest.raises(layers.DataError, match=r'n\.mat: label values \[41\] outside the expected 0\.\.40'):
        layers.load_nyud_label(str(bad_nyud), 40)
    bad_geo = tmp_path / 'g.mat'
    scipy.io.savemat(bad_geo, {'S': np.array([[-1, 4]], np.int16)})
    with pytest.raises(layers.DataError, match=r'g\.mat: label values \[4\] outside .*geometric'):
        layers.load_siftflow_label(str(bad_geo), 'geometric', 3)
    lut = np.zeros(460, np.int64)
    bad_context = tmp_path / 'c.mat'
    scipy.io.savemat(bad_context, {'LabelMap': np.array([[1, 460]], np.uint16)})
    with pytest.raises(layers.DataError, match=r'c\.mat: LabelMap values \[460\] outside'):
        layers.load_context_label(str(bad_context), lut, 60)


def test_bad_depth_and_context_lists(tmp_path):
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / 'depth8.png')
    with pytest.raises(layers.DataError, match=r'depth8\.png: expected a 16-bit single-channel'):
        layers.load_nyud_depth(str(tmp_path / 'depth8.png'), datasets.NYUD_LOG_DEPTH_MEAN)
    (tmp_path / 'labels.txt').write_text('1: aeroplane\n')
    (tmp_path / '59_labels.txt').write_text(''.join(
        f'{k + 1}: {t}\n' for k, t in enumerate(datasets.CONTEXT_CLASSES[1:])))
    with pytest.raises(layers.DataError, match=r"labels\.txt: has no label 'bag'"):
        layers.context_label_lut(str(tmp_path))
    (tmp_path / 'labels.txt').write_text('1: aeroplane\nbag\n')
    with pytest.raises(layers.DataError, match=r"labels\.txt:2: expected 'idx: name'"):
        layers.context_label_lut(str(tmp_path))



def test_seek_resumes_the_training_sequence(tmp_path, dataset_writers):
    """seek(n) continues exactly where an uninterrupted layer would be after
    n examples: how training resumes the data order with the iteration."""
    dataset_writers.sbdd(tmp_path / 'sbdd', n=5)
    params = dict(sbdd_dir=str(tmp_path / 'sbdd'), split='train', seed=3, mirror=True)
    net = make_net(tmp_path, 'SBDDSegDataLayer', params, ['data', 'label'])
    full = [step(net) for _ in range(13)]
    resumed = make_net(tmp_path, 'SBDDSegDataLayer', params, ['data', 'label'])
    (layer,) = [l for l in resumed.layers if hasattr(l, 'seek')]
    layer.seek(7)
    for expected in full[7:]:
        got = step(resumed)
        np.testing.assert_array_equal(got['data'], expected['data'])
        np.testing.assert_array_equal(got['label'], expected['label'])


# ---------------------------------------------------------------- loss ablations

def label_net(tmp_path, layer, params, shape):
    """Input label -> one of the label-transform layers."""
    n = caffe.NetSpec()
    n.label = L.Input(shape=dict(dim=list(shape)))
    n.out = L.Python(n.label, module='layers', layer=layer, param_str=str(params))
    path = tmp_path / f'{layer}.prototxt'
    path.write_text(str(n.to_proto()))
    return caffe.Net(str(path), caffe.TRAIN)


def test_loss_sampling_voids_whole_cells_at_the_keep_rate_and_resumes(tmp_path):
    rng = np.random.RandomState(0)
    label = rng.randint(0, 5, size=(1, 1, 70, 90)).astype(np.float32)
    label[0, 0, :3] = datasets.VOID
    net = label_net(tmp_path, 'LossSamplingLayer', dict(keep=0.25, cell=8, seed=3), label.shape)
    outputs = []
    for _ in range(6):
        net.blobs['label'].data[...] = label
        net.forward()
        outputs.append(net.blobs['out'].data[0, 0].copy())
    kept_fractions = []
    for out in outputs:
        kept = out == label[0, 0]
        assert ((out == datasets.VOID) | kept).all()  # a pixel is kept or voided
        # every 8 x 8 cell from the top left (edge cells cut by the border
        # too) is kept or voided as a whole; the first row of cells holds
        # the label's own void rows
        cells = [out[y:y + 8, x:x + 8] != datasets.VOID for y in range(8, 70, 8) for x in range(0, 90, 8)]
        assert all(c.all() or not c.any() for c in cells)
        kept_fractions.append(np.mean([c.all() for c in cells]))
    assert 0.1 < np.mean(kept_fractions) < 0.4            # keep 0.25 of 96 cells, six draws
    assert not all(np.array_equal(outputs[0], o) for o in outputs[1:])  # fresh draws each step
    # seek(n) replays the n-th draw (how training resumes)
    net.layers[list(net._layer_names).index('out')].seek(4)
    net.blobs['label'].data[...] = label
    net.forward()
    np.testing.assert_array_equal(net.blobs['out'].data[0, 0], outputs[4])
    # keep 1 is the identity
    whole = label_net(tmp_path, 'LossSamplingLayer', dict(keep=1, cell=32, seed=3), label.shape)
    whole.blobs['label'].data[...] = label
    whole.forward()
    np.testing.assert_array_equal(whole.blobs['out'].data, label)


def test_one_hot_labels_for_the_sigmoid_loss(tmp_path):
    label = np.array([[0, 1, 2], [255, 2, 0]], np.float32)[None, None]
    net = label_net(tmp_path, 'OneHotLabelLayer', dict(num_classes=3), label.shape)
    net.blobs['label'].data[...] = label
    net.forward()
    out = net.blobs['out'].data[0]
    assert out.shape == (3, 2, 3)
    np.testing.assert_array_equal(out[:, 0, 0], [1, 0, 0])
    np.testing.assert_array_equal(out[:, 0, 2], [0, 0, 1])
    np.testing.assert_array_equal(out[:, 1, 0], [255, 255, 255])  # void in every channel
    assert (out[:, 1, 1:] != 255).all() and (out.sum(axis=0)[label[0, 0] != 255] == 1).all()
    net.blobs['label'].data[0, 0, 0, 0] = 3
    with pytest.raises(layers.DataError, match='0..2 or 255'):
        net.forward()


def test_loss_ablation_params_are_checked(tmp_path):
    with pytest.raises(Exception):
        label_net(tmp_path, 'LossSamplingLayer', dict(keep=0, cell=8), (1, 1, 4, 4))
    proto = tmp_path / 'bad.prototxt'
    n = caffe.NetSpec()
    n.label = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    n.out = L.Python(n.label, module='layers', layer='LossSamplingLayer', param_str=str(dict(keep=1.5, cell=8)))
    proto.write_text(str(n.to_proto()))
    code = f'import caffe; caffe.Net({str(proto)!r}, caffe.TRAIN)'
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert result.returncode != 0 and "'keep' must be a fraction 0 < keep <= 1" in result.stderr
