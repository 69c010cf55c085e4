"""Checks of the files and folders a mode reads and writes, made before the mode does any work.

Each mode of core.modes names its input checks and its output folders (functions
of this module); main.py runs check_inputs(cfg, mode) after the config is
parsed and before it dispatches, together with the weight files the run's
metrics and plug-ins declare; every problem is reported at once, each naming
its flag. Output folders must be writable (tried with a probe file, which also
catches read-only file systems); once everything passes, the temporary files
that interrupted saves left in them are removed. The config itself never
touches the file system.
"""
import importlib.util
import os
import shutil
import tempfile

import torch

from core import contrastive
from core.runconfig import ConfigError, evaluates
from core.utils.distributed import env_world_size
from core.utils.fileio import remove_stale_temp_files

TEMP_DEPTH = 2   # output sub-folders searched for stale temporary files (eval_dir/<mode>/<src>2<trg>/)


# ----------------------------------------------------------------------------------------------
# Inputs of each mode (the checks of core.modes)
# ----------------------------------------------------------------------------------------------

def _folder_errors(cfg, *flags):
    errs = []
    for flag in flags:
        path = getattr(cfg, flag)
        if not path or not os.path.isdir(path):
            what = 'is not a folder' if path and os.path.exists(path) else 'does not exist'
            errs.append(f'--{flag} {path!r} {what} (one sub-folder of images per domain expected)')
    return errs


def exists_errors(cfg, *flags):
    return [f'--{flag} {getattr(cfg, flag)!r} does not exist'
            for flag in flags if getattr(cfg, flag) is not None and not os.path.exists(getattr(cfg, flag))]


def train_errors(cfg):
    """--mode train: the data folders, and what any training run needs."""
    return _folder_errors(cfg, 'train_img_dir', 'val_img_dir') + training_errors(cfg)


def training_errors(cfg):
    """What any training run needs: a workable speed setup and the files its patch losses declare."""
    return speed_errors(cfg) + contrastive.requirement_errors(cfg)


def eval_errors(cfg):
    """--mode eval: the data folders (the real images and the sources)."""
    return _folder_errors(cfg, 'train_img_dir', 'val_img_dir')


def sample_errors(cfg):
    """--mode sample: --src_dir/--ref_dir given on the command line (the others may come from the checkpoint's
    run, core.sampling.follow_run, which checks those)."""
    return _folder_errors(cfg, *[f for f in ('src_dir', 'ref_dir') if f in cfg.facts.explicit_flags])


def export_errors(cfg):
    """--mode export: what core.export needs (loaded for that mode only, so --help stays light)."""
    from core.export import export_errors as errors
    return errors(cfg)


def app_errors(cfg):
    """--mode app: a --checkpoint file, when one is given (else the run folder core.app opens)."""
    return exists_errors(cfg, 'checkpoint')


def translate_errors(cfg):
    """--mode translate: --src, and --trg_domain or --ref."""
    errs = []
    if not cfg.src:
        errs.append('--mode translate needs --src IMAGE_OR_FOLDER')
    if cfg.ref is None and cfg.trg_domain is None:
        errs.append('--mode translate needs --trg_domain NAME_OR_ID (random styles) or --ref IMAGE_OR_FOLDER')
    return errs + exists_errors(cfg, 'src', 'ref')


def prepare_errors(cfg):
    """--raw_dir must be a folder; the folders that will hold the new split must be writable."""
    parents = {flag: os.path.dirname(os.path.abspath(getattr(cfg, flag)))
               for flag in ('train_img_dir', 'val_img_dir')}
    if not cfg.raw_dir:
        errs = ['--mode prepare needs --raw_dir FOLDER (one sub-folder of images per domain)']
    else:
        errs = [] if os.path.isdir(cfg.raw_dir) else [f'--raw_dir {cfg.raw_dir!r} is not a folder']
    return errs + writable_errors(parents)


# ----------------------------------------------------------------------------------------------
# Speed and precision flags on this machine
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# Output folders
# ----------------------------------------------------------------------------------------------

def folders(cfg, *flags):
    """{flag: folder} of the given folder flags (a mode's output folders)."""
    return {flag: getattr(cfg, flag) for flag in flags}


def train_outputs(cfg):
    """The folders a training run writes: checkpoints, and the sample and eval folders when it uses them."""
    return folders(cfg, 'checkpoint_dir', *(['sample_dir'] if 0 < cfg.sample_every <= cfg.total_iters else []),
                   *(['eval_dir'] if evaluates(cfg) else []))


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


def writable_errors(outputs):
    """One message per folder of {flag: folder} that cannot be written."""
    errs = []
    for flag, folder in outputs.items():
        problem = writable_problem(folder)
        if problem:
            errs.append(f'--{flag} {folder} {problem}; choose a folder you can write to')
    return errs


# ----------------------------------------------------------------------------------------------
# All of a mode's checks
# ----------------------------------------------------------------------------------------------

def check_inputs(cfg, mode, *more_errors):
    """Raise one ConfigError listing the problems of `mode` (a core.modes.Mode) with cfg: its input checks,
    its output folders and any other errors given; if there are none, remove the stale temporary files of
    its output folders."""
    outputs = mode.outputs(cfg)
    errs = mode.checks(cfg) + writable_errors(outputs) + [e for errors in more_errors for e in errors]
    if errs:
        raise ConfigError('\n'.join(errs))
    for folder in outputs.values():
        remove_stale_temp_files(folder, TEMP_DEPTH)
