"""cluster.py on a real local Ray cluster (one per module, 2 CPUs): work
spread over worker processes gives the one-process results, a worker
killed mid-item loses nothing and nothing is done twice, Ctrl-C or SIGTERM
on the driver ends it in one line with nothing left running; and
common/finished.py's --skip-done decisions, which need no cluster."""
import contextlib
import functools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import ray
import ray.cloudpickle
from PIL import Image

import cluster
import infer
import loading
import score
from common import cli, datasets, finished, outputs
from common.progress import Progress
from helpers import descendants

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The workers unpickle this module's worker classes by value: tests/ is not
# on their path.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope='module')
def ray_local():
    with cluster.connected('local', num_cpus=2) as where:
        yield where


class SlowSquare:
    """A worker function that takes its time: writes <out>/<i>.txt (i*i)
    through a temporary file, sleeping while the file is half done."""

    def __init__(self, out, delay=0.3):
        self.out, self.delay = out, delay

    def __call__(self, i):
        with outputs.atomic_path(os.path.join(self.out, f'{i}.txt')) as tmp:
            with open(tmp, 'w') as f:
                f.write(str(i * i))
            time.sleep(self.delay)
        return i * i, os.getpid()


class SegmentItem:
    """infer.py's Segmenter, loaded once per worker, called per (photo, output base)."""

    def __init__(self, model, weights):
        self.segmenter = infer.Segmenter(model, weights)

    def __call__(self, item):
        path, out_base = item
        return self.segmenter(path, out_base), os.getpid()


def test_workers_segment_as_one_process(ray_local, tiny_model, tmp_path):
    folder, weights = tiny_model
    rng = np.random.default_rng(0)
    photos = []
    for k, (h, w) in enumerate([(37, 53), (64, 40), (20, 90), (50, 50), (33, 31)]):
        photos.append(str(tmp_path / 'in' / f'p{k}.png'))
        os.makedirs(os.path.dirname(photos[-1]), exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(photos[-1])
    alone = infer.run(photos, model=folder, weights=weights, out=str(tmp_path / 'one'), progress=False)
    items = [(p, os.path.join(tmp_path, 'ray', base)) for p, base in infer.image_paths(photos)]
    results = {}
    with cluster.Pool(functools.partial(SegmentItem, folder, weights), workers=2,
                      visible=[weights, str(tmp_path / 'in')]) as pool:
        stats = pool.map(items, lambda index, result: results.setdefault(index, result),
                         outputs_of=lambda item: infer.output_paths(item[1]).values())
    assert stats == cluster.Stats(len(photos), 0, 0)
    assert len({pid for _, pid in results.values()}) == 2  # both workers segmented
    for k, one in enumerate(alone):
        spread, _ = results[k]
        assert spread.path == one.path and spread.shares == one.shares and spread.size == one.size
        for kind in ('label', 'overlay'):
            a, b = getattr(one, kind), getattr(spread, kind)
            assert os.path.dirname(b) == str(tmp_path / 'ray')
            assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_a_killed_worker_loses_nothing(ray_local, tmp_path):
    out = str(tmp_path)
    seen, killed = [], []

    def on_result(index, result):
        seen.append(index)
        if not killed:  # its next item is running, its file half written
            killed.append(result[1])
            os.kill(result[1], signal.SIGKILL)

    with cluster.Pool(functools.partial(SlowSquare, out), workers=2) as pool:
        stats = pool.map(list(range(10)), on_result,
                         outputs_of=lambda i: [os.path.join(out, f'{i}.txt')])
        assert killed[0] not in pool.pids()  # Ray restarted it: a new process
    assert sorted(seen) == list(range(10))  # every item once
    assert stats.done == 10 and stats.redone >= 1 and stats.workers_lost == 0
    assert sorted(os.listdir(out)) == sorted(f'{i}.txt' for i in range(10))  # no temporaries
    for i in range(10):
        assert (tmp_path / f'{i}.txt').read_text() == str(i * i)


def test_an_error_of_the_work_reaches_the_driver_as_itself(ray_local, tiny_model, tmp_path):
    folder, weights = tiny_model
    (tmp_path / 'bad.jpg').write_bytes(b'not a jpeg')
    with cluster.Pool(functools.partial(SegmentItem, folder, weights), workers=1) as pool:
        with pytest.raises(infer.ImageError, match='bad.jpg: cannot read image'):
            pool.map([(str(tmp_path / 'bad.jpg'), str(tmp_path / 'bad'))])


def test_a_factory_error_and_an_unseen_path_are_one_line_errors(ray_local, tmp_path):
    with pytest.raises(loading.LoadError, match="no-such-model"):
        cluster.Pool(functools.partial(SegmentItem, str(tmp_path / 'no-such-model'), None),
                     workers=1)
    with pytest.raises(cluster.ClusterError, match='does not see .*missing.caffemodel'):
        cluster.Pool(functools.partial(SlowSquare, str(tmp_path)), workers=1,
                     visible=[str(tmp_path / 'missing.caffemodel')])


def test_addresses_that_cannot_work_are_one_line_errors():
    with pytest.raises(cluster.ClusterError, match="not 'local', 'auto' or host:port"):
        with cluster.connected('nowhere'):
            pass
    with pytest.raises(cluster.ClusterError, match='no Ray head node answers'):
        with cluster.connected('127.0.0.1:1'):
            pass


JOINER = textwrap.dedent('''\
    import sys
    import cluster
    for address in sys.argv[1:]:
        with cluster.connected(address) as where:
            with cluster.Pool(lambda: abs, workers=1) as pool:
                results = []
                pool.map([-1, -2], lambda index, value: results.append(value), progress=False)
            print(address, where.started, where.cpus, sorted(results))
    ''')


def test_auto_and_host_port_join_a_running_cluster(ray_local):
    head = ray.get_runtime_context().gcs_address
    joined = subprocess.run([sys.executable, '-c', JOINER, 'auto', head], cwd=REPO, text=True,
                            capture_output=True, timeout=120)
    assert joined.returncode == 0, joined.stderr
    assert joined.stdout.splitlines() == ['auto False 2 [1, 2]', f'{head} False 2 [1, 2]']
    assert ray.cluster_resources()['CPU'] == 2  # the cluster is still there, for its starter


def test_workers_score_as_one_process(ray_local, tiny_model, tiny_val_images):
    folder, weights = tiny_model
    alone = score.evaluate(folder, weights, progress=False)
    per_image = {}
    with cluster.Pool(functools.partial(score.ImageScorer, folder, weights), workers=2) as pool:
        pool.map(list(range(alone['images'])), per_image.__setitem__)
    summed = score.sum_image_hists([per_image[k] for k in sorted(per_image)])
    for (hist, loss), (name, head) in zip(summed, alone['heads'].items()):
        assert np.array_equal(hist, head['hist']) and hist.sum() > 0
        assert loss == head['loss']


DRIVER = textwrap.dedent('''\
    import functools, os, sys, time
    import cluster
    from common import cli, outputs

    def square(out, i):
        with outputs.atomic_path(os.path.join(out, f'{i}.txt')) as tmp:
            with open(tmp, 'w') as f:
                f.write(str(i * i))
            time.sleep(0.5)
        return i

    def factory(out):
        return functools.partial(square, out)

    out = sys.argv[1]
    with cli.stop_on_signals():
        try:
            cluster.map_items('local', functools.partial(factory, out), list(range(40)),
                              lambda index, i: print('done', i, flush=True), num_cpus=2,
                              outputs_of=lambda i: [os.path.join(out, f'{i}.txt')])
        except KeyboardInterrupt as e:
            cli.exit_interrupted('driver', e, f'{e.done} of {e.total} items done')
    ''')


def test_ctrl_c_on_the_driver_stops_everything_in_one_line(tmp_path):
    signum = signal.SIGINT  # SIGTERM: the infer.py --ray test
    script = tmp_path / 'driver.py'
    script.write_text(DRIVER)
    out = tmp_path / 'out'
    out.mkdir()
    driver = subprocess.Popen([sys.executable, str(script), str(out)], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              start_new_session=True)
    try:
        for line in driver.stdout:
            if line.startswith('done'):
                break
        started = descendants(driver.pid)  # the cluster: gcs, raylet, workers, ...
        os.killpg(driver.pid, signum)  # Ctrl-C: the terminal signals the whole group
        _, err = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 128 + signum
    name = signal.Signals(signum).name
    assert err.splitlines() == [line for line in err.splitlines() if line.startswith('driver: ')]
    assert len(err.splitlines()) == 1 and f'driver: interrupted ({name}): ' in err, err
    assert ' of 40 items done' in err
    assert len(started) >= 4
    deadline = time.monotonic() + 10
    while [p for p in started if os.path.exists(f'/proc/{p}')] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in started if os.path.exists(f'/proc/{p}')]
    written = sorted(os.listdir(out))
    assert len(written) < 40 and all(name.endswith('.txt') and not name.startswith('.')
                                     for name in written)
    for name in written:
        i = int(name.split('.')[0])
        assert (out / name).read_text() == str(i * i)


# --- --skip-done: no cluster ---------------------------------------------------

def test_skip_done_redoes_missing_truncated_and_planted_outputs(tmp_path):
    label = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10) % 21
    whole_png = str(tmp_path / 'whole.png')
    datasets.save_label_png(whole_png, label)
    scores = str(tmp_path / 'whole_scores.npy')
    np.save(scores, np.random.default_rng(0).random((3, 12, 10)).astype(np.float16))
    data = open(whole_png, 'rb').read()
    cut_png = tmp_path / 'cut.png'
    cut_png.write_bytes(data[:-20])                 # the end chunk missing
    bad_crc = tmp_path / 'crc.png'
    bad_crc.write_bytes(data[:40] + bytes([data[40] ^ 1]) + data[41:])  # a flipped bit
    cut_npy = tmp_path / 'cut_scores.npy'
    cut_npy.write_bytes(open(scores, 'rb').read()[:-1])
    planted = tmp_path / 'planted.png'
    planted.symlink_to(whole_png)
    empty = tmp_path / 'empty.json'
    empty.write_text('')
    assert finished.whole(whole_png) and finished.whole(scores)
    for path in (cut_png, bad_crc, cut_npy, planted, empty, tmp_path / 'missing.png', tmp_path):
        assert not finished.whole(str(path)), path
    assert finished.finished([whole_png, scores])
    assert not finished.finished([whole_png, str(cut_npy)]) and not finished.finished([])
    items = {'a': [whole_png, scores], 'b': [whole_png, str(cut_png)], 'c': [str(tmp_path / 'x.png')]}
    assert finished.unfinished(list(items), items.get) == ['b', 'c']


def test_temporaries_are_those_an_atomic_write_leaves(tmp_path):
    target = str(tmp_path / 'a.png')
    with outputs.atomic_path(target) as tmp:
        assert outputs.temporaries(target) == [tmp]
        assert outputs.temporaries(str(tmp_path / 'b.png')) == []
    assert outputs.temporaries(target) == []



def test_progress_off_a_terminal_prints_lines_and_a_closing_line(tmp_path):
    log = tmp_path / 'log.txt'
    with open(log, 'w') as f:  # not a terminal: no bar, lines
        done = Progress(3, 'tiny', every=0, file=f)
        for _ in range(3):
            done.update()
        done.close()
        stopped = Progress(3, 'tiny', every=3600, file=f)
        stopped.update()
        stopped.close(finished=False)  # interrupted: the command's own line says it
    lines = log.read_text().splitlines()
    assert [line.split(',')[0] for line in lines[:2]] == ['tiny: 1/3 images', 'tiny: 2/3 images']
    assert 'images/s, about' in lines[0] and ' left' in lines[0]
    assert len(lines) == 3 and lines[2].startswith('tiny: 3/3 images in ')


# --- the commands' --ray and --skip-done ---------------------------------------

def write_photos(folder, count, size, seed):
    """`count` random RGB photos p00.png, p01.png, ... of `size` (h, w) in `folder`."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for k in range(count):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f'p{k:02d}.png')


def command(script, *args):
    """Run infer.py or score.py in a process of its own (this one is the
    test cluster's driver already): (exit status, stdout, stderr)."""
    done = subprocess.run([sys.executable, os.path.join(REPO, script), *map(str, args)], cwd=REPO,
                          text=True, capture_output=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


def test_infer_ray_interrupted_then_skip_done_completes_the_set(ray_local, tiny_model, tmp_path):
    folder, weights = tiny_model
    write_photos(tmp_path / 'in', 16, (160, 240), seed=5)
    one, spread, out = tmp_path / 'one.json', tmp_path / 'ray.json', tmp_path / 'out'
    infer.main([str(tmp_path / 'in'), '--model', folder, '--weights', weights,
                '--out', str(tmp_path / 'one'), '--json', str(one)])
    args = [os.path.join(REPO, 'infer.py'), str(tmp_path / 'in'), '--model', folder,
            '--weights', weights, '--out', str(out), '--ray', ray.get_runtime_context().gcs_address]
    first = subprocess.Popen([sys.executable, *args], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    for line in first.stdout:
        if line.startswith(str(tmp_path / 'in')):  # an image done: the run is under way
            break
    first.send_signal(signal.SIGTERM)  # as a batch system stops a job
    _, err = first.communicate(timeout=60)
    assert first.returncode == 143 and len(err.splitlines()) == 1, err
    assert 'infer.py: interrupted (SIGTERM): ' in err and ' of 16 images segmented' in err
    kept = {name: os.stat(out / name).st_mtime_ns for name in os.listdir(out)}
    assert all(finished.whole(str(out / name)) for name in kept), sorted(kept)  # no temporaries, nothing cut
    whole_images = {name[:3] for name in kept if name.endswith('_overlay.png')} & \
        {name[:3] for name in kept if not name.endswith('_overlay.png')}
    assert 0 < len(whole_images) < 16
    status, printed, err = command(*args[:1], *args[1:], '--json', spread, '--skip-done')
    assert status == 0, err
    assert f'--skip-done: {len(whole_images)} of 16 images done already' in printed
    assert {name: os.stat(out / name).st_mtime_ns for name in kept} == kept  # not redone
    alone, spread = json.loads(one.read_text()), json.loads(spread.read_text())
    entries = {e['image']: e for e in alone.pop('images')}
    redone = spread.pop('images')
    assert spread == alone  # what ran: model, classes, weights and their sha256, engine
    assert len(redone) == 16 - len(whole_images)
    for e in redone:
        e['label'], e['overlay'] = (os.path.relpath(e[k], out) for k in ('label', 'overlay'))
        kept_entry = entries[e['image']]
        kept_entry['label'], kept_entry['overlay'] = (os.path.relpath(kept_entry[k], tmp_path / 'one')
                                                      for k in ('label', 'overlay'))
        assert e == kept_entry  # sizes, outputs' names, class shares
    for name in os.listdir(tmp_path / 'one'):
        assert (out / name).read_bytes() == (tmp_path / 'one' / name).read_bytes()


def test_score_ray_local_gives_the_one_process_metrics(tiny_model, tiny_val_images, tmp_path):
    folder, weights = tiny_model
    score.main(['--model', folder, '--weights', weights, '--json', str(tmp_path / 'one.json'),
                '--save-dir', str(tmp_path / 'one'), '--report', str(tmp_path / 'report1')])
    status, _, err = command('score.py', '--model', folder, '--weights', weights,
                             '--json', tmp_path / 'ray.json', '--save-dir', tmp_path / 'pred',
                             '--report', tmp_path / 'report2', '--ray', 'local')
    assert status == 0, err
    assert json.loads((tmp_path / 'ray.json').read_text()) == json.loads((tmp_path / 'one.json').read_text())
    reports = [json.loads((tmp_path / f'report{k}' / 'report.json').read_text()) for k in (1, 2)]
    assert reports[0] == reports[1] and reports[0]
    pages = [re.sub(r'<td>written</td><td><code>[^<]*', '', (tmp_path / f'report{k}' / 'report.html').read_text())
             for k in (1, 2)]
    assert pages[0] == pages[1]  # the worst and best images' maps too
    assert sorted(os.listdir(tmp_path / 'pred')) == sorted(f'{i}.png' for i in tiny_val_images)
    for i in tiny_val_images:
        assert (tmp_path / 'pred' / f'{i}.png').read_bytes() == (tmp_path / 'one' / f'{i}.png').read_bytes()


def test_ray_with_gpu_is_one_usage_line(capsys):
    parser = cli.ArgumentParser(prog='x.py')
    cli.add_cluster_options(parser, skip_done=True)
    parser.add_argument('--gpu', type=int)  # cli.gpu_id refuses any GPU on this CPU-only build first
    cli.check_cluster_options(parser, parser.parse_args(['--ray', 'local', '--skip-done']))
    with pytest.raises(SystemExit) as stopped:
        cli.check_cluster_options(parser, parser.parse_args(['--ray', 'local', '--gpu', '0']))
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.splitlines() == [
        'x.py: error: --ray workers run on the CPU: not with --gpu (see --help)']


def test_infer_ray_local_loses_nothing_when_a_worker_is_killed(tiny_model, tmp_path):
    """The command on a cluster it starts: a worker SIGKILLed mid-run, the
    run still ends with every photo done once, as one process does it."""
    folder, weights = tiny_model
    write_photos(tmp_path / 'in', 24, (240, 320), seed=7)
    infer.main([str(tmp_path / 'in'), '--model', folder, '--weights', weights,
                '--out', str(tmp_path / 'one')])
    out = tmp_path / 'out'
    driver = subprocess.Popen([sys.executable, os.path.join(REPO, 'infer.py'), str(tmp_path / 'in'),
                               '--model', folder, '--weights', weights, '--out', str(out),
                               '--json', str(tmp_path / 'ray.json'), '--ray', 'local'],
                              cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed, deadline = None, time.monotonic() + 120
    while killed is None and driver.poll() is None and time.monotonic() < deadline:
        if out.is_dir() and len(os.listdir(out)) >= 4:  # the workers at work
            for pid in descendants(driver.pid):
                with contextlib.suppress(OSError):
                    if open(f'/proc/{pid}/cmdline').read().startswith('ray::_Worker'):
                        os.kill(pid, signal.SIGKILL)
                        killed = pid
                        break
        time.sleep(0.01)
    printed, err = driver.communicate(timeout=180)
    assert killed and driver.returncode == 0 and err == '', (killed, err)
    assert f'cluster: worker {killed} died with items in flight; redoing them' in printed
    assert 'segmented 24 of 24 images' in printed
    assert len(json.loads((tmp_path / 'ray.json').read_text())['images']) == 24
    assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / 'one'))  # no temporary left
    for name in os.listdir(out):
        assert (out / name).read_bytes() == (tmp_path / 'one' / name).read_bytes()
