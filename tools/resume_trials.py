"""Interrupt training at random moments and check that resuming ends with
exactly the weights of an uninterrupted run (prints a row per trial).

    python tools/resume_trials.py [--trials 20] [--steps 24] [--interval 8]
        [--seed 0] [--folder DIR]

Each trial trains a copy of a small model folder with the real `solve.py
--cpu`, stops it one of five ways, then runs `solve.py --resume` to the end:
  stop              --max-iter at a random iteration (inside a test interval or on one)
  sigint            Ctrl-C (SIGINT) at a random moment: solve.py snapshots, then exits
  sigkill           kill -9 at a random moment: the latest complete snapshot survives
  sigterm-repeated  SIGTERM two or three times, a random 0-0.3 s apart, from a random
                    moment (as process managers and schedulers send it)
  sigint-repeated   the same with Ctrl-C
and compares every weight with the uninterrupted run's, bit for bit. The
model (a narrow VGG16 FCN-32s on generated VOC-layout scenes, loss sampling
at p = 0.5, so two images a step, and dropout) exercises every source of
randomness training has. BLAS runs single-threaded, as bit-for-bit
comparisons need (threaded reductions may sum in another order).
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from common import caffe_setup  # noqa: E402

caffe_setup.quiet_caffe_log()  # before nets imports caffe

import caffe  # noqa: E402

import nets  # noqa: E402
import synthetic  # noqa: E402
from common import datasets, locations  # noqa: E402
from common.snapshots import Snapshots  # noqa: E402

KINDS = ('stop', 'sigint', 'sigkill', 'sigterm-repeated', 'sigint-repeated')
SIGNALS = {'sigint': signal.SIGINT, 'sigkill': signal.SIGKILL, 'sigterm': signal.SIGTERM}


def make_workspace(root):
    """A model folder (root/model, with every model folder's solve.py) and
    its data (root/data/voc: synthetic.squares scenes)."""
    rng = np.random.default_rng(0)
    splits = {'train': [f't{i}' for i in range(6)], 'val': ['v0', 'v1']}
    datasets.write_voc(os.path.join(root, 'data', 'voc'), splits,
                       {idx: synthetic.squares(rng) for ids in splits.values() for idx in ids})
    folder = os.path.join(root, 'model')
    nets.write_net_py(folder, synthetic.tiny_model(loss_sampling=0.5),
                      'The model tools/resume_trials.py interrupts and resumes.')
    shutil.copyfile(os.path.join(locations.model_dir('voc-fcn32s'), 'solve.py'),
                    os.path.join(folder, 'solve.py'))
    return folder


def solve(folder, *args, wait=True):
    """Run the folder's solve.py on the CPU with single-threaded BLAS."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS='1', OMP_NUM_THREADS='1')
    proc = subprocess.Popen([sys.executable, 'solve.py', '--cpu', *map(str, args)], cwd=folder,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        proc.out, proc.err = proc.communicate()
    return proc


def final_weights(folder):
    """{layer: [blobs]} of the folder's latest snapshot, and its iteration."""
    latest = Snapshots(os.path.join(folder, locations.SNAPSHOT_DIR)).latest(full=True)
    net = caffe.Net(locations.deploy_prototxt(folder), caffe.TEST, weights=latest['caffemodel'])
    return {k: [b.data.copy() for b in v] for k, v in net.params.items()}, latest['iteration']


def fresh_copy(template, root, name):
    folder = os.path.join(root, name)
    shutil.copytree(template, folder, ignore=shutil.ignore_patterns('snapshot'))
    return folder


def wait_until_it_handles_signals(proc, timeout=30):
    """Return once the process `proc` catches SIGTERM itself (its command's
    code has installed its handlers): before that, Python is still starting
    and a signal is Python's to report. Linux shows caught signals in /proc."""
    status = f'/proc/{proc.pid}/status'
    end = time.monotonic() + timeout
    while os.path.exists(status) and proc.poll() is None and time.monotonic() < end:
        with open(status) as f:
            caught = int(re.search(r'SigCgt:\s*([0-9a-f]+)', f.read()).group(1), 16)
        if caught & (1 << (signal.SIGTERM - 1)):  # Python alone catches SIGINT only
            return
        time.sleep(0.005)


def signals_for(kind, rng):
    """[(signal, seconds to wait before it)] a kind of interruption sends."""
    name, _, repeated = kind.partition('-')
    count = rng.randint(2, 3) if repeated else 1
    return [(SIGNALS[name], 0 if i == 0 else rng.uniform(0, 0.3)) for i in range(count)]


def interrupt(kind, folder, common, window, rng):
    """Start training and send the kind's signals from a random moment of
    `window` (seconds: start-up over, training not yet done); a run that
    ended first is started again with an earlier moment. Checks how it
    ended: one line, exit status 128 + the signal, and the snapshot named
    is the latest one, whole."""
    for _ in range(5):
        shutil.rmtree(os.path.join(folder, 'snapshot'), ignore_errors=True)
        proc = solve(folder, *common, wait=False)
        wait_until_it_handles_signals(proc)
        time.sleep(rng.uniform(*window))
        sent = signals_for(kind, rng)
        for signum, pause in sent:
            time.sleep(pause)
            if proc.poll() is None:
                proc.send_signal(signum)
        proc.out, proc.err = proc.communicate()
        if proc.returncode != 0:
            break
        window = (window[0] * 0.8, window[0])
    first = sent[0][0]
    if first == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.err)
    else:
        check_interrupted(proc, folder, first)


def check_interrupted(proc, folder, first):
    """How a solve.py that got signal `first` (then maybe more) ended: exit
    status 128 + `first`, one line and no traceback, and either nothing
    written (a signal before any iteration ran), or the snapshot the line
    names is latest.json's, whole, and the newest there is (none left
    unnamed), with no temporary or lock file left. Returns that snapshot's
    entry (None: nothing written)."""
    assert proc.returncode == 128 + first, (proc.returncode, proc.err)
    assert 'Traceback' not in proc.err, proc.err
    lines = [line for line in proc.err.splitlines() if line.strip()]
    assert len(lines) == 1, proc.err
    name = signal.Signals(first).name
    snapshot = os.path.join(folder, 'snapshot')
    if lines[0] in (f'solve.py: interrupted ({name}) while starting; nothing was written',
                    f'solve.py: interrupted ({name}): before training began; nothing was written'):
        assert not os.path.exists(snapshot), os.listdir(snapshot)
        return None
    latest = Snapshots(snapshot).latest(full=True)
    assert lines[0] == (f'solve.py: interrupted ({name}): at iteration {latest["iteration"]}: '
                        f'snapshot {latest["solverstate"]}; continue with --resume'), (lines, latest)
    written = [int(name.rsplit('_iter_', 1)[1].split('.')[0]) for name in os.listdir(snapshot)
               if name.endswith(('.caffemodel', '.solverstate'))]
    assert max(written) == latest['iteration'], (sorted(written), latest)
    leftovers = [n for n in os.listdir(snapshot) if n.startswith('.') or n.endswith('.lock')]
    assert not leftovers, leftovers
    return latest


def trial(kind, template, root, name, steps, interval, window, rng):
    """Run one interrupted-and-resumed training; returns (the iteration of
    the snapshot it resumed from, the final weights)."""
    folder = fresh_copy(template, root, name)
    common = ('--max-iter', steps, '--test-interval', interval)
    if kind == 'stop':
        at = rng.randint(1, steps - 1)
        first = solve(folder, '--max-iter', at, '--test-interval', interval)
        assert first.returncode == 0, first.err
    else:
        interrupt(kind, folder, common, window, rng)
    pointer = os.path.join(folder, 'snapshot', 'latest.json')
    stopped = json.load(open(pointer))['iteration'] if os.path.exists(pointer) else 0
    rest = solve(folder, *common, *(('--resume',) if stopped else ()))
    assert rest.returncode == 0, rest.err
    weights, iteration = final_weights(folder)
    assert iteration == steps
    return stopped, weights


def compare(expected, got):
    """The largest absolute difference over every weight (0.0: identical)."""
    return max(float(np.max(np.abs(a - b))) if a.size else 0.0
               for name in expected for a, b in zip(expected[name], got[name]))


def run(trials, steps=24, interval=8, seed=0, root=None, kinds=KINDS, out=print):
    """Run `trials` trials (kinds in turn); returns [(kind, stopped at,
    max abs difference)]."""
    caffe.set_mode_cpu()
    root = root or tempfile.mkdtemp(prefix='resume-trials-')
    template = make_workspace(root)
    # Signals land between start-up (a one-step run's time) and the end.
    timed = []
    for name, n in (('startup', 1), ('uninterrupted', steps)):
        start = time.time()
        done = solve(fresh_copy(template, root, name), '--max-iter', n, '--test-interval', interval)
        assert done.returncode == 0, done.err
        timed.append(time.time() - start)
    startup, duration = timed
    window = (startup, startup + 0.9 * (duration - startup))
    expected, _ = final_weights(os.path.join(root, 'uninterrupted'))
    rng = random.Random(seed)
    results = []
    out(f'{"trial":>5}  {"kind":<17}{"stopped at":>11}{"max |diff|":>12}')
    for i in range(trials):
        kind = kinds[i % len(kinds)]
        stopped, weights = trial(kind, template, root, f'trial-{i}', steps, interval, window, rng)
        results.append((kind, stopped, compare(expected, weights)))
        out(f'{i:>5}  {kind:<17}{stopped:>11}{results[-1][2]:>12.3g}')
    identical = sum(diff == 0 for _, _, diff in results)
    out(f'{identical} of {trials} resumed runs ended with identical weights '
        f'({steps} steps, test interval {interval}, uninterrupted run {duration:.1f} s)')
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--trials', type=int, default=20)
    parser.add_argument('--steps', type=int, default=24)
    parser.add_argument('--interval', type=int, default=8)
    parser.add_argument('--seed', type=int, default=0, help='seeds the moments of interruption')
    parser.add_argument('--folder', help='work here (default: a new temporary folder)')
    args = parser.parse_args(argv)
    results = run(args.trials, args.steps, args.interval, args.seed, args.folder)
    return 0 if all(diff == 0 for _, _, diff in results) else 1


if __name__ == '__main__':
    sys.exit(main())
