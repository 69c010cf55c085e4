"""Ablation of the patch-wise losses: same data, same seed, same steps, one table.

    python bench/ablation.py [--family stargan-v2|cut] [--configs NAME,NAME,...] [--add NAME='FLAGS'] [--steps N]
                             [--seeds K] [--img_size S] [--batch_size B] [--out_dir DIR] [--reuse]
                             [training flags of main.py]

Renders the synthetic seasons data (--img_size, --num_train images per
domain, drawn with --seed) once, then trains every selected configuration
from scratch with CPU-sized networks for --steps iterations, once per
training seed (--seeds K: --seed, --seed + 1, ..., so that runs differ only
in their patch losses and their seed), and reports every figure as mean ± std
over the seeds. Each configuration trains in its own process, so
that its peak memory is its own. Afterwards every run's EMA networks are
scored with the quality benchmark (metrics/benchmark.py: domain accuracy of
latent- and reference-guided outputs and structure preservation). The table
goes to OUT/ablation.md (mean ± std per configuration, then every run) and
OUT/ablation.csv (every run):

  config, seed, patch losses, median s/iter (training step only, warm-up step excluded),
  peak RSS of the run's process, RSS growth during training (peak CUDA memory on
  GPU), plug-in parameters, finite (no NaN/inf in the last step's losses),
  domain_acc_latent, domain_acc_reference, domain_acc, structure, identity_structure, diversity.

Each configuration trains through core.trainer.train, with a StepTimer hook
that times train_step. Each run keeps OUT/runs/<config>/seed<seed>/: checkpoints of the
last step (sample mode can load them), config.json, stats.jsonl, tensorboard/,
train.log and result.json. Running
again replaces those run folders, except with --reuse, which keeps every
finished run whose flags are exactly the new ones (and scores it again). Extra flags after the runner's own are
passed to every configuration (e.g. --arch hsrc, --n_patch 64). Timings are
wall-clock on whatever else the machine is doing: compare them within one table.

--family cut ablates the CUT family instead (CUT_CONFIGS; the flags of
core/cut/options.py): summer -> winter on the same synthetic seasons (60 train
and 32 val images per domain by default, the demo's), networks of the
demo-cut preset's size (ngf = ndf = 16, 64 patches), batch 1, --steps as whole
epochs (a multiple of --num_train // --batch_size, the last 2/5 of the epochs
with linear learning-rate decay), trained through core.cut.trainer.train with
the same StepTimer; each run's generator is scored with
core.cut.demo.quality_scores (domain accuracy and structure of the summer val
translations, next to the inputs unchanged). Extra flags are then CUT flags.
Runs train on main.py's CPU threads (half the usable cores unless
OMP_NUM_THREADS is set).
"""
import argparse
import csv
import io
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from core.utils.fileio import atomic_write_text  # noqa: E402
from core.utils.errors import UserError, run_cli  # noqa: E402

# name -> (what it is, its flags). Weights: the SRC paper's Seasons values for SRC/hDCE, the released
# single-domain values for FSeSim/LSeSim (10) and PUT (1), our choice for PatchGCL (0.5, no published one).
CONFIGS = {
    'none': ('StarGAN v2 without patch losses', []),
    'patchnce': ('PatchNCE (CUT)', ['--patch_loss', 'patchnce=1']),
    'dce': ('decoupled InfoNCE', ['--patch_loss', 'dce=1']),
    'src': ('SRC', ['--lambda_src', '0.1']),
    'hdce': ('hard-negative DCE alone', ['--lambda_dce', '1', '--use_hard', '--use_curriculum']),
    'src+hdce': ('SRC + hDCE (Jung et al. 2022)',
                 ['--lambda_src', '0.1', '--lambda_dce', '1', '--use_hard', '--use_curriculum']),
    'fsesim': ('FSeSim (fixed features)', ['--patch_loss', 'fsesim=10']),
    'lsesim': ('LSeSim (learned head)', ['--patch_loss', 'lsesim=10']),
    'patchgcl': ('PatchGCL', ['--patch_loss', 'patchgcl=0.5']),
    'put': ('PUT, 5 negatives per query', ['--patch_loss', 'put=1']),
    'src+hdce+patchgcl': ('SRC + hDCE + PatchGCL',
                          ['--lambda_src', '0.1', '--lambda_dce', '1', '--use_hard', '--use_curriculum',
                           '--patch_loss', 'patchgcl=0.5']),
}
# The CUT family (--family cut): its own flags (core/cut/options.py), CUT's and the forks' weights as released
# (PatchNCE 1 with the identity term; PUT's README, 5 negatives), hDCE 1 + SRC 0.1 as the demo-cut preset.
CUT_CONFIGS = {
    'none': ('CUT without patch losses', ['--lambda_NCE', '0', '--nce_idt', 'false']),
    'patchnce': ('PatchNCE (CUT)', ['--lambda_NCE', '1', '--nce_idt']),
    'dce': ('decoupled InfoNCE, no hard negatives', ['--lambda_HDCE', '1', '--lambda_SRC', '0', '--no_Hneg',
                                                     '--dce_idt']),
    'src+hdce': ('SRC + hDCE (Hneg_SRC Single-modal)',
                 ['--lambda_HDCE', '1', '--lambda_SRC', '0.1', '--dce_idt', '--use_curriculum', '--HDCE_gamma', '50',
                  '--HDCE_gamma_min', '10']),
    'put': ('PUT, 5 negatives per query', ['--lambda_NCE', '1', '--nce_idt', '--choose_patch', '5']),
    'patchgcl': ('PatchGCL (needs the VGG16 weights: bash download.sh vgg16)',
                 ['--lambda_GNN', '0.1', '--num_hop', '2', '--gnn_idt']),
}
QUALITY_KEYS = ('domain_acc_latent', 'domain_acc_reference', 'domain_acc', 'structure', 'identity_structure',
                'diversity')
CUT_QUALITY_KEYS = ('domain_acc', 'domain_acc_input', 'classifier_val_acc', 'structure', 'identity_structure')
RUN_COLUMNS = ('config', 'seed', 'patch_losses', 'median_s_per_iter', 'peak_rss_mb', 'train_mem_mb', 'plugin_params',
               'finite')
COLUMNS = RUN_COLUMNS + QUALITY_KEYS + ('status',)
SUMMARY_KEYS = ('median_s_per_iter', 'domain_acc', 'structure', 'diversity', 'identity_structure')


# ----------------------------------------------------------------------------------------------
# Configurations
# ----------------------------------------------------------------------------------------------

def select_configs(names, added=(), configs=None):
    """[(name, description, flags)] of the comma-separated names ('all') plus NAME=FLAGS additions.

    configs: the family's table (default: StarGAN v2's, CONFIGS).
    """
    configs = CONFIGS if configs is None else configs
    chosen = list(configs) if names == 'all' else [n.strip() for n in names.split(',') if n.strip()]
    unknown = [n for n in chosen if n not in configs]
    if unknown:
        raise UserError(f'--configs: unknown {", ".join(unknown)}; available: {", ".join(configs)} (or all)')
    selected = [(n, configs[n][0], list(configs[n][1])) for n in chosen]
    for item in added:
        name, sep, flags = item.partition('=')
        # The name becomes a folder name: letters, digits and . _ + - only.
        if not sep or not re.fullmatch(r'[A-Za-z0-9][\w.+-]*', name):
            raise UserError(f"--add expects NAME='FLAGS' (NAME: letters, digits, . _ + -), got {item!r}")
        selected.append((name, 'custom', shlex.split(flags)))
    names = [n for n, _, _ in selected]
    if len(set(names)) != len(names) or not names:
        raise UserError('--configs/--add: every configuration needs its own name, and at least one is needed')
    return selected


def base_flags(args, data_root, run_dir, seed=None):
    """Training flags shared by every configuration of args.family: CPU-sized networks, the same data;
    seed (default --seed)."""
    return FAMILIES[args.family].flags(args, data_root, run_dir, args.seed if seed is None else seed)


def stargan_flags(args, data_root, run_dir, seed):
    """StarGAN v2's: four seasons, the demo's learning rates, EMA networks."""
    steps = str(args.steps)
    return ['--mode', 'train', '--img_size', str(args.img_size), '--num_domains', '4', '--base_dim', '16',
            '--max_conv_dim', '64', '--hidden_dim', '64', '--style_dim', '16', '--latent_dim', '8',
            '--batch_size', str(args.batch_size), '--val_batch_size', '8', '--num_outs_per_domain', '1',
            '--num_workers', '0', '--n_patch', '32', '--patch_dim', '64', '--lambda_ds', '1',
            # the demo's 10x learning rates: a few hundred CPU steps then separate the domains
            '--lr', '1e-3', '--f_lr', '1e-5',
            '--ema_beta', '0.99', '--total_iters', steps, '--ds_iter', steps,
            '--seed', str(seed),
            '--device', args.device, '--print_every', str(max(1, args.steps // 10)), '--sample_every', '0',
            '--save_every', '0', '--eval_every', '0',
            '--train_img_dir', os.path.join(data_root, 'train'), '--val_img_dir', os.path.join(data_root, 'val'),
            '--src_dir', os.path.join(data_root, 'val'), '--ref_dir', os.path.join(data_root, 'val'),
            '--checkpoint_dir', os.path.join(run_dir, 'checkpoints'), '--sample_dir', os.path.join(run_dir, 'samples'),
            '--eval_dir', os.path.join(run_dir, 'eval'), '--result_dir', os.path.join(run_dir, 'results')]


def cut_epoch_steps(args):
    """Steps of one CUT epoch on the synthetic data: max(|A|, |B|) // batch_size, as released."""
    return args.num_train // args.batch_size


def cut_errors(args):
    """What the CUT family's runner needs of --steps: whole epochs (the release schedules per epoch)."""
    epoch = cut_epoch_steps(args)
    if epoch < 1:
        return [f'--num_train {args.num_train} must be at least --batch_size {args.batch_size}']
    if args.steps % epoch:
        return [f'--steps {args.steps}: with --family cut it must be a multiple of the epoch, '
                f'--num_train // --batch_size = {epoch} steps']
    return []


def cut_flags(args, data_root, run_dir, seed):
    """The CUT family's (the demo-cut preset's sizes): summer -> winter, --steps as whole epochs, the last 2/5
    of them (rounded down) with the release's linear learning-rate decay; one checkpoint, at the end."""
    epochs = max(1, args.steps // max(1, cut_epoch_steps(args)))
    decay = epochs * 2 // 5
    images = str(args.steps * args.batch_size)
    return ['--model', 'cut', '--mode', 'train', '--dataroot', data_root, '--domains', 'summer,winter',
            '--checkpoints_dir', run_dir, '--name', 'checkpoints', '--results_dir', os.path.join(run_dir, 'results'),
            '--crop_size', str(args.img_size), '--load_size', str(args.img_size + args.img_size // 8),
            '--ngf', '16', '--ndf', '16', '--num_patches', '64', '--batch_size', str(args.batch_size),
            '--n_epochs', str(epochs - decay), '--n_epochs_decay', str(decay), '--num_workers', '0',
            '--seed', str(seed), '--device', args.device,
            '--print_freq', str(max(1, args.steps // 10) * args.batch_size), '--display_freq', images,
            '--save_epoch_freq', str(epochs), '--save_latest_freq', images]


def run_flags(args, data_root, run_dir, config_flags, extra, seed=None):
    """Base flags, then the configuration's, then the user's extra flags (which win)."""
    return base_flags(args, data_root, run_dir, seed) + list(config_flags) + list(extra)


def training_seeds(args):
    """The training seeds: --seed, --seed + 1, ... (--seeds of them)."""
    return [args.seed + k for k in range(args.seeds)]


# ----------------------------------------------------------------------------------------------
# One configuration, in its own process
# ----------------------------------------------------------------------------------------------

def peak_rss_mb():
    """Peak resident memory of this process so far, in MB (None where the OS does not report it)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == 'darwin' else peak / 2 ** 10   # bytes on macOS, KB on Linux


class StepTimer:
    """A core.trainer.StepHook (both families' train loops call it): times every training step and keeps what
    measurements() needs."""

    def __init__(self):
        self.times, self.stats = [], {}
        self.run = self.device = self.rss_before = None
        self._sync = self._t0 = None

    def start(self, run, device):
        import torch
        from core.utils.device import synchronize
        self.run, self.device, self._sync = run, device, synchronize
        self.rss_before = peak_rss_mb()
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(device)

    def before(self, step):
        self._t0 = time.perf_counter()

    def after(self, step, stats):
        self._sync(self.device)   # time the step, not its launch
        self.times.append(time.perf_counter() - self._t0)
        self.stats = stats


def train_config(flags):
    """Train one configuration with its family's train(cfg, hook) (core.trainer.train, core.cut.trainer.train);
    returns its result dict (time, memory, ...)."""
    import importlib
    from core.checks import check_inputs
    from core.config import parse_config
    from core.families import mode_of
    from core.utils.device import host_settings
    cfg = parse_config(flags)
    mode = mode_of(cfg)
    check_inputs(cfg, mode)
    # CPU threads as main.py sets them (half the usable cores unless OMP_NUM_THREADS): torch's default of
    # every core made the steps many times slower on a shared, loaded machine.
    cfg = host_settings(cfg, verbose=False)
    module, function = mode.runner.split(':')
    timer = StepTimer()
    getattr(importlib.import_module(module), function)(cfg, timer)
    return measurements(cfg, timer.run, timer.device, timer.times, timer.stats, timer.rss_before)


def measurements(cfg, run, device, times, stats, rss_before):
    """The result dict of a finished run."""
    import torch
    peak = peak_rss_mb()
    if device.type == 'cuda':
        train_mem = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:
        train_mem = None if peak is None else peak - rss_before
    last = {k: float(v) for k, v in stats.items()}
    timed = times[1:] if len(times) > 1 else times   # the first step pays for allocation and warm-up
    return {'patch_losses': ' + '.join(f'{n}={w:g}' for n, w in cfg.patch_losses) or '-',
            'median_s_per_iter': statistics.median(timed), 'total_train_s': sum(times), 'steps': len(times),
            'peak_rss_mb': peak, 'train_mem_mb': train_mem, 'device': device.type, 'threads': torch.get_num_threads(),
            'plugin_params': sum(p.numel() for n in run.head_names for p in run.nets[n].parameters()),
            'finite': all(math.isfinite(v) for v in last.values()), 'last_stats': last}


def worker_main(spec_path):
    """Entry point of a configuration's process: train, then write result.json beside the checkpoints."""
    with open(spec_path) as f:
        spec = json.load(f)
    def run():
        result = train_config(spec['flags'])
        atomic_write_text(spec['result'], json.dumps(result, indent=2) + '\n')
    return run_cli(run)


def earlier_result(flags, run_dir):
    """The result dict of a finished earlier run of exactly these flags in run_dir, else None."""
    try:
        with open(os.path.join(run_dir, 'spec.json')) as f:
            if json.load(f)['flags'] != flags:
                return None
        with open(os.path.join(run_dir, 'result.json')) as f:
            return {**json.load(f), 'status': 'ok', 'reused': True}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def launch(name, flags, run_dir, reuse=False):
    """Train one configuration in a child process; returns its result dict, or a failure status.

    reuse: keep a finished run of the same flags in run_dir instead of training it again.
    """
    if reuse:
        result = earlier_result(flags, run_dir)
        if result is not None:
            return result
    if os.path.isdir(run_dir):
        shutil.rmtree(run_dir)   # a run folder of an earlier ablation (see --out_dir)
    os.makedirs(run_dir)
    spec = os.path.join(run_dir, 'spec.json')
    result_path = os.path.join(run_dir, 'result.json')
    atomic_write_text(spec, json.dumps({'flags': flags, 'result': result_path}) + '\n')
    with open(os.path.join(run_dir, 'train.log'), 'w') as log:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), '--_worker', spec],
                              stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not os.path.isfile(result_path):
        return {'status': f'failed: {_last_error(os.path.join(run_dir, "train.log"))}'}
    with open(result_path) as f:
        return {**json.load(f), 'status': 'ok'}


def _last_error(log_path):
    """The 'error: ...' line of a failed run's log, else its last line."""
    with open(log_path, errors='replace') as f:
        lines = [line.strip() for line in f if line.strip()]
    errors = [line for line in lines if line.startswith('error:')]
    return (errors or lines or ['no output'])[-1][:200]


# ----------------------------------------------------------------------------------------------
# Quality
# ----------------------------------------------------------------------------------------------

def quality_scorer():
    """metrics.benchmark.quality_scores, or None when this checkout has no quality benchmark."""
    try:
        from metrics.benchmark import quality_scores
    except ImportError:
        return None
    return quality_scores


def score_run(scorer, run_dir, steps, device_name):
    """Quality figures of one StarGAN v2 run's EMA networks (loaded from its last checkpoint)."""
    from core.checkpoint import ckpt_path
    from core.config import Config
    from core.utils.device import resolve_device
    from core.inference import load_model
    with open(os.path.join(run_dir, 'checkpoints', 'config.json')) as f:
        cfg = Config.from_json(f.read())
    device = resolve_device(device_name)
    nets_ema, cfg = load_model(cfg.replace(checkpoint=ckpt_path(cfg.checkpoint_dir, steps, 'nets_ema')),
                               device, verbose=False)[:2]
    scores = scorer(nets_ema, cfg, device)
    return {k: float(scores[k]) for k in QUALITY_KEYS if k in scores}


def cut_quality_scorer():
    """core.cut.demo.quality_scores (the demo-cut figures)."""
    from core.cut.demo import quality_scores
    return quality_scores


def score_cut_run(scorer, run_dir, args):
    """Quality figures of one CUT run's generator (its latest_net_G.pth) on the summer val images.

    The domain classifier is trained once, with the data seed, and cached in OUT/quality for every run.
    """
    from core.config import parse_config
    from core.cut.inference import load_generator
    from core.utils.device import resolve_device
    with open(os.path.join(run_dir, 'spec.json')) as f:
        cfg = parse_config(json.load(f)['flags'])
    device = resolve_device(args.device)
    G, _ = load_generator(cfg.replace(epoch='latest'), device)
    scores = scorer(G, cfg.replace(checkpoints_dir=args.out_dir, seed=args.seed), device)
    return {k: float(scores[k]) for k in CUT_QUALITY_KEYS if k in scores}


# ----------------------------------------------------------------------------------------------
# The families
# ----------------------------------------------------------------------------------------------

class Family:
    """What the runner needs of a model family: its configurations, flags, quality figures and defaults."""

    def __init__(self, title, configs, flags, quality_keys, summary_keys, scorer, score, step_note, defaults,
                 errors=lambda args: []):
        self.title, self.configs, self.flags, self.errors = title, configs, flags, errors
        self.quality_keys, self.summary_keys, self.step_note = quality_keys, summary_keys, step_note
        self.columns = RUN_COLUMNS + quality_keys + ('status',)
        self.scorer, self.score, self.defaults = scorer, score, defaults


FAMILIES = {
    'stargan-v2': Family(
        'Patch-loss ablation', CONFIGS, stargan_flags, QUALITY_KEYS, SUMMARY_KEYS, quality_scorer,
        lambda scorer, run_dir, args: score_run(scorer, run_dir, args.steps, args.device),
        'one full training iteration (D latent, D ref, G latent, G ref, EMA)',
        dict(steps=600, batch_size=4, num_train=24, num_val=8, out_dir='expr/ablation')),
    'cut': Family(
        'Patch-loss ablation of the CUT family (summer -> winter)', CUT_CONFIGS, cut_flags, CUT_QUALITY_KEYS,
        ('median_s_per_iter', 'domain_acc', 'structure', 'identity_structure'), cut_quality_scorer, score_cut_run,
        'one full training iteration (G forward, D step, G step with the patch losses)',
        dict(steps=1500, batch_size=1, num_train=60, num_val=32, out_dir='expr/ablation-cut'), cut_errors),
}


# ----------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------

def _cell(value):
    if value is None:
        return 'n/a'
    if isinstance(value, bool):
        return 'yes' if value else 'NO'
    if isinstance(value, float):
        return f'{value:.4f}' if abs(value) < 10 else f'{value:.0f}'
    return str(value)


def table_csv(rows, columns=COLUMNS):
    """CSV text: one header line (columns) and one line per configuration; missing values empty."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction='ignore', lineterminator='\n')
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ('' if row.get(k) is None else row.get(k)) for k in columns})
    return out.getvalue()


def mean_std(values):
    """'mean ± std' (sample std over the seeds) of the numbers among values; 'n/a' if none."""
    values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not values:
        return 'n/a'
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    digits = 3 if max(abs(v) for v in values) < 10 else 0
    return f'{statistics.mean(values):.{digits}f} ± {std:.{digits}f}'


def summary_rows(rows, keys=SUMMARY_KEYS):
    """One row per configuration, in order: seeds ok / run, and mean ± std of keys over its runs."""
    configs = list(dict.fromkeys(row['config'] for row in rows))
    out = []
    for name in configs:
        runs = [row for row in rows if row['config'] == name]
        ok = [row for row in runs if row.get('status') == 'ok']
        summary = {'config': name, 'patch_losses': next((r.get('patch_losses') for r in ok), None),
                   'seeds': f'{len(ok)}/{len(runs)}'}
        summary.update({key: mean_std([row.get(key) for row in ok]) for key in keys})
        out.append(summary)
    return out


def table_markdown(rows, settings, notes, family=None):
    """Markdown text: the settings, mean ± std per configuration, every run, then the notes.

    family: a FAMILIES entry (default StarGAN v2's): the title, summary keys and columns.
    """
    family = family or FAMILIES['stargan-v2']
    head = ('config', 'patch_losses', 'seeds') + family.summary_keys
    lines = [f'# {family.title}', '', ', '.join(f'{k}: {v}' for k, v in settings.items()), '',
             '## Mean ± std over the seeds', '',
             '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for row in summary_rows(rows, family.summary_keys):
        lines.append('| ' + ' | '.join(_cell(row.get(k)) for k in head) + ' |')
    columns = family.columns
    lines += ['', '## Every run', '', '| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    for row in rows:
        lines.append('| ' + ' | '.join(_cell(row.get(k)) for k in columns) + ' |')
    return '\n'.join(lines + [''] + [f'- {note}' for note in notes]) + '\n'


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def parse_args(argv):
    """(the runner's own options, the remaining flags for every configuration)."""
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--family', choices=list(FAMILIES), default='stargan-v2',
                   help='the model family: StarGAN v2 (core.trainer) or CUT (core.cut.trainer, summer -> winter)')
    p.add_argument('--configs', default='all',
                   help='comma-separated names of: ' + ', '.join(CONFIGS) + '; with --family cut: '
                        + ', '.join(CUT_CONFIGS))
    p.add_argument('--add', action='append', default=[], metavar="NAME='FLAGS'",
                   help="an extra configuration, e.g. --add gcl-clean='--patch_loss patchgcl=0.5 "
                        "--gcl_self_loops clean' (repeatable)")
    p.add_argument('--steps', type=int, default=None,
                   help='training iterations of every run (default 600: 150 left every configuration near chance; '
                        'cut: 1500, the demo\'s, and a multiple of --num_train // --batch_size, whole epochs)')
    p.add_argument('--seeds', type=int, default=3, help='training seeds per configuration (--seed, --seed + 1, ...)')
    p.add_argument('--img_size', type=int, default=32, help='image size of the synthetic data and the networks')
    p.add_argument('--batch_size', type=int, default=None, help='training batch size (default 4; cut: 1)')
    p.add_argument('--num_train', type=int, default=None, help='synthetic training images per domain (default 24; '
                                                               'cut: 60)')
    p.add_argument('--num_val', type=int, default=None, help='synthetic validation images per domain (default 8; '
                                                             'cut: 32)')
    p.add_argument('--seed', type=int, default=777, help='seed of the data and first training seed')
    p.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='cpu')
    p.add_argument('--out_dir', default=None, help='data, runs and the tables (default expr/ablation; '
                                                   'cut: expr/ablation-cut)')
    p.add_argument('--no_quality', action='store_true', help='time and memory only')
    p.add_argument('--reuse', action='store_true',
                   help='keep the finished runs of an earlier ablation in --out_dir whose flags are the same '
                        '(continue an interrupted one, or add configurations or seeds to a table)')
    p.add_argument('--list', action='store_true', help='print the configurations and exit')
    p.add_argument('--_worker', help=argparse.SUPPRESS)
    args, extra = p.parse_known_args(argv)
    for key, value in FAMILIES[args.family].defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args, extra


def check_flags(selected, args, extra):
    """Parse and validate every configuration's flags before any training (errors name the flag)."""
    from core.config import parse_config
    data_root = os.path.join(args.out_dir, 'data')
    for name, _, flags in selected:
        try:
            parse_config(run_flags(args, data_root, os.path.join(args.out_dir, 'runs', name), flags, extra))
        except UserError as err:
            raise UserError(f'configuration {name}: {err}') from None
        except SystemExit:
            raise UserError(f'configuration {name}: its flags do not parse (see the message above)') from None


def prepare_data(args):
    """The synthetic seasons dataset under OUT/data (reused when it matches)."""
    from core.data.synthetic import make_dataset
    root = os.path.join(args.out_dir, 'data')
    try:
        make_dataset('seasons', root, num_train=args.num_train, num_val=args.num_val, img_size=args.img_size,
                     seed=args.seed)
    except (FileExistsError, NotADirectoryError, ValueError) as err:
        raise UserError(f'cannot prepare the synthetic data in {root}: {err} (choose another --out_dir)') from None
    return root


def run_ablation(args, extra):
    """Train and score every selected configuration; write the tables; return the rows."""
    family = FAMILIES[args.family]
    selected = select_configs(args.configs, args.add, family.configs)
    if args.steps < 1 or args.seeds < 1:
        raise UserError('--steps and --seeds must be at least 1')
    if family.errors(args):
        raise UserError('\n'.join(family.errors(args)))
    check_flags(selected, args, extra)
    start = time.perf_counter()
    data_root = prepare_data(args)
    rows = []
    runs = [(name, description, flags, seed) for name, description, flags in selected for seed in training_seeds(args)]
    for i, (name, description, flags, seed) in enumerate(runs, 1):
        run_dir = os.path.join(args.out_dir, 'runs', name, f'seed{seed}')
        result = launch(name, run_flags(args, data_root, run_dir, flags, extra, seed), run_dir, args.reuse)
        rows.append({'config': name, 'seed': seed, 'description': description, 'run_dir': run_dir, **result})
        print(f'[{i}/{len(runs)}] {name} seed {seed}: {result["status"]}'
              + (f', {result["median_s_per_iter"]:.3f} s/iter' if result['status'] == 'ok' else '')
              + (' (finished earlier, reused)' if result.get('reused') else ''), flush=True)
    notes = add_quality(rows, args)
    write_tables(rows, args, extra, notes, time.perf_counter() - start)
    return rows


def add_quality(rows, args):
    """Fill the quality columns in place; returns notes for the table."""
    family = FAMILIES[args.family]
    scorer = None if args.no_quality else family.scorer()
    if scorer is None:
        return ['quality: ' + ('skipped (--no_quality)' if args.no_quality else
                               'metrics/benchmark.py is not in this checkout; time and memory only')]
    for row in rows:
        if row['status'] == 'ok':
            row.update(family.score(scorer, row['run_dir'], args))
    if args.family == 'cut':
        return ['quality: core.cut.demo.quality_scores of each run\'s generator on the summer val images: '
                'domain_acc (winter, by a classifier trained on the real images of the four seasons; '
                'domain_acc_input: the inputs unchanged, classifier_val_acc: real val images) and structure '
                '(edge agreement with the same layout rendered in winter; identity_structure: the inputs '
                'unchanged)']
    return ['quality: metrics.benchmark.quality_scores on each run\'s EMA networks']


def write_tables(rows, args, extra, notes, wall_s=None):
    """OUT/ablation.md and OUT/ablation.csv, written atomically."""
    import torch
    family = FAMILIES[args.family]
    settings = {'command': 'python bench/ablation.py ' + ' '.join(shlex.quote(a) for a in sys.argv[1:]),
                'family': args.family,
                'wall time of this invocation': 'n/a' if wall_s is None else f'{wall_s / 60:.1f} min',
                'training time of all runs': f'{sum(r.get("total_train_s") or 0 for r in rows) / 60:.1f} min',
                'steps': args.steps, 'img_size': args.img_size, 'batch_size': args.batch_size,
                'seeds': ', '.join(map(str, training_seeds(args))), 'data seed': args.seed,
                'device': args.device,
                'threads': ', '.join(sorted({str(r['threads']) for r in rows if r.get('threads')}))
                or str(torch.get_num_threads()),
                'extra flags': ' '.join(extra) or '-'}
    notes = notes + [f'median_s_per_iter: {family.step_note}, '
                     'first step excluded; wall-clock, noisy on a shared machine',
                     'peak_rss_mb: peak resident memory of the run\'s process (importing torch alone takes '
                     'several hundred MB); train_mem_mb: its growth during training (CPU) or peak CUDA memory '
                     'allocated (GPU)',
                     'runs (checkpoints, stats.jsonl, train.log): ' + os.path.join(args.out_dir, 'runs')]
    atomic_write_text(os.path.join(args.out_dir, 'ablation.csv'), table_csv(rows, family.columns))
    atomic_write_text(os.path.join(args.out_dir, 'ablation.md'), table_markdown(rows, settings, notes, family))


def main(argv=None):
    args, extra = parse_args(argv)
    args.out_dir = os.path.abspath(args.out_dir)
    if args._worker:
        return worker_main(args._worker)
    if args.list:
        for name, (description, flags) in FAMILIES[args.family].configs.items():
            print(f'{name:20s} {description}: {" ".join(flags) or "(no patch loss)"}')
        return 0
    def run():
        run_ablation(args, extra)
        print(f'tables: {os.path.join(args.out_dir, "ablation.md")}, {os.path.join(args.out_dir, "ablation.csv")}')
    return run_cli(run)


if __name__ == '__main__':
    sys.exit(main())
