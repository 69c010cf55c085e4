"""--mode demo: the whole pipeline on a laptop CPU in a few minutes.

Synthetic seasons data -> a small model trained with SRC + hDCE -> sample
mode on the representative images in assets/ (reference.jpg,
latent_psi_*.jpg, video_ref.mp4, video_latent.mp4 in the preset's
result_dir) -> the quality benchmark's figures with their reference points.
Everything is written under data/ and expr/; running it again reuses the data
and the finished training run.
"""
import os
import time

from core.utils.errors import UserError
from core.sampling import sample
from core.data.synthetic import MARKER, make_dataset
from core.trainer import train, with_domain_names
from core.utils.device import resolve_device

DEMO_TRAIN_PER_DOMAIN = 60
DEMO_VAL_PER_DOMAIN = 8


def _synthetic_root(cfg):
    """The dataset folder holding train/ and val/, as the demo preset lays it out."""
    root = os.path.dirname(os.path.normpath(cfg.train_img_dir))
    if os.path.normpath(cfg.val_img_dir) != os.path.join(root, 'val'):
        raise UserError('--mode demo expects --train_img_dir ROOT/train and --val_img_dir ROOT/val '
                        '(it writes the synthetic data there)')
    return root


def sample_folders(cfg):
    """cfg whose --src_dir/--ref_dir exist: the preset's assets/ folders, else the synthetic val set."""
    missing = [flag for flag in ('src_dir', 'ref_dir') if not os.path.isdir(getattr(cfg, flag))]
    if missing:
        print(f'demo: {", ".join(getattr(cfg, f) for f in missing)} not found (run from the repository root '
              f'for the representative images); sampling from {cfg.val_img_dir}')
        cfg = cfg.replace(**{flag: cfg.val_img_dir for flag in missing})
    return cfg


def demo_model_flags(flags):
    """main.py flags of the bench scripts that read a model: the demo model's unless they name another.

    --preset demo is added when no --preset, --checkpoint or --checkpoint_dir is given, and
    --resume_iter latest when neither a step nor a --checkpoint file is, so
    `bench/quality.py --resume_iter 300` still scores the demo run.
    """
    flags = list(flags)
    named = {flag.split('=')[0] for flag in flags if flag.startswith('--')}
    if not named & {'--preset', '--checkpoint', '--checkpoint_dir'}:
        flags = ['--preset', 'demo'] + flags
    if not named & {'--resume_iter', '--checkpoint'}:
        flags += ['--resume_iter', 'latest']
    return flags


def report_quality(cfg):
    """Print the quality benchmark's figures (metrics.benchmark) next to their reference points."""
    from metrics.benchmark import quality_scores
    from core.inference import load_model
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    model = load_model(cfg, device, verbose=False)
    scores = quality_scores(model.nets, model.cfg, device)
    print(f'demo: quality ({time.perf_counter() - start:.0f} s; python bench/quality.py prints the details):\n'
          f'  domain_acc {scores["domain_acc"]:.3f}  (chance {scores["domain_acc_chance"]:.2f}, '
          f'real images {scores["classifier_val_acc"]:.2f})\n'
          f'  structure  {scores["structure"]:.3f}  (input unchanged {scores["identity_structure"]:.3f}, '
          f'perfect 1)\n'
          f'  diversity  {scores["diversity"]:.3f}  (one output per source 0, real data 1)')
    return scores


def run_demo(cfg):
    """Make the synthetic data if needed, train (or resume) the demo model, then sample from it."""
    root = _synthetic_root(cfg)
    if not os.path.isfile(os.path.join(root, MARKER)):
        print(f'demo: rendering the synthetic seasons dataset into {root} (4 domains x '
              f'{DEMO_TRAIN_PER_DOMAIN + DEMO_VAL_PER_DOMAIN} images; first run only, a few seconds)')
    try:
        make_dataset('seasons', root, num_train=DEMO_TRAIN_PER_DOMAIN, num_val=DEMO_VAL_PER_DOMAIN,
                     img_size=cfg.img_size)
    except (FileExistsError, NotADirectoryError, ValueError) as err:
        raise UserError(f'cannot prepare the demo data in {root}: {err}') from None
    train_cfg = with_domain_names(cfg.replace(mode='train', resume_iter='latest'))
    train(train_cfg)
    start = time.perf_counter()
    sample(sample_folders(train_cfg.replace(mode='sample', checkpoint=None)))
    print(f'demo: sampling took {time.perf_counter() - start:.0f} s')
    report_quality(train_cfg.replace(mode='sample', checkpoint=None))
    print(f'demo: checkpoints in {cfg.checkpoint_dir}, training samples in {cfg.sample_dir}, '
          f'results (grids and videos) in {cfg.result_dir}')
    return train_cfg
