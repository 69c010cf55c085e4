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

from core.utils.fileio import WriteError, atomic_write_text


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


def _term_text(term, value, extras):
    """'hdce -1.621 (infonce 0.4914, gamma 1.98)': a loss term and its plug-in's extra stats."""
    text = term if value is None else f'{term} {value:.4g}'
    return text + (f' ({", ".join(extras)})' if extras else '')


def status_lines(step, total, elapsed, values):
    """The status block of a logging step: a header line, then one line per phase.

    Names 'D/latent/real' become 'real' on the D/latent line; a plug-in's extra stat
    'G/latent/hdce/gamma' follows its term in parentheses; shorter names (lambda_ds,
    metric means) join the header. Every line stays short enough not to wrap.
    """
    header = [f'Iteration [{step}/{total}]', f'elapsed {format_elapsed(elapsed)}']
    phases = {}   # phase -> term -> [value, [extras]]
    for name, value in values.items():
        parts = name.split('/')
        if len(parts) < 3:
            header.append(f'{name} {value:.4g}')
            continue
        entry = phases.setdefault('/'.join(parts[:2]), {}).setdefault(parts[2], [None, []])
        if len(parts) == 3:
            entry[0] = value
        else:
            entry[1].append(f'{"/".join(parts[3:])} {value:.4g}')
    width = max((len(phase) for phase in phases), default=0)
    return '\n'.join(['  '.join(header)] + [
        f'  {phase:<{width}}  ' + '  '.join(_term_text(term, *entry) for term, entry in terms.items())
        for phase, terms in phases.items()])


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
        try:
            with open(self.jsonl_path, 'a') as f:
                f.write(json.dumps({'step': step, 'elapsed_s': round(elapsed, 3), **values}) + '\n')
        except OSError as err:   # a full or read-only disk: one line, like a failed checkpoint save
            raise WriteError(self.jsonl_path, err) from None
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)
        self.bar.write(status_lines(step, self.bar.total, elapsed, values))

    def images(self, step, grids):
        """Debug grids ({name: (3, H, W) in [0, 1]}) to TensorBoard."""
        if self.writer is not None:
            for name, grid in grids.items():
                self.writer.add_image(f'samples/{name}', grid, step)

    def close(self):
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
