"""Checks of the files and folders a mode reads, made before the mode does any work.

main.py runs input_errors(cfg) after the config is parsed and before it
dispatches, together with the weight files the run's metrics and plug-ins
declare; every problem is reported at once, each naming its flag. The config
itself never touches the file system.
"""
import os

from core.config import ConfigError


def _folder_errors(cfg, *flags):
    errs = []
    for flag in flags:
        path = getattr(cfg, flag)
        if not path or not os.path.isdir(path):
            what = 'is not a folder' if path and os.path.exists(path) else 'does not exist'
            errs.append(f'--{flag} {path!r} {what} (one sub-folder of images per domain expected)')
    return errs


def _exists_errors(cfg, *flags):
    return [f'--{flag} {getattr(cfg, flag)!r} does not exist'
            for flag in flags if getattr(cfg, flag) is not None and not os.path.exists(getattr(cfg, flag))]


def _translate_errors(cfg):
    errs = []
    if not cfg.src:
        errs.append('--mode translate needs --src IMAGE_OR_FOLDER')
    if cfg.ref is None and cfg.trg_domain is None:
        errs.append('--mode translate needs --trg_domain NAME_OR_ID (random styles) or --ref IMAGE_OR_FOLDER')
    return errs + _exists_errors(cfg, 'src', 'ref')


def _prepare_errors(cfg):
    if not cfg.raw_dir:
        return ['--mode prepare needs --raw_dir FOLDER (one sub-folder of images per domain)']
    return [] if os.path.isdir(cfg.raw_dir) else [f'--raw_dir {cfg.raw_dir!r} is not a folder']


INPUT_CHECKS = {
    'train': lambda cfg: _folder_errors(cfg, 'train_img_dir', 'val_img_dir'),
    'eval': lambda cfg: _folder_errors(cfg, 'train_img_dir', 'val_img_dir'),
    'sample': lambda cfg: _folder_errors(cfg, 'src_dir', 'ref_dir'),
    'translate': _translate_errors,
    'prepare': _prepare_errors,
}


def input_errors(cfg):
    """Problems with the input files and folders of cfg.mode, each naming its flag."""
    check = INPUT_CHECKS.get(cfg.mode)
    return check(cfg) if check else []


def check_inputs(cfg, *more_errors):
    """Raise one ConfigError listing the input problems of cfg.mode and any other errors given."""
    errs = input_errors(cfg) + [e for errors in more_errors for e in errors]
    if errs:
        raise ConfigError('\n'.join(errs))
