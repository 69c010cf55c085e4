"""One writer per run folder: the lock of --checkpoint_dir (core/utils/runlock.py), between real processes.

The training processes are real `python main.py --mode train` runs of tiny networks; a run that
must keep going while the test looks at it gets a --total_iters it never reaches and is killed.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, tiny_flags
from core.checkpoint import KINDS, ckpt_path, complete_steps, stored_config
from core.utils.fileio import safe_load
from core.utils.runlock import LOCK_NAME, RunLock, RunLocked
from main import main

ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}


def start_training(*flags):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, 'main.py'), *flags], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout=240, what='the condition'):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f'timed out waiting for {what}'
        time.sleep(0.1)


def error_lines(stderr):
    lines = [line for line in stderr.splitlines() if line.startswith('error: ')]
    assert len(lines) == 1 and 'Traceback' not in stderr, stderr[-3000:]
    return lines[0]


# ----------------------------------------------------------------------------------------------
# The lock itself (one process, separate open files: flock sees them as two holders)
# ----------------------------------------------------------------------------------------------

def test_a_held_lock_names_its_process_and_is_removed_on_release(tmp_path):
    folder = tmp_path / 'run'
    with RunLock(str(folder)) as lock:
        assert (folder / LOCK_NAME).read_text().split()[0] == str(os.getpid())
        with pytest.raises(RunLocked) as err:
            RunLock(str(folder)).acquire()
        assert str(err.value).startswith(f'{folder} is in use: process {os.getpid()} on ')
        assert '--checkpoint_dir' in str(err.value)
        assert lock.fd is not None
    assert not (folder / LOCK_NAME).exists()
    RunLock(str(folder)).acquire().release()   # free again


def test_a_stale_lock_file_is_taken_over(tmp_path):
    """A file left by a killed run holds a dead PID but no lock: the next run takes it."""
    (tmp_path / LOCK_NAME).write_text('999999 elsewhere\n')
    with RunLock(str(tmp_path)):
        assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())


def test_training_on_a_locked_folder_stops_before_any_work(seasons32, tmp_path, capsys):
    flags = tiny_flags(seasons32, tmp_path, '--sample_every', '0')
    with RunLock(str(tmp_path / 'checkpoints')):
        assert main(flags) == 1
        message = error_lines(capsys.readouterr().err)
    assert f'{tmp_path / "checkpoints"} is in use: process {os.getpid()}' in message
    assert sorted(os.listdir(tmp_path / 'checkpoints')) == []   # no config.json, no log, no checkpoint
    assert main(flags) == 0 and not (tmp_path / 'checkpoints' / LOCK_NAME).exists()


# ----------------------------------------------------------------------------------------------
# Real processes
# ----------------------------------------------------------------------------------------------

def test_two_runs_started_together_on_one_folder_leave_one_run(seasons32, tmp_path):
    """The probe's case: the same folder, the second run with another seed, started at once. One trains,
    the other stops with one line naming the first; every file and log line belongs to the winner."""
    runs = [start_training(*tiny_flags(seasons32, tmp_path, '--sample_every', '0', '--print_every', '1',
                                       '--save_every', '1', '--seed', str(seed))) for seed in (3, 4)]
    results = [(run, *run.communicate(timeout=600)) for run in runs]
    statuses = sorted(run.returncode for run, _, _ in results)
    assert statuses == [0, 1], [err[-2000:] for _, _, err in results]
    (winner, _, _), = [r for r in results if r[0].returncode == 0]
    (loser, out, err), = [r for r in results if r[0].returncode == 1]
    message = error_lines(err)
    assert f'{tmp_path / "checkpoints"} is in use: process {winner.pid} on ' in message
    assert 'train: 1 process' not in out   # it stopped before any work
    seed = 3 if winner is runs[0] else 4
    folder = str(tmp_path / 'checkpoints')
    assert complete_steps(folder) == [1, 2, 3, 4]
    for step in (1, 2, 3, 4):
        for kind in KINDS:
            assert stored_config(safe_load(ckpt_path(folder, step, kind)))['seed'] == seed
    steps = [json.loads(line)['step'] for line in (tmp_path / 'checkpoints' / 'stats.jsonl').read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert not (tmp_path / 'checkpoints' / LOCK_NAME).exists()


def test_a_kill_9_releases_the_lock(seasons32, tmp_path, capsys):
    flags = tiny_flags(seasons32, tmp_path, '--sample_every', '0', '--print_every', '1', '--save_every', '2',
                       '--total_iters', '100000', '--ds_iter', '100000')
    run = start_training(*flags)
    try:
        wait_for(lambda: complete_steps(str(tmp_path / 'checkpoints')), what='the first checkpoint')
        assert (tmp_path / 'checkpoints' / LOCK_NAME).read_text().split()[0] == str(run.pid)
        resume = flags + ['--resume_iter', 'latest']
        assert main(resume) == 1   # a resume while it runs is refused
        assert f'is in use: process {run.pid}' in error_lines(capsys.readouterr().err)
    finally:
        run.send_signal(signal.SIGKILL)
        run.communicate(timeout=60)
    assert run.returncode == -signal.SIGKILL
    assert (tmp_path / 'checkpoints' / LOCK_NAME).exists()   # left behind, but nobody holds it
    latest = complete_steps(str(tmp_path / 'checkpoints'))[-1]
    done = list(flags) + ['--total_iters', str(latest)]   # the last --total_iters wins: nothing left to do
    assert main(done + ['--resume_iter', 'latest']) == 0
    assert f'nothing to do: resuming at step {latest}' in capsys.readouterr().out
    assert not (tmp_path / 'checkpoints' / LOCK_NAME).exists()


def test_under_torchrun_the_job_holds_the_lock_and_sigterm_stops_every_process(seasons32, tmp_path):
    """Rank 0 takes the lock for the job: on a locked folder both processes stop with the message; a
    running job stopped by SIGTERM to torchrun (which passes it on) ends with one 'terminated' per
    process, exit 143 each, no temporary file and the lock released."""
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           os.path.join(ROOT, 'main.py'),
           *tiny_flags(seasons32, tmp_path, '--batch_size', '4', '--sample_every', '0', '--print_every', '1',
                       '--save_every', '1', '--total_iters', '100000', '--ds_iter', '100000')]
    with RunLock(str(tmp_path / 'checkpoints')):
        out = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode != 0
    assert out.stderr.count(f'is in use: process {os.getpid()} on ') == 2, out.stderr[-3000:]   # one per process
    assert os.listdir(tmp_path / 'checkpoints') == []

    job = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: complete_steps(str(tmp_path / 'checkpoints')), what='the first checkpoint')
    finally:
        job.send_signal(signal.SIGTERM)
        _, err = job.communicate(timeout=300)
    workers = [line for line in err.splitlines() if line.strip() == 'terminated']
    assert len(workers) == 2, err[-3000:]
    assert 'exitcode  : 143' in err or 'got signal: 15' in err   # torchrun's own report of the stop
    assert [n for n in os.listdir(tmp_path / 'checkpoints') if n.endswith('.tmp') or n == LOCK_NAME] == []
