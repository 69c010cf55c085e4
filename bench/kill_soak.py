"""kill -9 soak: a run killed many times at random moments and resumed each time ends bit-identical to an
uninterrupted run.

    python bench/kill_soak.py --kills 20 --iters 40

Trains a tiny model on synthetic 32 px data twice in --out: `reference` uninterrupted, `soaked` started
again with --resume_iter latest after every SIGKILL (at random moments of start-up, steps and saves:
see kill_once), then one last time to finish. Prints the number of
kills, the steps each life reached, and whether every tensor of the final checkpoints is equal.
Exit status 0 only if they are.
"""
import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from core.checkpoint import KINDS, ckpt_path, complete_steps, named_tensors  # noqa: E402
from core.data.synthetic import make_dataset  # noqa: E402
from core.utils.errors import UserError, run_cli  # noqa: E402
from core.utils.fileio import safe_load  # noqa: E402
from core.utils.runlock import LOCK_NAME  # noqa: E402

ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}


def train_flags(data, run, iters):
    """A tiny StarGAN v2 + SRC/hDCE run that saves every step (so kills land in saves too)."""
    return ['--mode', 'train', '--img_size', '32', '--num_domains', '4', '--base_dim', '8', '--max_conv_dim', '16',
            '--hidden_dim', '32', '--style_dim', '16', '--latent_dim', '8', '--batch_size', '2',
            '--val_batch_size', '3', '--num_workers', '0', '--lambda_src', '0.1', '--lambda_dce', '1', '--use_hard',
            '--use_curriculum', '--n_patch', '16', '--patch_dim', '16', '--total_iters', str(iters),
            '--ds_iter', str(iters), '--print_every', '1', '--sample_every', '0', '--save_every', '1',
            '--eval_every', '0', '--seed', '3', '--train_img_dir', os.path.join(data, 'train'),
            '--val_img_dir', os.path.join(data, 'val'), '--checkpoint_dir', os.path.join(run, 'checkpoints')]


def launch(flags):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, 'main.py'), *flags], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def holder(lock):
    """The PID written in a lock file, or None."""
    try:
        with open(lock) as f:
            words = f.read().split()
    except OSError:
        return None
    return int(words[0]) if words else None


def logged_steps(run):
    """How many lines stats.jsonl holds (a life's progress shows there first)."""
    try:
        with open(os.path.join(run, 'checkpoints', 'stats.jsonl')) as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def kill_once(flags, run, rng):
    """Start a life and SIGKILL it at a random moment; False if it finished first.

    A third of the kills land in start-up and loading (0-1 s after the life holds the lock), the
    others 0-2.5 s after it logged its first step, in later steps and saves.
    """
    lock, life = os.path.join(run, 'checkpoints', LOCK_NAME), launch(flags)
    while holder(lock) != life.pid and life.poll() is None:   # the file of a killed life stays: wait for ours
        time.sleep(0.01)
    if rng.random() >= 1 / 3:
        before = logged_steps(run)
        while logged_steps(run) == before and life.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 2.5))
    else:
        time.sleep(rng.uniform(0.0, 1.0))
    if life.poll() is not None:
        return False
    life.send_signal(signal.SIGKILL)
    life.wait()
    return True


def finish(flags):
    life = launch(flags)
    _, err = life.communicate()
    if life.returncode != 0:
        raise UserError(f'the run did not finish: {err.strip().splitlines()[-1:]}')


def differing_tensors(run_a, run_b, step):
    """Names of the tensors of `step` that differ between two runs (all three files)."""
    bad = []
    for kind in KINDS:
        a = dict(named_tensors(safe_load(ckpt_path(os.path.join(run_a, 'checkpoints'), step, kind))))
        b = dict(named_tensors(safe_load(ckpt_path(os.path.join(run_b, 'checkpoints'), step, kind))))
        bad += [f'{kind}/{name}' for name in a.keys() | b.keys()
                if name not in a or name not in b or not torch.equal(a[name], b[name])]
    return bad


def run(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--kills', type=int, default=20)
    p.add_argument('--iters', type=int, default=40)
    p.add_argument('--out', default='expr/kill_soak')
    p.add_argument('--seed', type=int, default=0, help='seed of the kill times')
    args = p.parse_args(argv)
    data = os.path.join(args.out, 'data')
    make_dataset('seasons', data, num_train=6, num_val=3, img_size=32, seed=1)
    reference, soaked = os.path.join(args.out, 'reference'), os.path.join(args.out, 'soaked')
    if not complete_steps(os.path.join(reference, 'checkpoints'))[-1:] == [args.iters]:
        finish(train_flags(data, reference, args.iters))
    shutil.rmtree(soaked, ignore_errors=True)
    flags = train_flags(data, soaked, args.iters) + ['--resume_iter', 'latest']
    rng, kills, reached = random.Random(args.seed), 0, []
    start = time.perf_counter()
    while kills < args.kills and kill_once(flags, soaked, rng):
        kills += 1
        reached.append((complete_steps(os.path.join(soaked, 'checkpoints')) or [0])[-1])
    finish(flags)
    bad = differing_tensors(reference, soaked, args.iters)
    print(f'kill_soak: {kills} kills in {time.perf_counter() - start:.0f} s; latest complete step after each: '
          f'{reached}; step {args.iters} of the soaked run '
          + ('equals the uninterrupted run bit for bit' if not bad else f'differs in {len(bad)} tensors: {bad[:5]}'))
    return 0 if not bad else 1


def main(argv=None):
    return run_cli(lambda: run(argv))


if __name__ == '__main__':
    sys.exit(main())
