"""Trust in what the commands leave behind, tried for real: signals sent to
real processes at random moments (several tries each), a real full disk (a
small tmpfs, where mounting is permitted), temporary files that never stay,
Caffe's log kept quiet, and the CUDA check that keeps --gpu from aborting.

Every interrupted run must end in one line and the signal's exit status
(130 SIGINT, 143 SIGTERM), with every output file whole (decodable, the
right shape) or absent, no temporary file left, and no input changed.
"""
import contextlib
import http.server
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time

import numpy as np
import pytest
from PIL import Image

import caffe
from caffe.proto import caffe_pb2

import infer
import score
import surgery
from common import caffe_setup, cli, datasets, locations, outputs, weightfiles
from helpers import write_model, write_voc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tools'))
import resume_trials  # noqa: E402  (tools/ is not a package)

REPO = locations.REPO_DIR
CLASSES = datasets.VOC_CLASSES
PHOTO_SIZE = (300, 400)  # (height, width): a few tenths of a second each
PHOTOS = 8
SEED = int(os.environ.get('TRUST_SEED', time.time()))  # printed with every failure
rng = random.Random(SEED)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """{name: path}: a tiny FCN-8s folder beside VOC-layout data, its
    weights, and a folder of photos."""
    root = tmp_path_factory.mktemp('trust')
    write_voc(str(root / 'data' / 'voc'), {'val': [f'val_{i:04d}' for i in range(6)]},
              sizes=[(200, 250)] * 6)
    folder = write_model(root / 'fcn8', stride=8)
    weights = root / 'fcn8.caffemodel'
    caffe.Net(os.path.join(folder, 'deploy.prototxt'), caffe.TEST).save(str(weights))
    photos = root / 'photos'
    photos.mkdir()
    pixels = np.random.default_rng(0)
    for i in range(PHOTOS):
        Image.fromarray(pixels.integers(0, 256, PHOTO_SIZE + (3,), dtype=np.uint8)).save(
            photos / f'p{i}.jpg')
    return dict(root=root, model=folder, weights=str(weights), photos=photos,
                voc=root / 'data' / 'voc')


def files(folder):
    """{relative path: bytes} of every file under `folder`."""
    out = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(dirpath, name), 'rb') as f:
                out[os.path.relpath(os.path.join(dirpath, name), folder)] = f.read()
    return out


def hidden(folder):
    """Temporary files (outputs.atomic_paths names them .<name>.*) left anywhere under `folder`."""
    return [os.path.join(d, n) for d, _, names in os.walk(folder) for n in names if n.startswith('.')]


# ---------------------------------------------------------------- signals

def start(*argv):
    """A command in a subprocess, returned once its own code handles
    signals (before that, Python is still starting, and a Ctrl-C is Python's
    to report; Linux shows a process's caught signals in /proc)."""
    proc = subprocess.Popen([sys.executable, *map(str, argv)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    resume_trials.wait_until_it_handles_signals(proc)
    return proc


def wait_for(path, proc, timeout=60):
    """Wait until `path` exists (the run is under way) or the process ends."""
    end = time.monotonic() + timeout
    while not os.path.exists(path) and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.02)


def interrupt(proc, signum, times, gap=0.05):
    """Send `signum` `times` times (a second Ctrl-C, a process manager's
    repeated SIGTERM); return (exit status, stdout, stderr)."""
    for _ in range(times):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)
        time.sleep(gap)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def interrupted_line(rc, err, prog, signum, context):
    """The run ended by the signal: exit status 128 + signum and one line on
    stderr (`prog` a regular expression), no traceback. Returns that line."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 128 + signum, (context, rc, err)
    assert len(lines) == 1 and 'Traceback' not in err, (context, err)
    assert re.match(f'{prog}: interrupted \\({signal.Signals(signum).name}\\)', lines[0]), (context, err)
    return lines[0]


# (signal, times sent, when): 'under way' waits for the first output, then a
# random fraction of a second; 'any' is a random moment from the start
# (loading Caffe and the net included).
INFER_TRIES = [(signal.SIGINT, 1, 'under way'), (signal.SIGTERM, 2, 'under way'),
               (signal.SIGINT, 3, 'under way'), (signal.SIGTERM, 1, 'any')]


@pytest.mark.parametrize('signum, times, when', INFER_TRIES)
def test_infer_interrupted_leaves_whole_outputs_and_says_how_many(world, tmp_path, signum, times, when):
    out = tmp_path / 'out'
    photos_before = files(world['photos'])
    proc = start('infer.py', world['photos'], '--model', world['model'], '--weights', world['weights'],
                 '--out', out, '--scores', '--json', tmp_path / 'summary.json')
    if when == 'under way':
        wait_for(out / 'p0.png', proc)
        delay = rng.uniform(0, 0.8)
    else:
        delay = rng.uniform(0, 3.0)
    time.sleep(delay)
    rc, stdout, err = interrupt(proc, signum, times)
    context = f'seed {SEED}, {signal.Signals(signum).name} x{times} {delay:.2f} s after {when}'
    assert files(world['photos']) == photos_before, context
    assert hidden(tmp_path) == [], context
    if rc == 0:  # finished before the signal: every output there
        assert len(list(out.glob('*.png'))) == 2 * PHOTOS, context
        return
    line = interrupted_line(rc, err, 'infer.py', signum, context)
    assert not (tmp_path / 'summary.json').exists(), context
    m = re.search(r': (\d+) of (\d+) images segmented, their outputs in .*; no partial file left$', line)
    done = int(m.group(1)) if m else 0
    assert m or re.search(r'(while starting|before segmenting any image); nothing was written$', line), line
    # Each image's outputs appear together, whole, and only for the images counted.
    labels = sorted(out.glob('p?.png')) if out.exists() else []
    assert len(labels) == done, (context, line, sorted(os.listdir(out)))
    # One line per image done (the last one's may be cut by the signal),
    # after the header naming the engine (if the signal let it out).
    images = [l for l in stdout.splitlines() if not re.fullmatch(r'\S+: engine caffe \(cpu\)', l)]
    assert len(images) in (done - 1, done), context
    for label in labels:
        with Image.open(label) as im:
            im.load()
            assert im.size == PHOTO_SIZE[::-1]
        with Image.open(label.with_name(label.stem + '_overlay.png')) as im:
            im.load()
            assert im.size == PHOTO_SIZE[::-1]
        scores = np.load(label.with_name(label.stem + '_scores.npy'))
        assert scores.shape == (len(CLASSES),) + PHOTO_SIZE, context
        np.testing.assert_allclose(scores.astype(np.float32).sum(axis=0), 1, atol=0.01)
    assert len(os.listdir(out)) == 3 * done if out.exists() else done == 0, context


SCORE_TRIES = [(signal.SIGINT, 1), (signal.SIGTERM, 2)]


@pytest.mark.parametrize('signum, times', SCORE_TRIES)
def test_score_interrupted_prints_no_table_and_leaves_whole_predictions(world, tmp_path, signum, times):
    data_before = files(world['voc'])
    saved = tmp_path / 'pred'
    proc = start('score.py', '--model', world['model'], '--weights', world['weights'], '--split', 'val',
                 '--save-dir', saved, '--json', tmp_path / 'score.json')
    wait_for(saved / 'val_0000.png', proc)
    delay = rng.uniform(0, 0.3)
    time.sleep(delay)
    rc, stdout, err = interrupt(proc, signum, times)
    context = f'seed {SEED}, {signal.Signals(signum).name} x{times} {delay:.2f} s after the first image'
    assert files(world['voc']) == data_before and hidden(tmp_path) == [], context
    if rc == 0:
        assert (tmp_path / 'score.json').exists()
        return
    line = interrupted_line(rc, err, 'score.py', signum, context)
    done = int(re.search(r': (\d+) of 6 images scored', line).group(1))
    assert 'mean IU' not in stdout and not (tmp_path / 'score.json').exists(), context
    predictions = sorted(saved.iterdir())
    assert [p.name for p in predictions] == [f'val_{i:04d}.png' for i in range(done)], context
    for p in predictions:
        with Image.open(p) as im:
            im.load()
            assert im.size == (250, 200)


def test_surgery_interrupted_writes_nothing(world, tmp_path):
    """A signal at a random moment of `surgery.py convert` (which loads two
    nets): one line, and no caffemodel, whole or partial."""
    classifier, fcn, weights = ilsvrc_pair(tmp_path)
    proc = start('surgery.py', 'convert', '--net', 'vgg16', '--weights', weights, '--out',
                 tmp_path / 'out' / 'fcn.caffemodel', '--classifier-proto', classifier,
                 '--fcn-proto', fcn)
    delay = rng.uniform(0, 1.5)
    time.sleep(delay)
    rc, _, err = interrupt(proc, signal.SIGINT, 2)
    context = f'seed {SEED}, SIGINT x2 {delay:.2f} s after the start'
    assert hidden(tmp_path) == [], context
    if rc == 0:
        return
    line = interrupted_line(rc, err, 'surgery.py( convert)?', signal.SIGINT, context)
    if (tmp_path / 'out' / 'fcn.caffemodel').exists():  # renamed into place as the signal came
        assert line.endswith('was written whole just before'), line
        caffe.Net(str(fcn), caffe.TEST, weights=str(tmp_path / 'out' / 'fcn.caffemodel'))
    else:
        assert line.endswith('nothing was written') or line.endswith('not written; no partial file left')


def ilsvrc_pair(tmp_path):
    """A tiny classifier (an InnerProduct on a 3x3 map) and its fully
    convolutional twin, and the classifier's weights."""
    n = caffe.NetSpec()
    n.data = caffe.layers.Input(shape=dict(dim=[1, 2, 3, 3]))
    n.fc6 = caffe.layers.InnerProduct(n.data, num_output=4)
    classifier = tmp_path / 'classifier.prototxt'
    classifier.write_text(str(n.to_proto()))
    f = caffe.NetSpec()
    f.data = caffe.layers.Input(shape=dict(dim=[1, 2, 3, 3]))
    f.fc6 = caffe.layers.Convolution(f.data, num_output=4, kernel_size=3)
    fcn = tmp_path / 'fcn.prototxt'
    fcn.write_text(str(f.to_proto()))
    weights = tmp_path / 'classifier.caffemodel'
    caffe.Net(str(classifier), caffe.TEST).save(str(weights))
    return classifier, fcn, weights


class SlowHandler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD slowly (a chunk every few milliseconds), Range requests included."""
    payload = np.random.default_rng(1).bytes(4 << 20)  # fetch reads 1 MiB at a time

    def do_GET(self):
        start_at = int(re.match(r'bytes=(\d+)-', self.headers.get('Range', 'bytes=0-')).group(1))
        self.send_response(206 if start_at else 200)
        if start_at:
            self.send_header('Content-Range', f'bytes {start_at}-{len(self.payload) - 1}/{len(self.payload)}')
        self.send_header('Content-Length', str(len(self.payload) - start_at))
        self.end_headers()
        with contextlib.suppress(OSError):
            for at in range(start_at, len(self.payload), 64 << 10):  # 4 MiB in about a second
                self.wfile.write(self.payload[at:at + (64 << 10)])
                time.sleep(0.015)

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_server():
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_fetch_interrupted_during_a_download_keeps_only_the_part_file(tmp_path, slow_server, signum):
    """The download stops in one line; the bytes so far stay in the .part
    file (a later run resumes from them), nothing under the final name."""
    dest = tmp_path / 'models'
    proc = start('-m', 'fetch', 'weights', 'vgg16', '--dest', dest, '--no-convert', '--quiet',
                 '--url', f'{slow_server}/VGG_ILSVRC_16_layers.caffemodel')
    part = dest / 'nets' / 'ilsvrc-nets' / 'VGG_ILSVRC_16_layers.caffemodel.part'
    end = time.monotonic() + 60
    while (not part.exists() or not part.stat().st_size) and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.01)  # until the first megabyte is in
    delay = rng.uniform(0, 0.3)
    time.sleep(delay)
    rc, _, err = interrupt(proc, signum, 2)
    context = f'seed {SEED}, {signal.Signals(signum).name} x2 {delay:.2f} s into the download'
    line = interrupted_line(rc, err, 'fetch', signum, context)
    assert 'run the same command again to resume' in line
    assert not part.with_suffix('').exists(), context
    kept = part.read_bytes()
    assert 0 < len(kept) < len(SlowHandler.payload) and SlowHandler.payload.startswith(kept), context


def test_fetch_interrupted_while_unpacking_leaves_no_staging_folder(tmp_path):
    """Entries are unpacked into a hidden staging folder beside the dataset:
    interrupted, it is removed, and the dataset's marker folder (moved in
    last) is absent, so the next run unpacks again."""
    archive = tmp_path / 'nyud.tar'
    with tarfile.open(archive, 'w') as tar:
        for i in range(3000):
            info = tarfile.TarInfo(f'nyud/segmentation/img_{i}.mat')
            info.size = 1000
            tar.addfile(info, io.BytesIO(bytes(1000)))
    data = tmp_path / 'data'
    proc = start('-m', 'fetch', 'data', 'nyud', '--dest', data, '--file', archive, '--quiet')
    staging = data / '.nyud.unpacking'
    wait_for(staging, proc)
    delay = rng.uniform(0, 0.3)
    time.sleep(delay)
    rc, _, err = interrupt(proc, signal.SIGTERM, 2)
    context = f'seed {SEED}, SIGTERM x2 {delay:.2f} s into unpacking'
    assert not staging.exists(), context
    if rc == 0:
        assert len(os.listdir(data / 'nyud' / 'segmentation')) == 3000, context
        return
    interrupted_line(rc, err, 'fetch', signal.SIGTERM, context)
    assert not (data / 'nyud' / 'segmentation').exists(), context


def test_commands_interrupted_while_starting_say_so_in_one_line(world):
    """A signal while Caffe is still loading: no traceback of the import it
    cut, one line, the signal's status."""
    proc = start('score.py', '--model', world['model'], '--weights', world['weights'])
    rc, _, err = interrupt(proc, signal.SIGINT, 1)
    line = interrupted_line(rc, err, 'score.py', signal.SIGINT, f'seed {SEED}')
    assert line.endswith('while starting; nothing was written')


def test_signals_wait_for_a_deferred_block_then_interrupt():
    """In this process: a real SIGTERM inside signals_deferred() is raised
    where the block ends, as Interrupted with the shell's status 143."""
    before = {s: signal.getsignal(s) for s in cli.STOP_SIGNALS}
    reached = False
    try:
        with pytest.raises(cli.Interrupted) as stopped:
            with cli.stop_on_signals():
                with cli.signals_deferred():
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.05)  # the handler runs here and holds the signal back
                    reached = True
    finally:  # a signal came: stop_on_signals left them ignored, as for a process ending
        for s, handler in before.items():
            signal.signal(s, handler)
    assert reached and stopped.value.exit_status == 143


def test_weights_holding_infinity_name_the_layer(world, tmp_path):
    """Caught in any layer of the file, as loaded by every command
    (weightfiles.check_weights), before a net runs."""
    net_param = weightfiles.read_caffemodel(world['weights'])
    layer = next(layer for layer in net_param.layer if layer.name == 'conv3_2')
    layer.blobs[1].data[0] = -np.inf
    bad = tmp_path / 'inf.caffemodel'
    bad.write_bytes(net_param.SerializeToString())
    net = caffe.Net(os.path.join(world['model'], 'deploy.prototxt'), caffe.TEST)
    with pytest.raises(weightfiles.CheckError, match=rf'^{re.escape(str(bad))}: layer conv3_2 blob 1 '
                                                     r'holds 1 non-finite values \(infinity\)'):
        weightfiles.load_weights(net, str(bad))


# ---------------------------------------------------------------- outputs

def test_atomic_path_leaves_the_previous_file_on_error_and_its_mode_on_success(tmp_path):
    path = tmp_path / 'result.npy'
    np.save(path, np.arange(3))
    os.chmod(path, 0o640)
    with pytest.raises(ValueError, match='half way'):
        with outputs.atomic_path(str(path)) as tmp:
            assert tmp.endswith('.npy') and os.path.dirname(tmp) == str(tmp_path)
            with open(tmp, 'wb') as f:
                f.write(b'half a file')
            raise ValueError('half way')
    np.testing.assert_array_equal(np.load(path), np.arange(3))
    with outputs.atomic_path(str(path)) as tmp:
        np.save(tmp, np.arange(5))
    np.testing.assert_array_equal(np.load(path), np.arange(5))
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert sorted(os.listdir(tmp_path)) == ['result.npy']


def fill(disk, leave):
    """Fill `disk` up to `leave` bytes free."""
    (disk / 'filler').unlink(missing_ok=True)
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(disk / 'filler', 'wb') as f:
        f.write(b'\0' * max(0, free - leave))


def one_error_line(capfd, excinfo, prog):
    err = capfd.readouterr().err
    message = str(excinfo.value.code)
    assert message.startswith(f'{prog}: error: ') and '\n' not in message and 'Traceback' not in err
    return message


def test_infer_on_a_full_disk_says_so_before_writing(world, tiny_disk, capfd):
    argv = [str(world['photos']), '--model', world['model'], '--weights', world['weights']]
    with pytest.raises(SystemExit) as stopped:
        infer.main(argv + ['--out', str(tiny_disk / 'out'), '--scores'])
    message = one_error_line(capfd, stopped, 'infer.py')
    assert f'{tiny_disk / "out"}: not enough free space for --scores of {PHOTOS} images' in message
    assert not (tiny_disk / 'out').exists()  # refused before any work
    fill(tiny_disk, 700_000)  # room for the label and overlay of one photo, not two
    with pytest.raises(SystemExit) as stopped:
        infer.main(argv + ['--out', str(tiny_disk / 'out')])
    message = one_error_line(capfd, stopped, 'infer.py')
    assert 'not enough free space for the outputs of' in message and 'p1.jpg' in message
    assert sorted(os.listdir(tiny_disk / 'out')) == ['p0.png', 'p0_overlay.png']
    fill(tiny_disk, 0)  # the --json summary does not fit: a real ENOSPC
    with pytest.raises(SystemExit) as stopped:
        infer.main([str(world['photos'] / 'p0.jpg')] + argv[1:]
                   + ['--out', str(world['root'] / 'infer-out'), '--json', str(tiny_disk / 's.json')])
    message = one_error_line(capfd, stopped, 'infer.py')
    assert f'{tiny_disk}: cannot write the --json summary (s.json): No space left on device' in message
    assert hidden(tiny_disk) == [] and not (tiny_disk / 's.json').exists()


def test_score_on_a_full_disk_names_the_folder(world, tiny_disk, capfd):
    fill(tiny_disk, 1000)
    with pytest.raises(SystemExit) as stopped:
        score.main(['--model', world['model'], '--weights', world['weights'], '--split', 'val',
                    '--save-dir', str(tiny_disk / 'pred')])
    message = one_error_line(capfd, stopped, 'score.py')
    assert f'{tiny_disk / "pred"}: cannot write the prediction (val_0000.png): No space left' in message
    assert os.listdir(tiny_disk / 'pred') == []


# ---------------------------------------------------------------- Caffe's build and log

def test_cuda_check_agrees_with_the_recorded_build():
    """cuda_available() looks for a function of CUDA builds in the loaded
    library; one every build defines is found the same way (so absence
    means absence), and the answer matches the build's own record."""
    import ctypes
    library = ctypes.CDLL(caffe._caffe.__file__)
    assert hasattr(library, '_ZN5caffe5Caffe9SetDeviceEi')  # caffe::Caffe::SetDevice(int): every build
    info = os.path.join(os.path.dirname(caffe.__file__), 'build-info.json')
    if not os.path.isfile(info):
        pytest.skip('this pycaffe has no build-info.json (not installed by tools/caffe/build.sh)')
    with open(info) as f:
        variant = json.load(f)['variant']
    assert caffe_setup.cuda_available() == (variant == 'cuda')
    if variant == 'cpu':
        with pytest.raises(caffe_setup.DeviceError, match='built for the CPU only'):
            caffe_setup.use_device(0)  # refused, not Caffe's abort


def test_surgery_keeps_caffes_log_quiet_unless_verbose(tmp_path):
    classifier, fcn, weights = ilsvrc_pair(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != 'GLOG_minloglevel'}
    argv = [sys.executable, 'surgery.py', 'convert', '--net', 'vgg16', '--weights', str(weights),
            '--classifier-proto', str(classifier), '--fcn-proto', str(fcn)]
    quiet = subprocess.run(argv + ['--out', str(tmp_path / 'a.caffemodel')], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and quiet.stderr == '', quiet.stderr
    assert quiet.stdout.splitlines() == [f'wrote {tmp_path / "a.caffemodel"}: 1 copied, 1 coerced, '
                                         '0 dropped, 0 kept as initialised']
    verbose = subprocess.run(argv + ['--out', str(tmp_path / 'b.caffemodel'), '--verbose'], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=120)
    assert verbose.returncode == 0 and 'net.cpp' in verbose.stderr
    assert 'coercing fc6[0] -> fc6[0]' in verbose.stdout
    net = caffe_pb2.NetParameter()
    net.ParseFromString((tmp_path / 'a.caffemodel').read_bytes())
    assert [layer.name for layer in net.layer if layer.blobs] == ['fc6']
    assert hidden(tmp_path) == []


def test_surgery_out_onto_its_own_input_is_refused(tmp_path, capfd):
    classifier, fcn, weights = ilsvrc_pair(tmp_path)
    before = weights.read_bytes()
    with pytest.raises(SystemExit) as stopped:
        surgery.main(['convert', '--net', 'vgg16', '--weights', str(weights), '--out', str(weights),
                      '--classifier-proto', str(classifier), '--fcn-proto', str(fcn), '--force'])
    message = one_error_line(capfd, stopped, 'surgery.py convert')
    assert f'--out {weights} would overwrite the weights {weights}' in message
    assert weights.read_bytes() == before
