"""Progress bar, stats.jsonl and TensorBoard for a training run.

Stats arrive as dicts of detached tensors; they are turned into numbers here,
on logging steps only, so the training loop itself never waits for the device.

A run resumed at step k continues one record: stats.jsonl loses its lines after
k and TensorBoard hides its points after k (purge_step), so no step appears twice.
"""
import json
import os
import time
import warnings

from tqdm import tqdm

from core.utils.fileio import atomic_write_text


def _tensorboard_writer(log_dir, start_step):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:   # tensorboard is optional for training itself
        warnings.warn('tensorboard is not installed; scalars go to stats.jsonl only')
        return None
    # Points of steps > start_step were logged by the run that is being resumed: hide them.
    return SummaryWriter(log_dir=log_dir, purge_step=start_step + 1)


def _logged_step(line):
    """The step of one stats.jsonl line, or None for a line that is not a complete record."""
    try:
        record = json.loads(line)
    except ValueError:   # e.g. the last line of a run killed while writing it
        return None
    step = record.get('step') if isinstance(record, dict) else None
    return step if isinstance(step, int) else None


def truncate_stats(path, start_step):
    """Drop the lines of stats.jsonl after start_step (and incomplete ones); returns how many were dropped.

    The file is rewritten (atomically) only when that changes it.
    """
    if not os.path.isfile(path):
        return 0
    with open(path) as f:
        lines = f.read().splitlines(keepends=True)
    kept = []
    for line in lines:
        step = _logged_step(line)
        if step is not None and step <= start_step:
            kept.append(line if line.endswith('\n') else line + '\n')   # appending must start a new line
    if kept != lines:
        atomic_write_text(path, ''.join(kept))
    return len(lines) - len(kept)


def format_elapsed(seconds):
    """H:MM:SS."""
    seconds = int(seconds)
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


class RunLogger:
    """One run's logs in checkpoint_dir: stats.jsonl, tensorboard/, and a tqdm bar with ETA."""

    def __init__(self, run_dir, start_step, total_iters, tensorboard=True):
        os.makedirs(run_dir, exist_ok=True)
        self.jsonl_path = os.path.join(run_dir, 'stats.jsonl')
        dropped = truncate_stats(self.jsonl_path, start_step)
        if dropped:
            print(f'train: resuming at step {start_step}: dropped {dropped} line(s) of {self.jsonl_path} '
                  f'logged after it (those steps are trained and logged again)')
        self.writer = _tensorboard_writer(os.path.join(run_dir, 'tensorboard'), start_step) if tensorboard else None
        self.bar = tqdm(total=total_iters, initial=start_step, unit='it', dynamic_ncols=True,
                        desc='train', smoothing=0.1)
        self.start = time.time()

    def advance(self):
        self.bar.update(1)

    def log(self, step, stats):
        """Write the named values of `step` (1-based, as in file names) everywhere."""
        values = {k: float(v) for k, v in stats.items()}
        elapsed = time.time() - self.start
        with open(self.jsonl_path, 'a') as f:
            f.write(json.dumps({'step': step, 'elapsed_s': round(elapsed, 3), **values}) + '\n')
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)
        line = ' '.join(f'{k}: [{v:.4f}]' for k, v in values.items())
        self.bar.write(f'Elapsed time [{format_elapsed(elapsed)}], Iteration [{step}/{self.bar.total}], {line}')

    def images(self, step, grids):
        """Debug grids ({name: (3, H, W) in [0, 1]}) to TensorBoard."""
        if self.writer is not None:
            for name, grid in grids.items():
                self.writer.add_image(f'samples/{name}', grid, step)

    def close(self):
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
