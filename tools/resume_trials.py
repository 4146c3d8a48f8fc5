"""Interrupt training at random moments and check that resuming ends with
exactly the weights of an uninterrupted run (prints a row per trial).

    python tools/resume_trials.py [--trials 20] [--steps 24] [--interval 8]
        [--seed 0] [--folder DIR]

Each trial trains a copy of a small model folder with the real `solve.py
--cpu`, stops it one of three ways, then runs `solve.py --resume` to the end:
  stop    --max-iter at a random iteration (inside a test interval or on one)
  sigint  Ctrl-C (SIGINT) at a random moment: solve.py snapshots, then exits
  sigkill kill -9 at a random moment: the latest complete snapshot survives
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

KINDS = ('stop', 'sigint', 'sigkill')


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


def interrupt(kind, folder, common, window, rng):
    """Start training and send the signal at a random moment of `window`
    (seconds: start-up over, training not yet done); a run that ended first
    is started again with an earlier moment."""
    for _ in range(5):
        shutil.rmtree(os.path.join(folder, 'snapshot'), ignore_errors=True)
        proc = solve(folder, *common, wait=False)
        time.sleep(rng.uniform(*window))
        proc.send_signal(signal.SIGINT if kind == 'sigint' else signal.SIGKILL)
        proc.out, proc.err = proc.communicate()
        if proc.returncode != 0:
            break
        window = (window[0] * 0.8, window[0])
    # 130: Ctrl-C while training; 1 or -SIGINT: before training began (nothing written)
    expected = (130, 1, -signal.SIGINT) if kind == 'sigint' else (-signal.SIGKILL,)
    assert proc.returncode in expected, (proc.returncode, proc.err)
    if proc.returncode == 130:  # interrupted while training: one line naming the snapshot
        lines = [line for line in proc.err.splitlines() if line.strip()]
        assert lines[-1].startswith('solve.py: interrupted at iteration'), proc.err
        assert 'Traceback' not in proc.err, proc.err


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
    out(f'{"trial":>5}  {"kind":<8}{"stopped at":>11}{"max |diff|":>12}')
    for i in range(trials):
        kind = kinds[i % len(kinds)]
        stopped, weights = trial(kind, template, root, f'trial-{i}', steps, interval, window, rng)
        results.append((kind, stopped, compare(expected, weights)))
        out(f'{i:>5}  {kind:<8}{stopped:>11}{results[-1][2]:>12.3g}')
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
