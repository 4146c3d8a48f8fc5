"""The reproduction kit (fetch/): downloads against an HTTP server on
127.0.0.1 (complete, cut and resumed, corrupt), fixture archives unpacked into
the layout the data layers read (and read by them), derived splits, class
lists, weights conversion, and score-all with score.py."""
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ.setdefault('GLOG_minloglevel', '2')  # keep Caffe's set-up log quiet

import numpy as np
import pytest
import scipy.io
from PIL import Image

from common import datasets
from helpers import write_model
from fetch import REPO, FetchError, install
from fetch.__main__ import main
from fetch.archive import ArchiveLayoutError, unpack_folder
from common.catalog import DOWNLOADS, MODELS, Download
from fetch.download import VerificationError, download
from fetch.scoreall import COLUMNS, format_table, report_rows
from common.datasets import SIFTFLOW_SUBDIR
from fetch.splits import CLASS_LISTS, read_ids, seg11valid, write_class_lists

SERVER_LIFETIME_S = 120  # the server shuts itself down after this, whatever happens


# ---------------------------------------------------------------- HTTP server

class FixtureServer:
    """Serves bytes from memory on 127.0.0.1 with HTTP Range support.

    cut[path] = n: the next response for path ends after n bytes of body
    (connection closed, as a network failure would). no_range: paths whose
    Range header is ignored (a full 200 response). requests: (path, Range).
    """

    def __init__(self):
        self.files, self.cut, self.no_range, self.requests = {}, {}, set(), []
        fixture = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'
            timeout = 10

            def do_GET(self):
                rng = self.headers.get('Range')
                fixture.requests.append((self.path, rng))
                body = fixture.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and self.path not in fixture.no_range:
                    start = int(re.fullmatch(r'bytes=(\d+)-', rng).group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header('Content-Range', f'bytes */{len(body)}')
                        self.send_header('Content-Length', '0')
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header('Content-Range', f'bytes {start}-{len(body) - 1}/{len(body)}')
                else:
                    self.send_response(200)
                self.send_header('Content-Length', str(len(body) - start))
                self.end_headers()
                cut = fixture.cut.pop(self.path, None)
                if cut is None:
                    self.wfile.write(body[start:])
                    return
                self.wfile.write(body[start:start + cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs=dict(poll_interval=0.05), daemon=True)
        self.watchdog = threading.Timer(SERVER_LIFETIME_S, self.httpd.shutdown)
        self.watchdog.daemon = True

    def serve(self, path, data):
        self.files[path] = data
        return f'http://127.0.0.1:{self.httpd.server_port}{path}'

    def start(self):
        self.thread.start()
        self.watchdog.start()

    def stop(self):
        self.watchdog.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope='module')
def server():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('NO_PROXY', '127.0.0.1')  # a user's proxy must not see the test traffic
        mp.setenv('no_proxy', '127.0.0.1')
        srv = FixtureServer()
        srv.start()
        try:
            yield srv
        finally:
            srv.stop()


# ---------------------------------------------------------------- fixture files

def jpeg(rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, 'JPEG', quality=95)
    return buf.getvalue()


def palette_png(label):
    im = Image.fromarray(label.astype(np.uint8), mode='P')
    im.putpalette(datasets.voc_palette().ravel().tolist())
    buf = io.BytesIO()
    im.save(buf, 'PNG')
    return buf.getvalue()


def png(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, 'PNG')
    return buf.getvalue()


def mat(**variables):
    buf = io.BytesIO()
    scipy.io.savemat(buf, variables)
    return buf.getvalue()


def lines(*ids):
    return ''.join(f'{i}\n' for i in ids).encode()


def tar(files, mode='w'):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w') as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


RNG = np.random.default_rng(0)
VOC_VAL = ('2007_000033', '2007_000042', '2008_000002', '2008_000003')
SBD_TRAIN = ('2008_000003', '2008_000100', '2007_000042')
SEG11VALID = ['2007_000033', '2008_000002']  # VOC_VAL minus SBD_TRAIN, VOC order
SCORED_CLASS = 15  # the fixture model predicts this class everywhere


def voc_label(h, w):
    """Background, a person block, a cat stripe and a void border row."""
    label = np.zeros((h, w), np.uint8)
    label[:h // 2, w // 2:] = SCORED_CLASS
    label[h // 2:, :3] = 8
    label[-1] = datasets.VOID
    return label


VOC_IMAGES = {'2007_000033': RNG.integers(0, 256, (12, 16, 3), dtype=np.uint8),
              '2008_000002': RNG.integers(0, 256, (10, 14, 3), dtype=np.uint8)}
VOC_LABELS = {i: voc_label(*im.shape[:2]) for i, im in VOC_IMAGES.items()}
SBD_LABEL = (np.arange(8 * 6).reshape(8, 6) % 21).astype(np.uint8)


def voc2011_tar():
    """The real trainval tar's top level: TrainVal/VOCdevkit/VOC2011/."""
    top = 'TrainVal/VOCdevkit/VOC2011/'
    files = {f'{top}ImageSets/Segmentation/val.txt': lines(*VOC_VAL),
             f'{top}ImageSets/Segmentation/train.txt': lines('2007_000032'),
             f'{top}Annotations/2007_000033.xml': b'<annotation/>'}
    for i, rgb in VOC_IMAGES.items():
        files[f'{top}JPEGImages/{i}.jpg'] = jpeg(rgb)
        files[f'{top}SegmentationClass/{i}.png'] = palette_png(VOC_LABELS[i])
    return tar(files)


def sbd_tgz():
    """benchmark_RELEASE/dataset/..., beside a code folder that also has a cls/."""
    top = 'benchmark_RELEASE/dataset/'
    return tar({f'{top}train.txt': lines(*SBD_TRAIN), f'{top}val.txt': lines('2008_000200'),
                f'{top}img/2008_000100.jpg': jpeg(RNG.integers(0, 256, (8, 6, 3), dtype=np.uint8)),
                f'{top}cls/2008_000100.mat': mat(GTcls={'Segmentation': SBD_LABEL}),
                'benchmark_RELEASE/benchmark_code_RELEASE/cls/README': b'decoy'}, 'w:gz')


# ---------------------------------------------------------------- downloads

PAYLOAD = RNG.integers(0, 256, 300_000, dtype=np.uint8).tobytes()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def test_complete_download_is_verified_and_reports_its_checksum(server, tmp_path, capsys):
    url = server.serve('/complete.bin', PAYLOAD)
    dest = download('thing', Download(url, size=len(PAYLOAD)), tmp_path / 'thing.bin',
                    progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / 'thing.bin.part').exists()
    # No sha256 in the table: the first download prints what to record.
    assert f"size={len(PAYLOAD)}, sha256='{sha256(PAYLOAD)}'" in capsys.readouterr().out


def test_cut_download_keeps_part_file_and_resumes_in_a_later_run(server, tmp_path):
    url = server.serve('/cut.bin', PAYLOAD)
    source, dest = Download(url, sha256=sha256(PAYLOAD)), tmp_path / 'cut.bin'
    server.cut['/cut.bin'] = 100_000
    with pytest.raises(FetchError, match='run the same command again to resume'):
        download('cut', source, dest, retries=0, progress=False)
    assert not dest.exists()
    assert (tmp_path / 'cut.bin.part').read_bytes() == PAYLOAD[:100_000]
    server.requests.clear()
    download('cut', source, dest, retries=0, progress=False)
    assert server.requests == [('/cut.bin', 'bytes=100000-')]
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / 'cut.bin.part').exists()


def test_cut_download_resumes_within_one_run(server, tmp_path):
    url = server.serve('/retry.bin', PAYLOAD)
    server.cut['/retry.bin'] = 123_456
    server.requests.clear()
    dest = download('retry', Download(url, sha256=sha256(PAYLOAD)), tmp_path / 'retry.bin',
                    retries=1, backoff=0, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [('/retry.bin', None), ('/retry.bin', 'bytes=123456-')]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    url = server.serve('/norange.bin', PAYLOAD)
    server.no_range.add('/norange.bin')
    (tmp_path / 'norange.bin.part').write_bytes(PAYLOAD[:5000])
    dest = download('norange', Download(url, sha256=sha256(PAYLOAD)), tmp_path / 'norange.bin',
                    retries=0, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_file_is_finished_without_refetching(server, tmp_path):
    url = server.serve('/whole.bin', PAYLOAD)
    (tmp_path / 'whole.bin.part').write_bytes(PAYLOAD)
    dest = download('whole', Download(url, sha256=sha256(PAYLOAD)), tmp_path / 'whole.bin',
                    retries=0, progress=False)  # the server answers 416
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize('wrong', [dict(sha256='0' * 64), dict(md5='0' * 32),
                                   dict(size=len(PAYLOAD) + 1)])
def test_checksum_or_size_mismatch_leaves_nothing(server, tmp_path, wrong):
    url = server.serve('/corrupt.bin', PAYLOAD)
    with pytest.raises(VerificationError):
        download('corrupt', Download(url, **wrong), tmp_path / 'corrupt.bin', progress=False)
    assert list(tmp_path.iterdir()) == []


def test_missing_file_is_an_error(server, tmp_path):
    with pytest.raises(FetchError, match='HTTP 404'):
        download('gone', Download(server.serve('/nothing', b'') + '-missing'),
                 tmp_path / 'gone', retries=0, progress=False)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- datasets

def fetch_cli(*args):
    return exit_status(main, [*map(str, args), '--quiet'])


def exit_status(command, argv):
    """The exit status of a command's main(argv) run in this process (an
    error's one line, which cli.run raises as SystemExit, goes to stderr)."""
    try:
        return command(argv)
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 1
        return e.code


@pytest.fixture(scope='module')
def data_root(server, tmp_path_factory):
    """`python -m fetch data voc2011 sbd` from the fixture server, with
    the table's checksums replaced by the fixture archives'."""
    root = tmp_path_factory.mktemp('fetched') / 'data'
    archives = {'voc2011': voc2011_tar(), 'sbd': sbd_tgz()}
    with pytest.MonkeyPatch.context() as mp:
        for key, data in archives.items():
            url = server.serve(f'/{key}/{DOWNLOADS[key].filename}', data)
            mp.setitem(DOWNLOADS, key, Download(url, sha256=sha256(data)))
        assert fetch_cli('data', 'voc2011', 'sbd', '--dest', root,
                         '--url', f'voc2011={DOWNLOADS["voc2011"].url}',
                         '--url', f'sbd={DOWNLOADS["sbd"].url}') == 0
    return root


def test_voc_and_sbd_unpack_into_the_layers_layout(data_root):
    voc = data_root / 'pascal/VOC2011'
    for i in VOC_IMAGES:
        assert (voc / f'JPEGImages/{i}.jpg').is_file()
        assert (voc / f'SegmentationClass/{i}.png').is_file()
    assert (voc / 'Annotations/2007_000033.xml').is_file()
    sbd = data_root / 'sbdd/dataset'
    assert read_ids(sbd / 'train.txt') == list(SBD_TRAIN)
    assert (sbd / 'cls/2008_000100.mat').is_file() and (sbd / 'img/2008_000100.jpg').is_file()
    # Archives stay (for re-unpacking); no partial downloads or staging folders.
    assert sorted(p.name for p in (data_root / 'downloads').iterdir()) == \
        sorted(DOWNLOADS[k].filename for k in ('voc2011', 'sbd'))
    assert not [p for p in data_root.rglob('*') if p.name.endswith(('.part', '.unpacking'))]


def test_seg11valid_is_written_where_the_voc_layer_reads_splits(data_root):
    for path in ('pascal/VOC2011/ImageSets/Segmentation/seg11valid.txt', 'pascal/seg11valid.txt'):
        assert read_ids(data_root / path) == SEG11VALID


def test_seg11valid_on_fixture_splits():
    assert seg11valid(VOC_VAL, SBD_TRAIN) == SEG11VALID
    assert seg11valid(['c', 'a', 'b'], []) == ['c', 'a', 'b']  # VOC order, not sorted
    assert seg11valid(['a', 'b'], ['b', 'a', 'z']) == []


def test_second_run_downloads_nothing(data_root, server, capsys):
    server.requests.clear()
    assert fetch_cli('data', 'voc2011', 'sbd', '--dest', data_root) == 0
    assert server.requests == []
    assert 'already in place' in capsys.readouterr().out


def test_local_file_instead_of_download(tmp_path, capsys):
    archive = tmp_path / 'mine.tar'
    archive.write_bytes(tar({'VOCdevkit/VOC2012/JPEGImages/a.jpg': b'x',
                             'VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt': b'a\n'}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(DOWNLOADS, 'voc2012', Download('http://unreachable.invalid/voc.tar',
                                              sha256=sha256(archive.read_bytes())))
        assert fetch_cli('data', 'voc2012', '--dest', tmp_path / 'data', '--file', archive) == 0
        assert (tmp_path / 'data/pascal/VOC2012/JPEGImages/a.jpg').read_bytes() == b'x'
        # voc2011 without sbd: seg11valid cannot be derived yet, and fetch says so.
        voc2011 = tmp_path / 'voc2011.tar'
        voc2011.write_bytes(voc2011_tar())
        mp.setitem(DOWNLOADS, 'voc2011', Download('http://unreachable.invalid/voc11.tar'))
        assert fetch_cli('data', 'voc2011', '--dest', tmp_path / 'data', '--file', voc2011) == 0
        assert 'seg11valid is derived once sbd is fetched too' in capsys.readouterr().err
        mp.setitem(DOWNLOADS, 'voc2012', Download('http://unreachable.invalid/voc.tar', md5='0' * 32))
        assert fetch_cli('data', 'voc2012', '--dest', tmp_path / 'other', '--file', archive) == 1
        assert not (tmp_path / 'other/pascal').exists()


def test_nyud_siftflow_and_context_layouts_and_splits(server, tmp_path, capsys):
    sub = SIFTFLOW_SUBDIR
    archives = {
        'nyud': tar({'nyud/data/images/img_5001.png': png(np.zeros((4, 4, 3), np.uint8)),
                     'nyud/data/hha/img_5001.png': png(np.zeros((4, 4, 3), np.uint8)),
                     'nyud/segmentation/img_5001.mat': mat(segmentation=np.ones((4, 4), np.uint8)),
                     'nyud/train.txt': lines(5001), 'nyud/val.txt': lines(5002),
                     'nyud/test.txt': lines(5003)}, 'w:gz'),
        'siftflow': zip_({
            **{f'SiftFlowDataset/Images/{sub}/{i}.jpg': b'jpg' for i in ('coast_a1', 'coast_b2', 'coast_c3')},
            # coast_c3 lacks labels, as two images of the release do
            **{f'SiftFlowDataset/{kind}/{sub}/{i}.mat': mat(S=np.ones((2, 2)))
               for kind in ('SemanticLabels', 'GeoLabels') for i in ('coast_a1', 'coast_b2')},
            'SiftFlowDataset/TestSet1.txt': f'Images\\{sub}\\coast_b2.jpg\r\n'.encode()}),
        'voc2010': tar({'VOCdevkit/VOC2010/JPEGImages/2008_000002.jpg': b'jpg',
                        'VOCdevkit/VOC2010/ImageSets/Main/train.txt': lines('2008_000001'),
                        'VOCdevkit/VOC2010/ImageSets/Main/val.txt': lines('2008_000002')}),
        'context-trainval': tar({'trainval/2008_000002.mat': mat(LabelMap=np.ones((2, 2))),
                                 'labels.txt': b'1: accordion\n'}, 'w:gz'),
        'context-59-labels': b'1: aeroplane\n',
    }
    root = tmp_path / 'data'
    write_class_lists(root)  # as committed: unpacking must keep them
    with pytest.MonkeyPatch.context() as mp:
        for key, data in archives.items():
            mp.setitem(DOWNLOADS, key, Download(server.serve(f'/{key}/{DOWNLOADS[key].filename}', data)))
        assert fetch_cli('data', 'nyud', 'siftflow', 'context', '--dest', root) == 0
    assert 'warning' not in capsys.readouterr().err
    assert (root / 'nyud/data/hha/img_5001.png').is_file()
    assert (root / 'nyud/segmentation/img_5001.mat').is_file()
    assert read_ids(root / 'nyud/trainval.txt') == ['5001', '5002']
    assert (root / f'sift-flow/SemanticLabels/{sub}/coast_a1.mat').is_file()
    assert read_ids(root / 'sift-flow/trainval.txt') == ['coast_a1']
    assert read_ids(root / 'sift-flow/test.txt') == ['coast_b2']
    assert (root / 'pascal/VOC2010/ImageSets/Main/val.txt').is_file()
    assert (root / 'pascal-context/trainval/2008_000002.mat').is_file()
    assert (root / 'pascal-context/labels.txt').read_bytes() == b'1: accordion\n'
    assert (root / 'pascal-context/59_labels.txt').read_bytes() == b'1: aeroplane\n'
    for rel, names in CLASS_LISTS.items():
        assert read_ids(root / rel) == list(names)


def test_several_sources_need_keyed_urls(capsys):
    assert exit_status(main, ['data', 'context', '--url', 'http://mirror/x.tar']) == 1
    assert 'SOURCE=VALUE' in capsys.readouterr().err


def test_unpacking_refuses_members_that_escape(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w') as tf:
        for name, data in (('d/VOC2011/JPEGImages/a.jpg', b'ok'), ('d/VOC2011/../../evil', b'x'),
                           ('/abs/VOC2011/evil', b'x')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo('d/VOC2011/JPEGImages/link')
        link.type, link.linkname = tarfile.SYMTYPE, '/etc/passwd'
        tf.addfile(link)
    (tmp_path / 'a.tar').write_bytes(buf.getvalue())
    unpack_folder(tmp_path / 'a.tar', tmp_path / 'out/VOC2011', 'JPEGImages', 'VOC2011')
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob('*') if p.is_file()) == \
        ['a.tar', 'out/VOC2011/JPEGImages/a.jpg']
    with pytest.raises(ArchiveLayoutError, match='no folder holding JPEGImages'):
        unpack_folder(tmp_path / 'a.tar', tmp_path / 'out/VOC2012', 'JPEGImages', 'VOC2012')


def test_data_layers_read_the_unpacked_fixture(data_root, tmp_path):
    import caffe
    from caffe import layers as L

    def forward(layer, **params):
        n = caffe.NetSpec()
        n.data, n.label = L.Python(module='layers', layer=layer, ntop=2,
                                   param_str=str(dict(params, mean=datasets.VOC_MEAN,
                                                      randomize=False, seed=1337,
                                                      num_classes=len(datasets.VOC_CLASSES))))
        proto = tmp_path / f'{layer}.prototxt'
        proto.write_text(str(n.to_proto()))
        net = caffe.Net(str(proto), caffe.TEST)
        net.forward()
        return net.blobs['data'].data.copy(), net.blobs['label'].data.copy()

    data, label = forward('VOCSegDataLayer', voc_dir=str(data_root / 'pascal/VOC2011'),
                          split='seg11valid')
    first = SEG11VALID[0]
    with Image.open(data_root / f'pascal/VOC2011/JPEGImages/{first}.jpg') as im:
        rgb = np.asarray(im.convert('RGB'), np.float64)
    h, w = VOC_LABELS[first].shape
    assert data.shape == (1, 3, h, w) and label.shape == (1, 1, h, w)
    np.testing.assert_allclose(data[0], (rgb[..., ::-1] - datasets.VOC_MEAN).transpose(2, 0, 1),
                               atol=1e-3)
    np.testing.assert_array_equal(label[0, 0], VOC_LABELS[first])

    # Only one SBD train image is in the fixture archive: list just that one.
    sbd = data_root / 'sbdd/dataset'
    (sbd / 'fixture.txt').write_text('2008_000100\n')
    _, label = forward('SBDDSegDataLayer', sbdd_dir=str(sbd), split='fixture')
    np.testing.assert_array_equal(label[0, 0], SBD_LABEL)


# ---------------------------------------------------------------- class lists

def test_class_lists_are_written_from_datasets_and_committed(tmp_path):
    written = write_class_lists(tmp_path)
    assert len(written) == len(CLASS_LISTS)
    for rel, names in CLASS_LISTS.items():
        assert read_ids(tmp_path / rel) == list(names)
        committed = REPO / 'data' / rel
        assert committed.read_text() == (tmp_path / rel).read_text(), \
            f'{committed} is stale: run python -m fetch classes'
    assert read_ids(tmp_path / 'pascal/classes.txt')[0] == 'background'


# ---------------------------------------------------------------- weights

FAKE_SURGERY = '''
import argparse, pathlib, sys
p = argparse.ArgumentParser()
p.add_argument('command'); p.add_argument('--net'); p.add_argument('--weights'); p.add_argument('--out')
a = p.parse_args()
if a.net == 'caffenet':
    sys.exit('surgery failed')
pathlib.Path(a.out).write_bytes(b'fcn:' + pathlib.Path(a.weights).read_bytes())
pathlib.Path(a.out).with_name('argv.json').write_text(__import__('json').dumps(sys.argv[1:]))
'''


def tiny_classifier(ilsvrc, net):
    """A stand-in ILSVRC classifier prototxt in a models root's ilsvrc-nets/
    (what fetch checks downloads against) and the bytes of weights for it."""
    import caffe
    from caffe import layers as L
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 2, 2]))
    n.fc8 = L.InnerProduct(n.data, num_output=2)
    ilsvrc.mkdir(parents=True, exist_ok=True)
    proto = ilsvrc / f'{net}-classifier.prototxt'
    proto.write_text(str(n.to_proto()))
    weights = ilsvrc.parent / f'{net}.caffemodel'
    caffe.Net(str(proto), caffe.TEST).save(str(weights))
    return weights.read_bytes()


def test_ilsvrc_weights_are_downloaded_then_converted(server, tmp_path, monkeypatch):
    surgery = tmp_path / 'surgery.py'
    surgery.write_text(FAKE_SURGERY)
    monkeypatch.setattr(install, 'SURGERY', surgery)
    root = tmp_path / 'models'
    ilsvrc = root / 'nets' / 'ilsvrc-nets'
    served = {}
    for net in ('vgg16', 'caffenet'):
        served[net] = tiny_classifier(ilsvrc, net)
        monkeypatch.setitem(DOWNLOADS, net, Download(server.serve(f'/{net}/{DOWNLOADS[net].filename}',
                                                              served[net])))
    assert fetch_cli('weights', 'vgg16', '--dest', root) == 0
    assert (ilsvrc / 'VGG_ILSVRC_16_layers.caffemodel').read_bytes() == served['vgg16']
    assert (ilsvrc / 'vgg16-fcn.caffemodel').read_bytes() == b'fcn:' + served['vgg16']
    argv = json.loads((ilsvrc / 'argv.json').read_text())
    assert argv[:3] == ['convert', '--net', 'vgg16'] and argv[-1].endswith('vgg16-fcn.caffemodel.part')
    # A failed conversion leaves no converted file (the download stays).
    assert fetch_cli('weights', 'caffenet', '--dest', root) == 1
    assert (ilsvrc / 'bvlc_reference_caffenet.caffemodel').exists()
    assert not list(ilsvrc.glob('caffenet-fcn*'))


def test_convert_command_matches_surgery_cli(tmp_path, capfd):
    """The real surgery.py accepts the command fetch runs (it fails here only
    because the weights do not exist, before loading any net)."""
    with pytest.raises(FetchError, match='convert failed: surgery.py convert: error: '
                                         'weights not found: .*missing.caffemodel'):
        install.convert_ilsvrc('vgg16', tmp_path / 'missing.caffemodel',
                               tmp_path / 'vgg16-fcn.caffemodel')
    assert list(tmp_path.iterdir()) == []


def test_published_model_from_a_local_file(tmp_path):
    """Checked against the deploy net of the model folder it goes into (here
    a tiny stand-in voc-fcn8s)."""
    import caffe
    folder = write_model(tmp_path / 'models' / 'voc-fcn8s', stride=8)
    mine = tmp_path / 'downloaded-elsewhere.caffemodel'
    caffe.Net(os.path.join(folder, 'deploy.prototxt'), caffe.TEST).save(str(mine))
    assert fetch_cli('weights', 'voc-fcn8s', '--dest', tmp_path / 'models', '--file', mine) == 0
    assert (tmp_path / 'models/voc-fcn8s/fcn8s-heavy-pascal.caffemodel').read_bytes() == \
        mine.read_bytes()


# ---------------------------------------------------------------- score-all

def test_table_formatting_from_score_json():
    voc = json.loads('{"split": "seg11valid", "heads": {"score": {"pixel_acc": 0.9031, '
                     '"mean_acc": 0.7594, "mean_iu": 0.6551, "fw_iu": 0.8319, "loss": 1.0}}}')
    sift = {'split': 'test', 'heads': {
        'score_sem': dict(pixel_acc=0.852, mean_acc=0.517, mean_iu=0.395, fw_iu=0.761),
        'score_geo': dict(pixel_acc=0.943, mean_acc=None, mean_iu=0.9, fw_iu=0.89)}}
    rows = (report_rows(MODELS['voc-fcn8s'], voc) + report_rows(MODELS['siftflow-fcn16s'], sift)
            + report_rows(MODELS['nyud-fcn32s'], None))
    table = format_table(rows).splitlines()
    assert [c.strip() for c in table[0].strip('|').split('|')] == list(COLUMNS)
    cells = [[c.strip() for c in line.strip('|').split('|')] for line in table[2:]]
    assert cells == [
        ['voc-fcn8s', 'seg11valid', '90.3', '75.9', '65.5', '83.2', '65.5'],
        ['siftflow-fcn16s [score_sem]', 'test', '85.2', '51.7', '39.5', '76.1', '39.5'],
        ['siftflow-fcn16s [score_geo]', 'test', '94.3', '-', '90.0', '89.0', '-'],
        ['nyud-fcn32s', 'test', 'failed', '-', '-', '-', '29.2']]
    assert len({len(line) for line in table}) == 1  # aligned


def test_score_all_scores_a_fixture_published_model(data_root, tmp_path):
    """score-all -> score.py on a fixture model folder and caffemodel: a 1x1
    convolution whose bias makes it predict SCORED_CLASS everywhere."""
    import caffe
    from caffe import layers as L
    model = MODELS['voc-fcn8s']
    models = tmp_path / 'models'  # a models root elsewhere, its data beside the model folders
    (models / model.folder).mkdir(parents=True)
    (models / 'data').symlink_to(data_root)

    def net_spec(data, label=None):
        n = caffe.NetSpec()
        n.data = data
        n.score = L.Convolution(n.data, num_output=len(datasets.VOC_CLASSES), kernel_size=1)
        if label is not None:
            n.label = label
            n.loss = L.SoftmaxWithLoss(n.score, n.label, loss_param=dict(ignore_label=255))
        return n

    data, label = L.Python(module='layers', layer='VOCSegDataLayer', ntop=2, param_str=str(dict(
        voc_dir='../data/pascal/VOC2011', split='seg11valid', mean=datasets.VOC_MEAN, seed=1337,
        num_classes=len(datasets.VOC_CLASSES))))
    (models / model.folder / 'val.prototxt').write_text(str(net_spec(data, label).to_proto()))
    weights_net = tmp_path / 'weights.prototxt'
    weights_net.write_text(str(net_spec(L.Input(shape=dict(dim=[1, 3, 4, 4]))).to_proto()))
    net = caffe.Net(str(weights_net), caffe.TEST)
    net.params['score'][0].data[...] = 0
    net.params['score'][1].data[...] = 0
    net.params['score'][1].data[SCORED_CLASS] = 1
    net.save(str(models / model.folder / model.weights))

    out = subprocess.run([sys.executable, '-m', 'fetch', 'score-all', '--models-root', str(models),
                          '--limit', '1'], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    label = VOC_LABELS[SEG11VALID[0]]
    counts = np.bincount(label[label != datasets.VOID], minlength=21)
    present, total = counts > 0, counts.sum()
    iu = counts[SCORED_CLASS] / total  # predicted everywhere: union is every pixel
    expected = [counts[SCORED_CLASS] / total, 1 / present.sum(), iu / present.sum(),
                counts[SCORED_CLASS] * iu / total]
    row = next(line for line in out.stdout.splitlines() if line.startswith('| voc-fcn8s'))
    assert [c.strip() for c in row.strip('|').split('|')] == \
        ['voc-fcn8s', 'seg11valid'] + [f'{100 * v:.1f}' for v in expected] + ['65.5']
    assert '--limit 1' in out.stdout


# ---------------------------------------------------------------- docs/reproduce.md

def test_reproduce_md_covers_every_model():
    text = (REPO / 'docs' / 'reproduce.md').read_text()
    for m in MODELS.values():
        assert f'`{m.folder}`' in text, m.folder
        if m.weights:
            assert m.weights in text, m.weights
        if m.published and m.published.mean_iu is not None:
            assert f'{m.published.mean_iu:.1f}' in text, m.folder


def closed_port():
    """A local port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.parametrize('name, checksum', [
    ('caffenet', f"it must match sha1 {DOWNLOADS['caffenet'].sha1}"),
    ('voc-fcn8s', 'no checksum is recorded for it')])
def test_unreachable_host_is_not_retried_and_names_file(tmp_path, name, checksum):
    """Offline (here: a refused connection), fetch gives up at once (no
    'resuming in' retries) and ends with how to use a copy fetched
    elsewhere: --file, the URL, the checksum or that none is known."""
    url = f'http://127.0.0.1:{closed_port()}/{DOWNLOADS[name].filename}'
    out = subprocess.run([sys.executable, '-m', 'fetch', 'weights', name, '--dest', str(tmp_path),
                          '--url', url, '--quiet'], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 1
    assert 'resuming in' not in out.stderr
    last = out.stderr.splitlines()[-1]
    assert last.startswith(f'fetch: error: {name}: {url}: ') and 'Connection refused' in last
    assert last.endswith(f'download {url} and give it with --file {name}=PATH ({checksum}'
                         + (')' if name == 'caffenet' else ': it is checked as it is used)')), last
