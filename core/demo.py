"""--mode demo: the whole pipeline on a laptop CPU in a few minutes.

Synthetic seasons data -> a small model trained with SRC + hDCE -> sample
grids, all under expr/. Running it again reuses the data and the finished
training run.
"""
import os

from core.config import with_domain_names
from core.errors import UserError
from core.synthetic import make_dataset
from core.trainer import train

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
    """Make the synthetic data if needed, train (or resume) the demo model, report the outputs."""
    root = _synthetic_root(cfg)
    try:
        make_dataset('seasons', root, num_train=DEMO_TRAIN_PER_DOMAIN, num_val=DEMO_VAL_PER_DOMAIN,
                     img_size=cfg.img_size)
    except (FileExistsError, NotADirectoryError, ValueError) as err:
        raise UserError(f'cannot prepare the demo data in {root}: {err}') from None
    train_cfg = with_domain_names(cfg.replace(mode='train', resume_iter='latest'))
    train(train_cfg)
    print(f'demo: checkpoints in {cfg.checkpoint_dir}, training samples in {cfg.sample_dir}')
    return train_cfg
