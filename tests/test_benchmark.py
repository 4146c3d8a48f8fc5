"""tools/benchmark.py on a narrow model folder: it runs the real nets and
reports figures that hang together (it asserts nothing itself)."""
import importlib.util
import json
import os

import pytest

import openvino_engine
from helpers import write_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def benchmark():
    spec = importlib.util.spec_from_file_location('benchmark', os.path.join(REPO, 'tools', 'benchmark.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_reports_speed_and_memory(benchmark, tmp_path, capsys):
    softmax = write_model(tmp_path / 'tiny-fcn8s', stride=8)
    sigmoid = write_model(tmp_path / 'tiny-fcn8s-sigmoid', stride=8, loss='sigmoid')
    out = tmp_path / 'bench.json'
    benchmark.main(['--models', softmax, sigmoid, '--sizes', '37', '90x61', '--train-sizes', '37',
                    '--iters', '1', '--no-stock', '--json', str(out)])
    report = json.loads(out.read_text())
    results = report['results']
    exported = {}
    for r in results:
        if r['build'] != 'project':
            exported.setdefault(r['build'], []).append(r)
    results = [r for r in results if r['build'] == 'project']
    assert [(r['model'], r['size'], r['mode']) for r in results] == [
        ('tiny-fcn8s', '37x37', 'forward'), ('tiny-fcn8s', '90x61', 'forward'),
        ('tiny-fcn8s-sigmoid', '37x37', 'forward'), ('tiny-fcn8s-sigmoid', '90x61', 'forward'),
        ('tiny-fcn8s', '37x37', 'train'), ('tiny-fcn8s-sigmoid', '37x37', 'train')]
    # ONNX Runtime and OpenVINO (its default precision here, and f32) beside each Caffe forward
    default = f'ov-{openvino_engine.default_precision()}'
    assert sorted(exported) == sorted({'onnxrt', default, 'ov-f32'})
    for build, rows in exported.items():
        assert [(r['model'], r['size']) for r in rows] == [(r['model'], r['size']) for r in results[:4]]
        for r in rows:
            assert 0 < r['best_ms'] <= r['mean_ms'] and r['first_ms'] > 0 and r['peak_rss_mib'] > 0
            assert r['load_ms'] > 0
            assert build == 'onnxrt' or r['precision'] == build[len('ov-'):]
    # exported once per model, checked; the load average before and after
    assert sorted(report['exports']) == ['tiny-fcn8s', 'tiny-fcn8s-sigmoid']
    assert all(e['export_ms'] > 0 and e['optimize_ms'] > 0 and e['onnx_mib'] > 0
               for e in report['exports'].values())
    assert len(report['load_average']) == 2
    for r in results:
        assert r['build'] == 'project' and r['patched']
        assert 0 < r['best_ms'] <= r['mean_ms'] and r['first_ms'] > 0
        # each measurement's own process: its peak holds the blobs and more
        assert r['peak_rss_mib'] > r['blobs_mib'] + r['params_mib']
        assert 0 < r['workspace_mib'] <= 128
    small, large = results[:2]
    assert small['params_mib'] == large['params_mib'] > 0
    assert large['blobs_mib'] > small['blobs_mib']
    assert results[4]['blobs_mib'] > 2 * small['blobs_mib'] * 0.99  # training: data and diffs
    printed = capsys.readouterr().out
    assert 'peak RSS GiB' in printed and printed.count('tiny-fcn8s') >= 10 and 'onnxrt' in printed
    assert 'load average before: ' in printed and ', after: ' in printed and 'exported and checked in' in printed
    assert report['device'].startswith('CPU')


def test_benchmark_compares_with_another_build(benchmark, tmp_path):
    """--stock runs the same measurement with the Caffe of another build's
    dist/ (here the installed build's own, the one at hand in every checkout)."""
    import caffe
    folder = write_model(tmp_path / 'tiny-fcn8s', stride=8)
    with open(os.path.join(os.path.dirname(caffe.__file__), '.build-cache')) as f:
        dist = os.path.join(f.read().strip(), 'dist')
    results = benchmark.main(['--models', folder, '--sizes', '33', '--train-sizes', '--iters', '1',
                              '--stock', dist, '--no-onnx', '--no-openvino'])
    assert [r['build'] for r in results] == ['project', 'stock']
    assert results[1]['caffe'] == os.path.join(dist, 'python', 'caffe')
    assert results[0]['caffe'] == os.path.dirname(caffe.__file__)
    assert all(r['mean_ms'] > 0 for r in results)


def test_sizes_are_checked(benchmark):
    assert benchmark.parse_size('1000x750') == (1000, 750) and benchmark.parse_size('64') == (64, 64)
    with pytest.raises(SystemExit):
        benchmark.main(['--sizes', '10x'])
