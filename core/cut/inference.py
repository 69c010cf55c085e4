"""The CUT family's generator files: <epoch>_net_G.pth of a run (ours or the release's), loaded strictly.

The model is checkpoints_dir/name/<epoch>_net_G.pth (--epoch latest, best, 5,
...), a plain state_dict as the release saves it and as this family's
training writes it beside its checkpoints. Network flags come from the
command line; the residual-block count (--netG) and the width (--ngf) a
file holds are read from its keys where that helps a message. The Python
API (core.cut.translator) and the benchmarks load through here; --mode
translate is core/cut/translate.py.
"""
import re

import torch

from core.checkpoint import DamagedCheckpoint, first_bad_tensor, load_modules
from core.cut.networks import GENERATOR_BLOCKS
from core.cut.options import generator_path
from core.cut.trainer import build_generator
from core.utils.fileio import ModelFileError, safe_load


def stored_netG(state, default):
    """The --netG whose residual-block count the state_dict has (its model.<i>.conv_block keys), else default.

    The default --netG follows --crop_size; a released resnet_9blocks model translated at another
    size keeps its 9 blocks.
    """
    blocks = {m.group(1) for k in state for m in [re.match(r'(?:module\.)?model\.(\d+)\.conv_block\.', k)] if m}
    return next((name for name, n in GENERATOR_BLOCKS.items() if n == len(blocks)), default)


FLAGS_HINT = ('Pass the flags the model was trained with (--netG, --ngf, --normG, --no_antialias, '
              '--no_antialias_up, --no_dropout).')


def stored_ngf(state):
    """The generator width (--ngf) of a state_dict: the output channels of its first convolution, or None."""
    weight = state.get('model.1.weight', state.get('module.model.1.weight'))
    return int(weight.shape[0]) if torch.is_tensor(weight) and weight.dim() == 4 else None


def load_generator(cfg, device, hint=FLAGS_HINT):
    """(the generator of generator_path(cfg), strictly loaded, in eval mode on `device`; cfg with the --netG
    it was built with). hint: what to do when the file does not fit the flags."""
    path = generator_path(cfg)
    state = safe_load(path)
    if not isinstance(state, dict):
        raise DamagedCheckpoint(f'{path} does not hold a state_dict')
    bad = first_bad_tensor(state)
    if bad is not None:
        raise DamagedCheckpoint(f'{path} holds {bad[1]} ({bad[0]}); it cannot be used')
    if 'netG' not in cfg.facts.explicit_flags:
        cfg = cfg.replace(netG=stored_netG(state, cfg.netG))
    mismatch = f'{path} does not match the networks built from the current flags'
    width = stored_ngf(state)
    if width is not None and width != cfg.ngf:   # the usual mistake, said plainly
        raise ModelFileError(f'{mismatch}: its generator has width {width} (ngf), not {cfg.ngf}. {hint}')
    G = build_generator(cfg)
    try:
        load_modules({'G': G}, {'G': state}, path, hint)
    except ModelFileError as err:   # one line: the first keys that differ, then the hint
        raise ModelFileError(' '.join(line.strip() for line in str(err).splitlines())) from None
    return G.to(device).eval(), cfg
