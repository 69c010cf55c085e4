"""Checks of the files and folders a mode reads and writes, made before the mode does any work.

main.py runs check_inputs(cfg) after the config is parsed and before it
dispatches, together with the weight files the run's metrics and plug-ins
declare; every problem is reported at once, each naming its flag. Output
folders must be writable (tried with a probe file, which also catches
read-only file systems); once everything passes, the temporary files that
interrupted saves left in them are removed. The config itself never touches
the file system.
"""
import importlib.util
import os
import shutil
import tempfile

import torch

from core import contrastive
from core.config import ConfigError, evaluates
from core.cut.data import domain_folders
from core.cut.options import generator_path, is_cut, with_run_flags
from core.data.images import DataError
from core.utils.distributed import env_world_size
from core.utils.fileio import remove_stale_temp_files

TEMP_DEPTH = 2   # output sub-folders searched for stale temporary files (eval_dir/<mode>/<src>2<trg>/)


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


def _cuda_wanted(cfg):
    return cfg.device == 'cuda' or (cfg.device == 'auto' and torch.cuda.is_available())


def compiler_error(cuda):
    """Why torch.compile cannot work here, or None: inductor needs a C++ compiler (CPU) or Triton (CUDA)."""
    if cuda:
        return None if importlib.util.find_spec('triton') else 'Triton is not installed'
    if not any(shutil.which(cc) for cc in ('c++', 'g++', 'clang++')):
        return 'no C++ compiler (c++, g++ or clang++) is on the PATH'
    return None


def speed_errors(cfg):
    """Flag combinations that this machine or this number of processes cannot run."""
    errs = []
    world_size = env_world_size()
    if cfg.batch_size % world_size:
        errs.append(f'--batch_size {cfg.batch_size} is the global batch and must divide evenly among the '
                    f'{world_size} processes; use a multiple of {world_size}')
    cuda = _cuda_wanted(cfg)
    if cfg.amp == 'fp16' and not cuda:
        errs.append('--amp fp16 needs a CUDA device (CPUs compute fp16 slowly and without gradient-scaling '
                    'support here); use --amp bf16 or --amp off')
    if cfg.tf32 and not cuda:
        errs.append('--tf32 applies to CUDA devices only; drop it on the CPU')
    problem = compiler_error(cuda) if cfg.compile else None
    if problem:
        errs.append(f'--compile cannot work here: {problem}; drop --compile')
    return errs


def _train_errors(cfg):
    return _folder_errors(cfg, 'train_img_dir', 'val_img_dir') + _training_errors(cfg)


def _training_errors(cfg):
    """What any training run needs: a workable speed setup and the files its patch losses declare."""
    return speed_errors(cfg) + contrastive.requirement_errors(cfg)


def _cut_train_errors(cfg):
    """The CUT family's training inputs: --dataroot's A and B folders (core.cut.data), and what any run needs."""
    try:
        domain_folders(cfg, 'train')
    except DataError as err:
        return [str(err)] + _training_errors(cfg)
    return _training_errors(cfg)


def _cut_translate_errors(cfg):
    """The CUT family's translate inputs: the generator file and the --src or --dataroot test images."""
    cfg = with_run_flags(cfg)
    errs = [] if os.path.isfile(generator_path(cfg)) else [
        f'--name/--epoch: {generator_path(cfg)} does not exist (train first, or give the --checkpoints_dir, '
        f'--name and --epoch of a saved model)']
    if cfg.src:
        return errs + _exists_errors(cfg, 'src')
    try:
        domain_folders(cfg, cfg.phase)
    except DataError as err:
        errs.append(str(err))
    return errs


def _nearest_existing(path):
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def writable_problem(folder):
    """Why files cannot be written in `folder` (created when needed), or None.

    A probe file is created and removed in the folder, or in its nearest
    existing parent, because os.access says yes to root even on folders it
    cannot write (read-only file systems).
    """
    folder = os.path.abspath(folder)
    existing = _nearest_existing(folder)
    if not os.path.isdir(existing):
        return 'is a file, not a folder' if existing == folder else f'cannot be created: {existing} is a file'
    try:
        fd, probe = tempfile.mkstemp(prefix='.write-test.', dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        return f'cannot be written: no new file can be made in {existing} ({err.strerror})'
    return None


def output_folders(cfg):
    """{flag: folder} of the folders cfg.mode writes (for prepare: the folder holding the new split)."""
    if is_cut(cfg):   # the run folder holds its sample grids
        return {f: getattr(cfg, f) for f in {'train': ['checkpoint_dir', 'sample_dir'], 'translate': ['result_dir'],
                                             'eval': ['result_dir'],
                                             'demo': ['checkpoint_dir', 'sample_dir', 'result_dir']}.get(cfg.mode, [])}
    flags = {'train': ['checkpoint_dir'] + (['sample_dir'] if 0 < cfg.sample_every <= cfg.total_iters else [])
             + (['eval_dir'] if evaluates(cfg) else []),
             'demo': ['checkpoint_dir', 'sample_dir', 'result_dir'],
             'sample': ['result_dir'], 'translate': ['result_dir'], 'eval': ['eval_dir']}.get(cfg.mode, [])
    folders = {flag: getattr(cfg, flag) for flag in flags}
    if cfg.mode == 'prepare':
        folders.update({flag: os.path.dirname(os.path.abspath(getattr(cfg, flag)))
                        for flag in ('train_img_dir', 'val_img_dir')})
    return folders


def _output_errors(cfg):
    errs = []
    for flag, folder in output_folders(cfg).items():
        problem = writable_problem(folder)
        if problem:
            errs.append(f'--{flag} {folder} {problem}; choose a folder you can write to')
    return errs


INPUT_CHECKS = {
    'train': _train_errors,
    'demo': _training_errors,
    'eval': lambda cfg: _folder_errors(cfg, 'train_img_dir', 'val_img_dir'),
    # Folders not given as flags may come from the checkpoint's run (core.sampling.follow_run); sample checks those.
    'sample': lambda cfg: _folder_errors(cfg, *[f for f in ('src_dir', 'ref_dir')
                                                if f in cfg.get('explicit_flags', ('src_dir', 'ref_dir'))]),
    'translate': _translate_errors,
    'prepare': _prepare_errors,
    ('cut', 'train'): _cut_train_errors,
    ('cut', 'translate'): _cut_translate_errors,
    ('cut', 'eval'): _cut_translate_errors,
    ('cut', 'demo'): _training_errors,
}


def input_errors(cfg):
    """Problems with the input files and output folders of cfg.mode, each naming its flag."""
    check = INPUT_CHECKS.get(('cut', cfg.mode) if is_cut(cfg) else cfg.mode)
    return (check(cfg) if check else []) + _output_errors(cfg)


def check_inputs(cfg, *more_errors):
    """Raise one ConfigError listing the input problems of cfg.mode and any other errors given;
    if there are none, remove the stale temporary files of the mode's output folders."""
    errs = input_errors(cfg) + [e for errors in more_errors for e in errors]
    if errs:
        raise ConfigError('\n'.join(errs))
    for folder in output_folders(cfg).values():
        if cfg.mode != 'prepare':   # prepare's folders are the parents of the data, not ours to clean
            remove_stale_temp_files(folder, TEMP_DEPTH)
