"""Training that fails safe: exact resume from any interruption, snapshots
that are verified before use, disk full, Ctrl-C, and a first run without
data. Runs the real solve.py of a small model folder in subprocesses."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tools'))
import resume_trials  # noqa: E402  (tools/ is not a package)


def no_crash(output):
    """No Python traceback, no Caffe abort."""
    assert 'Traceback' not in output and 'Check failed' not in output and '*** ' not in output, output


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('resume'))
    return root, resume_trials.make_workspace(root)


@pytest.fixture(scope='module')
def trained_once(workspace):
    """The model trained to iteration 8 (snapshots at 4 and 8)."""
    root, template = workspace
    folder = resume_trials.fresh_copy(template, root, 'trained')
    run = resume_trials.solve(folder, '--max-iter', 8, '--test-interval', 4)
    assert run.returncode == 0, run.err
    return folder


@pytest.fixture
def trained(trained_once, tmp_path):
    """A copy of it for one test (beside the data, as the original)."""
    folder = os.path.join(os.path.dirname(trained_once), f'trained-{tmp_path.name}')
    shutil.copytree(trained_once, folder)
    return folder


def test_every_kind_of_interruption_resumes_to_identical_weights(workspace):
    """Early stop inside an interval, Ctrl-C and kill -9 at random moments,
    SIGTERM and Ctrl-C sent two or three times, with two images a step
    (loss sampling) and dropout: bit for bit."""
    root, _ = workspace
    kinds = resume_trials.KINDS
    results = resume_trials.run(len(kinds), steps=16, interval=8, seed=3,
                                root=os.path.join(root, 'trials'), out=lambda line: None)
    assert [kind for kind, _, _ in results] == list(kinds)
    assert [diff for _, _, diff in results] == [0.0] * len(kinds)


def test_ctrl_c_snapshots_and_ends_in_one_line(workspace):
    root, template = workspace
    folder = resume_trials.fresh_copy(template, root, 'ctrl-c')
    proc = resume_trials.solve(folder, '--max-iter', 100000, '--test-interval', 1000, wait=False)
    log = os.path.join(folder, 'snapshot', 'log.jsonl')
    deadline = time.time() + 120
    while not os.path.exists(log) and time.time() < deadline:  # the first 20 iterations logged
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    no_crash(err)
    last = [line for line in err.splitlines() if line.strip()][-1]
    latest = training.Snapshots(os.path.join(folder, 'snapshot')).latest(full=True)
    assert latest['iteration'] >= 20
    assert last == (f'solve.py: interrupted (SIGINT): at iteration {latest["iteration"]}: snapshot '
                    f'{latest["solverstate"]}; continue with --resume')


def test_corrupted_snapshot_is_named_with_the_older_ones(trained):
    snapshots = training.Snapshots(os.path.join(trained, 'snapshot'))
    latest = snapshots.latest()
    with open(latest['caffemodel'], 'r+b') as f:  # one byte changed, same size
        f.seek(os.path.getsize(latest['caffemodel']) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    run = resume_trials.solve(trained, '--max-iter', 12, '--resume')
    assert run.returncode == 1
    no_crash(run.err)
    older = os.path.join(trained, 'snapshot', 'train_iter_4.solverstate')
    assert run.err.strip().splitlines() == [
        f'solve.py: error: snapshot {latest["caffemodel"]} does not match its recorded sha256 (corrupted); '
        f'other complete snapshots: {older} (resume one with --resume FILE)']
    # the older snapshot resumes, given as typed from the parent folder
    parent = os.path.dirname(trained)
    env = dict(os.environ, OPENBLAS_NUM_THREADS='1')
    rel = os.path.relpath(older, parent)
    ok = subprocess.run([sys.executable, os.path.join(os.path.basename(trained), 'solve.py'), '--cpu',
                         '--max-iter', '12', '--test-interval', '4', '--resume', rel],
                        cwd=parent, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert snapshots.latest(full=True)['iteration'] == 12


def test_truncated_snapshot_is_named_with_the_older_ones(trained):
    latest = training.Snapshots(os.path.join(trained, 'snapshot')).latest()
    size = os.path.getsize(latest['solverstate'])
    with open(latest['solverstate'], 'r+b') as f:  # a copy cut short
        f.truncate(size // 2)
    run = resume_trials.solve(trained, '--max-iter', 12, '--resume')
    assert run.returncode == 1
    no_crash(run.err)
    older = os.path.join(trained, 'snapshot', 'train_iter_4.solverstate')
    assert run.err.strip().splitlines() == [
        f'solve.py: error: snapshot {latest["solverstate"]} has {size // 2} bytes, {size} recorded; '
        f'other complete snapshots: {older} (resume one with --resume FILE)']


@pytest.mark.parametrize('content, problem', [
    ('', 'JSONDecodeError'), ('{"iteration": 8', 'JSONDecodeError'),
    ('{"iteration": 8}', "KeyError: 'solverstate'")])
def test_unreadable_latest_json_is_named(trained, content, problem):
    pointer = os.path.join(trained, 'snapshot', 'latest.json')
    with open(pointer, 'w') as f:
        f.write(content)
    run = resume_trials.solve(trained, '--max-iter', 12, '--resume')
    assert run.returncode == 1
    no_crash(run.err)
    (line,) = run.err.strip().splitlines()
    assert line.startswith(f'solve.py: error: {pointer}: not a readable snapshot manifest ({problem}')
    assert 'train_iter_8.solverstate' in line  # the complete snapshots it could use


def test_resume_given_a_caffemodel_names_the_solverstate(trained):
    caffemodel = os.path.join(trained, 'snapshot', 'train_iter_8.caffemodel')
    run = resume_trials.solve(trained, '--resume', caffemodel)
    assert run.returncode == 1
    no_crash(run.err)
    assert run.err.strip() == (f'solve.py: error: --resume {caffemodel}: not a solverstate; resume with the '
                               f"snapshot's solverstate {caffemodel[:-len('caffemodel')]}solverstate")


@pytest.fixture
def small_disk(trained):
    """The snapshot folder on a filesystem of its own, filled up after the
    existing snapshots but for 64 KiB (needs root, as tmpfs mounts do)."""
    folder = os.path.join(trained, 'snapshot')
    kept = folder + '.kept'
    os.rename(folder, kept)
    os.makedirs(folder)
    size = sum(os.path.getsize(os.path.join(kept, name)) for name in os.listdir(kept)) + (1 << 20)
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', folder],
                      capture_output=True).returncode != 0:
        os.rmdir(folder)
        os.rename(kept, folder)
        pytest.skip('mounting a small filesystem needs root')
    try:
        for name in os.listdir(kept):
            shutil.copy2(os.path.join(kept, name), folder)
        free = shutil.disk_usage(folder).free
        with open(os.path.join(folder, 'ballast'), 'wb') as f:
            f.write(b'\0' * (free - 64 * 1024))
        yield folder
    finally:
        subprocess.run(['umount', folder])
        shutil.rmtree(kept)


def test_disk_full_while_snapshotting_keeps_the_previous_snapshot(trained, small_disk):
    before = sorted(os.listdir(small_disk))
    run = resume_trials.solve(trained, '--max-iter', 12, '--test-interval', 4, '--resume')
    assert run.returncode == 1
    no_crash(run.err)
    assert len(run.err.strip().splitlines()) == 1, run.err
    line = run.err.strip()
    assert line.startswith('solve.py: error: cannot ') and small_disk in line
    assert 'No space left on device' in line or 'disk full' in line
    assert sorted(os.listdir(small_disk)) == before  # no temp files, nothing half-written
    latest = training.Snapshots(small_disk).latest(full=True)
    assert latest['iteration'] == 8


def test_first_run_without_data_says_what_to_fetch_and_leaves_nothing(tmp_path):
    folder = tmp_path / 'voc-fcn32s'
    shutil.copytree(os.path.join(REPO, 'voc-fcn32s'), folder)
    before = sorted(os.listdir(folder))
    run = subprocess.run([sys.executable, 'solve.py', '--cpu'], cwd=folder, capture_output=True, text=True)
    assert run.returncode == 1
    no_crash(run.stdout + run.stderr)
    lines = (run.stdout + run.stderr).strip().splitlines()
    assert len(lines) <= 10
    assert 'sbdd/dataset/train.txt' in lines[-1] and '`python -m fetch data sbd`' in lines[-1]
    assert sorted(os.listdir(folder)) == before
