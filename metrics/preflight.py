"""Checks made before any work starts: inputs of --mode eval / prepare and the metric weights.

A run that would evaluate (--mode eval, or training with --eval_every) fails
at start-up, naming the missing weight file and the download command, not
hours later at its first evaluation. Kept free of heavy imports: the config
parser calls it for every mode.
"""
import os

from core.errors import UserError
from core.weights import require_weight

# Weight files (core.weights names) of each FID protocol's Inception, and of the LPIPS trunk.
FID_WEIGHTS = {'stargan-v2': 'inception_v3_torchvision', 'standard': 'inception_tf_fid'}
LPIPS_WEIGHTS = 'alexnet'


def metric_weight_names(fid_protocol):
    """Weight files an evaluation with --fid_protocol needs."""
    protocols = list(FID_WEIGHTS) if fid_protocol == 'both' else [fid_protocol]
    return [FID_WEIGHTS[p] for p in protocols] + [LPIPS_WEIGHTS]


def weight_errors(fid_protocol, hint=''):
    """One message per missing or corrupt metric weight file."""
    errs = []
    for name in metric_weight_names(fid_protocol):
        try:
            require_weight(name)
        except UserError as err:
            errs.append(f'{err}{hint}')
    return errs


def evaluates_during_training(cfg):
    """True if a training run with these flags reaches an --eval_every step."""
    return cfg.mode == 'train' and 0 < cfg.eval_every <= cfg.total_iters


def eval_config_errors(cfg):
    """Problems of the evaluation / preparation flags, each naming its flag."""
    errs = []
    evaluating = cfg.mode == 'eval' or evaluates_during_training(cfg)
    if evaluating and cfg.num_outs_per_domain < 2:
        errs.append('--num_outs_per_domain must be at least 2 for the LPIPS diversity (10 in the papers)')
    if cfg.mode == 'eval':
        for flag in ('train_img_dir', 'val_img_dir'):
            if not os.path.isdir(getattr(cfg, flag)):
                errs.append(f'--{flag} {getattr(cfg, flag)!r} is not a folder (one sub-folder per domain expected)')
        errs += weight_errors(cfg.fid_protocol)
    elif evaluates_during_training(cfg):
        errs += weight_errors(cfg.fid_protocol, hint=' -- or pass --eval_every 0 to train without evaluation')
    if cfg.mode == 'prepare':
        if not cfg.raw_dir:
            errs.append('--mode prepare needs --raw_dir FOLDER (one sub-folder of images per domain)')
        elif not os.path.isdir(cfg.raw_dir):
            errs.append(f'--raw_dir {cfg.raw_dir!r} is not a folder')
    if cfg.val_per_domain is not None and cfg.val_per_domain < 1:
        errs.append('--val_per_domain must be at least 1')
    return errs
