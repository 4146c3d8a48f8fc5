"""Your own data, as docs/nets.md walks it: a data folder checked by
`python -m nets check-data`, model folders written by `python -m nets new`
outside the repository, trained by their `python solve.py` with a piped
log; and what keeps a user's folder from disturbing the papers' models."""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import nets
from common import datasets, locations
from nets.model import options_table

from helpers import OWN_CLASSES, write_own_data, write_voc

CLASSES = ','.join(OWN_CLASSES)


def run(*args, cwd):
    """A command of the project (python -m ..., python solve.py) in a real
    process, its output piped (not a terminal)."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, OPENBLAS_NUM_THREADS='1'))


def test_check_data_names_each_problem(tmp_path):
    data = tmp_path / 'mydata'
    splits = write_own_data(data, train=8, val=2)
    clean = run('-m', 'nets', 'check-data', data, '--classes', CLASSES, cwd=tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert 'train: 8 images, val: 2 images' in clean.stdout  # the CRLF, BOM, blank-line split file
    assert 'no problems found' in clean.stdout
    assert re.search(r'^\s+2 blue\s+\d+', clean.stdout, re.M) and 'sizes (width x height)' in clean.stdout

    train = splits['train']
    os.remove(data / 'labels' / f'{train[0]}.png')                          # a missing label
    os.remove(data / 'images' / f'{train[1]}.jpg')                          # a missing image
    bad = np.zeros((40, 40), np.uint8)
    bad[5:9, 5:9] = 7
    Image.fromarray(bad, 'L').save(data / 'labels' / f'{train[2]}.png')      # 7: no class (3 classes)
    with Image.open(data / 'images' / f'{train[3]}.jpg') as im:
        w, h = im.size
    Image.fromarray(np.zeros((h + 3, w, ), np.uint8), 'L').save(data / 'labels' / f'{train[3]}.png')
    (data / 'images' / f'{train[4]}.jpg').write_bytes(b'\xff\xd8\xff\xe0 not a JPEG')  # unreadable
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(data / 'images' / f'{train[5]}.png')  # two images
    with open(data / 'val.txt', 'a') as f:
        f.write('ghost\n')                                                   # listed, no files
    out = run('-m', 'nets', 'check-data', 'mydata', '--classes', CLASSES, cwd=tmp_path)
    assert out.returncode == 1
    problems = out.stdout.splitlines()
    expected = {
        f'mydata/labels/{train[0]}.png: missing ({train[0]} is listed in mydata/train.txt)',
        f'mydata/images/{train[1]}.<jpg|jpeg|png|bmp|ppm|tif|tiff|gif|webp>: missing',
        f'mydata/labels/{train[2]}.png: label values 7 outside 0..2 (and 255 void) for the 3 classes',
        f'mydata/labels/{train[3]}.png: {w}x{h + 3}, but its image mydata/images/{train[3]}.jpg is {w}x{h}',
        f'mydata/images/{train[4]}.jpg: cannot read image',
        f'mydata/images/{train[5]}.jpg: 2 images for {train[5]}',
        'mydata/images/ghost.<jpg', 'mydata/labels/ghost.png: missing (ghost is listed in mydata/val.txt)',
    }
    for start in expected:
        assert any(line.startswith(start) for line in problems), (start, out.stdout)
    assert problems[-1] == '9 problems (each line above names its file)'


def test_check_data_reads_the_voc_layout(tmp_path):
    write_voc(str(tmp_path / 'VOC'), {'train': ['a', 'b'], 'val': ['c']})
    out = run('-m', 'nets', 'check-data', tmp_path / 'VOC', '--classes', ','.join(datasets.VOC_CLASSES),
              cwd=tmp_path)
    assert out.returncode == 0, out.stdout
    assert 'PASCAL VOC layout' in out.stdout and 'train: 2 images, val: 1 images' in out.stdout


def solve(folder, *args):
    out = run('solve.py', '--cpu', *args, cwd=folder)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.splitlines()


def test_scaffolded_32s_then_16s_train_outside_the_repository(tmp_path):
    """`python -m nets new` in a folder outside the repository (the data
    given relative to it), `python solve.py` with its output piped: the
    log's header, progress, percent scorings and closing line; the 16s
    starts from the 32s's latest weights."""
    assert not str(tmp_path).startswith(locations.REPO_DIR)
    write_own_data(tmp_path / 'mydata', train=6, val=2)
    new = run('-m', 'nets', 'new', 'my-fcn32s', '--data', 'mydata', '--classes', CLASSES,
              '--trunk-width', 1 / 32, '--max-iter', 40, cwd=tmp_path)
    assert new.returncode == 0, new.stderr
    assert 'cd my-fcn32s && python solve.py' in new.stdout
    folder32 = tmp_path / 'my-fcn32s'
    assert {'net.py', 'solve.py', 'solver.prototxt', 'train.prototxt', 'val.prototxt',
            'deploy.prototxt'} <= set(os.listdir(folder32))
    model = nets.load(str(folder32))
    assert model.source.data_dir == '../mydata' and model.source.val_size == 2
    assert model.source.heads[0].classes == OWN_CLASSES and model.init == ()

    log = solve(folder32)
    weights32 = str(folder32 / 'snapshot' / 'train_iter_40.caffemodel')
    assert re.fullmatch(r'my-fcn32s: FCN-32s, vgg16 x0.03125, 3 classes; starts from scratch \(msra '
                        r'fillers\); CPU; iterations 0 to 40, scoring 2 val images and snapshotting '
                        r'every 10; log .*/my-fcn32s/snapshot/log.jsonl', log[0]), log[0]
    progress = [line for line in log if re.fullmatch(
        r'my-fcn32s: iteration \d+/40, loss [\d.e+-]+, lr [\d.e+-]+, [\d.e+]+ it/s, \d+ s left', line)]
    assert progress, log
    scorings = [line for line in log if 'val images (%)' in line]
    assert len(scorings) == 4
    assert re.fullmatch(r'my-fcn32s: iteration 40, score on 2 val images \(%\): pixel acc. \d+\.\d\d, '
                        r'mean acc. \d+\.\d\d, mean IU \d+\.\d\d, f.w. IU \d+\.\d\d, loss [\d.]+',
                        scorings[-1]), scorings[-1]
    assert not any(line.startswith('>>>') or '\r' in line for line in log)
    assert re.fullmatch(rf'my-fcn32s: done at iteration 40 in \d+ s: weights {re.escape(weights32)}; '
                        r'report .*report.html', log[-1]), log[-1]

    new = run('-m', 'nets', 'new', 'my-fcn16s', '--stride', 16, '--from', 'my-fcn32s', '--max-iter', 4,
              cwd=tmp_path)
    assert new.returncode == 0, new.stderr
    model16 = nets.load(str(tmp_path / 'my-fcn16s'))
    assert model16.init == ('my-fcn32s',) and model16.trunk_width == 1 / 32
    assert model16.source.data_dir == '../mydata' and model16.stride == 16
    log = solve(tmp_path / 'my-fcn16s')
    assert f'; starts from {weights32}; ' in log[0]
    assert log[-1].startswith('my-fcn16s: done at iteration 4 ')

    # scored without --weights (its latest snapshot, as infer.py), then
    # segmented from Python as docs/nets.md shows
    weights16 = str(tmp_path / 'my-fcn16s' / 'snapshot' / 'train_iter_4.caffemodel')
    scored = run(os.path.join(locations.REPO_DIR, 'score.py'), '--model', 'my-fcn16s', cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    assert f'weights {weights16}' in scored.stdout and 'mean IU' in scored.stdout
    predicted = run('-c', 'import infer; r = infer.Segmenter("my-fcn16s").predict('
                          '"mydata/images/" + sorted(__import__("os").listdir("mydata/images"))[0]); '
                          'print(r.labels.shape, r.labels.dtype, ",".join(r.classes))', cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.splitlines()[-1].endswith(f'uint8 {CLASSES}')


def test_new_refuses_what_the_recipe_does_not_have(tmp_path):
    write_own_data(tmp_path / 'd', train=2, val=1)
    cases = [(['--stride', 16], '--stride 16 starts from a trained stride-32 model: give --from'),
             (['--trunk', 'googlenet', '--trunk-width', 0.5], '--trunk-width: only vgg16 scales'),
             (['--trunk', 'alexnet', '--stride', 8, '--from', 'd'], '--from d: '),
             ([], None)]
    for extra, message in cases:
        out = run('-m', 'nets', 'new', 'm', '--data', 'd', '--classes', 'a,b', *extra, cwd=tmp_path)
        if message is None:
            assert out.returncode == 0 and nets.load(str(tmp_path / 'm')).init == ('vgg16',)
            continue
        assert out.returncode == 1 and out.stderr.startswith(f'python -m nets new: error: {message}'), out.stderr
        assert len(out.stderr.splitlines()) == 1
    again = run('-m', 'nets', 'new', 'm', '--data', 'd', '--classes', 'a,b', cwd=tmp_path)
    assert again.returncode == 1 and 'already holds a model' in again.stderr


def test_a_trunk_without_the_skips_of_a_stride_says_which_exist():
    with pytest.raises(ValueError) as err:
        nets.Model(nets.VOC(), trunk='googlenet', stride=16, base_lr=1e-10, init=())
    assert str(err.value) == ("Model: no trunk 'googlenet' at stride 16; trunks and their strides: "
                              'vgg16 32/16/8, caffenet 32, googlenet 32')


def test_nets_help_names_the_command():
    out = run('-m', 'nets', '--help', cwd=locations.REPO_DIR)
    assert out.returncode == 0 and out.stdout.startswith('usage: python -m nets ')
    assert 'new FOLDER --data DATA --classes' in out.stdout and 'check-data' in out.stdout


def test_a_user_folder_at_the_root_leaves_the_papers_models_alone(tmp_path):
    """A folder of one's own beside the papers' at the repository root: the
    papers' models (the catalog's list) and `python -m nets --check` do not
    change."""
    papers = nets.model_names()
    folder = os.path.join(locations.REPO_DIR, f'zz-test-user-fcn32s-{os.getpid()}')
    write_own_data(tmp_path / 'd', train=2, val=1)
    try:
        out = run('-m', 'nets', 'new', folder, '--data', tmp_path / 'd', '--classes', 'a,b',
                  cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert nets.model_names() == papers and os.path.basename(folder) not in papers
        check = run('-m', 'nets', '--check', cwd=locations.REPO_DIR)
        assert check.returncode == 0 and check.stdout == ''
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_docs_list_every_model_option():
    """docs/nets.md's options table is options_table(), generated from the
    Model fields' docs: every field, its default, what it means."""
    with open(os.path.join(locations.REPO_DIR, 'docs', 'nets.md')) as f:
        text = f.read()
    table = options_table()
    assert table in text, 'regenerate the table: python -c "from nets.model import options_table; ' \
                          'print(options_table())"'
    documented = re.findall(r'^\| `(\w+)` \|', table, re.M)
    assert documented == [f for f in nets.Model.__dataclass_fields__ if f != 'folder']
