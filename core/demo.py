"""--mode demo: the whole pipeline on a laptop CPU in a few minutes.

Synthetic seasons data -> a small model trained with SRC + hDCE -> sample
mode on the synthetic val set (reference.jpg, latent_psi_*.jpg, video_ref.mp4,
video_latent.mp4 in the preset's result_dir), all under expr/. Running it
again reuses the data and the finished training run.
"""
import os
import time

from core.errors import UserError
from core.sampling import sample
from core.synthetic import make_dataset
from core.trainer import train, with_domain_names

DEMO_TRAIN_PER_DOMAIN = 60
DEMO_VAL_PER_DOMAIN = 8


def _synthetic_root(cfg):
    """The dataset folder holding train/ and val/, as the demo preset lays it out."""
    root = os.path.dirname(os.path.normpath(cfg.train_img_dir))
    if os.path.normpath(cfg.val_img_dir) != os.path.join(root, 'val'):
        raise UserError('--mode demo expects --train_img_dir ROOT/train and --val_img_dir ROOT/val '
                        '(it writes the synthetic data there)')
    return root


def run_demo(cfg):
    """Make the synthetic data if needed, train (or resume) the demo model, then sample from it."""
    root = _synthetic_root(cfg)
    try:
        make_dataset('seasons', root, num_train=DEMO_TRAIN_PER_DOMAIN, num_val=DEMO_VAL_PER_DOMAIN,
                     img_size=cfg.img_size)
    except (FileExistsError, NotADirectoryError, ValueError) as err:
        raise UserError(f'cannot prepare the demo data in {root}: {err}') from None
    train_cfg = with_domain_names(cfg.replace(mode='train', resume_iter='latest'))
    train(train_cfg)
    start = time.perf_counter()
    sample(train_cfg.replace(mode='sample', checkpoint=None))
    print(f'demo: sampling took {time.perf_counter() - start:.0f} s')
    print(f'demo: checkpoints in {cfg.checkpoint_dir}, training samples in {cfg.sample_dir}, '
          f'results (grids and videos) in {cfg.result_dir}')
    return train_cfg
