"""Evaluation in two processes (torchrun, gloo on the CPU) against one process.

The metric networks have random weights (tests/dist_eval_worker.py), the same
in every process. Each process generates whole batches of each task's sources
and of the real images, so every image goes through the networks in the same
batch as in one process and the gathered features are the single-process ones
in the same order: on the CPU the files come out bit for bit equal (measured).
The comparison allows a relative 1e-5, the float32 round-off of a feature
network whose kernels may differ between processes (another thread count or,
on a GPU, another cuDNN algorithm), far below anything a wrong shard, a lost
or doubled row, or a redrawn style would move (those change FID by percents).
"""
import filecmp
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, tiny_flags
from core.config import parse_config
from core.trainer import train
from dist_eval_worker import use_random_metrics
from main import main

WORKER = os.path.join(ROOT, 'tests', 'dist_eval_worker.py')
METRICS = 'fid,lpips,domain_acc,structure'
RTOL = 1e-5


def torchrun(argv):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', WORKER, *argv]
    out = subprocess.run(cmd, cwd=ROOT, env={**os.environ, 'OMP_NUM_THREADS': '1'}, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return out


def results(folder):
    """{file name: values} of the JSON files in `folder`."""
    return {name: json.load(open(os.path.join(folder, name))) for name in sorted(os.listdir(folder))
            if name.endswith('.json')}


def assert_same_results(single, multi):
    one, two = results(single), results(multi)
    assert one and list(two) == list(one)
    for name, values in one.items():
        assert list(two[name]) == list(values), name
        for key, value in values.items():
            expected = value if isinstance(value, (str, bool)) else pytest.approx(value, rel=RTOL, abs=1e-8)
            assert two[name][key] == expected, (name, key)


@pytest.fixture(scope='module')
def data(seasons32, tmp_path_factory):
    """Two domains of 3 val and 6 train images: with batches of 2, shards of 2 and 1 images (4 and 2 real)."""
    root = tmp_path_factory.mktemp('disteval')
    for split in ('train', 'val'):
        for name in ('autumn', 'winter'):
            shutil.copytree(seasons32 / split / name, root / 'data' / split / name)
    return root


def eval_flags(data, run, *extra):
    return tiny_flags(data / 'data', run, '--num_domains', '2', '--num_outs_per_domain', '2', '--sample_every', '0',
                      '--val_batch_size', '2', '--metrics', METRICS, *extra)


def test_mode_eval_in_two_processes_writes_the_single_process_files(data, monkeypatch):
    run = data / 'run'
    train(parse_config(eval_flags(data, run, '--total_iters', '2', '--save_every', '2')))
    argv = ['--mode', 'eval', '--resume_iter', 'latest', '--save_eval_images'] + eval_flags(data, run)[2:]
    use_random_metrics(monkeypatch.setattr)
    assert main(argv + ['--eval_dir', str(data / 'one'), '--fid_stats_dir', str(data / 'stats_one')]) == 0
    out = torchrun(argv + ['--eval_dir', str(data / 'two'), '--fid_stats_dir', str(data / 'stats')])
    assert_same_results(data / 'one', data / 'two')
    assert out.stdout.count('evaluation of step 2') == 1   # rank 0 alone prints
    # rank 0 wrote every image of both processes, under the single-process names, with the same pixels
    for mode in ('latent', 'reference'):
        for task in ('autumn2winter', 'winter2autumn'):
            one, two = data / 'one' / mode / task, data / 'two' / mode / task
            names = sorted(os.listdir(one))
            assert len(names) == 3 * 2 and sorted(os.listdir(two)) == names
            assert filecmp.cmpfiles(one, two, names, shallow=False)[0] == names
    # the real statistics and the domain classifier, computed by both processes, cached by rank 0
    assert sorted(os.listdir(data / 'stats')) == sorted(os.listdir(data / 'stats_one'))


def test_eval_every_in_two_processes_writes_and_logs_the_single_process_numbers(data, monkeypatch):
    """Two processes train and evaluate; one process evaluates the same checkpoint: the same files.

    (Training itself differs in round-off between one and two processes, tests/test_distributed.py,
    so the reference is the distributed run's own weights.) Batches of 3 val images: rank 1 has no
    source to translate and takes part in every gather with none; the real statistics come from the
    cache the previous test's distributed evaluation wrote, read by both processes.
    """
    run = data / 'train_two'
    argv = eval_flags(data, run, '--total_iters', '2', '--save_every', '2', '--eval_every', '2',
                      '--val_batch_size', '3', '--fid_stats_dir', str(data / 'stats'))
    out = torchrun(argv)
    assert 'real autumn' not in out.stderr   # a cache hit: no real image went through Inception
    use_random_metrics(monkeypatch.setattr)
    assert main(['--mode', 'eval', '--resume_iter', '2'] + argv[2:] + ['--eval_dir', str(data / 'every_one')]) == 0
    assert_same_results(data / 'every_one', run / 'eval')
    logged = [json.loads(line) for line in open(run / 'checkpoints' / 'stats.jsonl') if 'FID_latent/mean' in line]
    assert len(logged) == 1 and logged[0]['step'] == 2   # rank 0 alone logs
    assert logged[0]['LPIPS_reference/mean'] == pytest.approx(
        results(run / 'eval')['LPIPS_00002_reference.json']['LPIPS_reference/mean'], rel=RTOL)
