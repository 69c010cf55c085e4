"""Checkpoints in the official StarGAN v2 layout, written atomically, read safely.

Per saved step, in checkpoint_dir:
  {step:06d}_nets.ckpt      {net name: state_dict} of G, F, E, D (+ patch heads/plug-ins)
  {step:06d}_nets_ema.ckpt  {net name: state_dict} of the EMA G, F, E  (what inference loads)
  {step:06d}_optims.ckpt    {net name: Adam state_dict} (+ 'step')
Each file also holds 'config': the run's resolved config as JSON text. The
official code ignores entries it does not know, so it can read our files, and
ours reads the official ones (and accepts 'module.'-prefixed keys).

All randomness of training is derived from (seed, step), so nets + optimizers
+ step are the whole training state: resuming continues bit-exactly.
"""
import glob
import os
import re

from core.config import ARCH_FIELDS, NET_FIELDS, Config, arch_differences
from core.fileio import CheckpointError, atomic_save, safe_load, state_dict_mismatch

KINDS = ('nets', 'nets_ema', 'optims')


def ckpt_path(checkpoint_dir, step, kind):
    """Official file name, e.g. expr/checkpoints/010000_nets_ema.ckpt."""
    return os.path.join(checkpoint_dir, f'{step:06d}_{kind}.ckpt')


def stored_config(payload):
    """The config dict stored in a checkpoint payload, or None for official checkpoints."""
    text = payload.get('config') if isinstance(payload, dict) else None
    return Config.from_json(text) if isinstance(text, str) else None


def _strip_prefix(state_dict):
    """Accept checkpoints saved from DataParallel/DDP wrappers ('module.' prefixes)."""
    if state_dict and all(k.startswith('module.') for k in state_dict):
        return {k[len('module.'):]: v for k, v in state_dict.items()}
    return state_dict


def _describe(name, missing, unexpected, shapes, limit=8):
    parts = []
    for label, keys in (('missing', missing), ('unexpected', unexpected), ('shape mismatch', shapes)):
        if keys:
            more = f' ... and {len(keys) - limit} more' if len(keys) > limit else ''
            parts.append(f'  {name}: {label} keys: {", ".join(keys[:limit])}{more}')
    return parts


def load_modules(modules, payload, path, hint=''):
    """Strictly load payload[name] into every module of the dict `modules`.

    Raises one CheckpointError listing every missing net and mismatched key.
    """
    problems = []
    for name, module in modules.items():
        if name not in payload:
            problems.append(f'  {name}: not in the checkpoint')
            continue
        state_dict = _strip_prefix(dict(payload[name]))
        missing, unexpected, shapes = state_dict_mismatch(module.state_dict(), state_dict)
        if missing or unexpected or shapes:
            problems += _describe(name, missing, unexpected, shapes)
            continue
        module.load_state_dict(state_dict, strict=True)
    if problems:
        raise CheckpointError(f'{path} does not match the networks built from the current flags:\n'
                              + '\n'.join(problems) + (f'\n{hint}' if hint else ''))


def arch_hint(payload, cfg):
    """Explain a mismatch by the config stored in the checkpoint, if there is one."""
    stored = stored_config(payload)
    if stored is None:
        return ('This checkpoint stores no config (official layout): pass the flags it was trained '
                'with (--arch, --img_size, --num_domains, --style_dim, --latent_dim, ...).')
    fields = ARCH_FIELDS if 'discriminator' in payload else NET_FIELDS
    diff = arch_differences(stored, cfg, fields)
    if not diff:
        return ''
    return 'It was written with ' + ', '.join(f'--{k} {v[0]} (now {v[1]})' for k, v in diff.items())


def latest_step(checkpoint_dir):
    """Highest step for which all three files exist (an interrupted save never counts), or None."""
    steps = []
    for path in glob.glob(os.path.join(checkpoint_dir, '*_optims.ckpt')):
        match = re.fullmatch(r'(\d+)_optims\.ckpt', os.path.basename(path))
        if match and all(os.path.isfile(ckpt_path(checkpoint_dir, int(match.group(1)), k)) for k in KINDS):
            steps.append(int(match.group(1)))
    return max(steps) if steps else None


# ----------------------------------------------------------------------------------------------
# Training state
# ----------------------------------------------------------------------------------------------

def save_training_state(checkpoint_dir, step, nets, nets_ema, optims, cfg):
    """Write the three files of `step`; optims last, so a complete optims file means a complete step."""
    config = cfg.to_json()
    atomic_save({**{k: v.state_dict() for k, v in nets.items()}, 'config': config},
                ckpt_path(checkpoint_dir, step, 'nets'))
    atomic_save({**{k: v.state_dict() for k, v in nets_ema.items()}, 'config': config},
                ckpt_path(checkpoint_dir, step, 'nets_ema'))
    atomic_save({**{k: v.state_dict() for k, v in optims.items()}, 'config': config, 'step': step},
                ckpt_path(checkpoint_dir, step, 'optims'))


def load_training_state(checkpoint_dir, step, nets, nets_ema, optims, cfg):
    """Load all three files of `step` into nets, nets_ema and optims (in place)."""
    for kind, modules in (('nets', nets), ('nets_ema', nets_ema)):
        path = ckpt_path(checkpoint_dir, step, kind)
        payload = safe_load(path)
        load_modules(modules, payload, path, arch_hint(payload, cfg))
    path = ckpt_path(checkpoint_dir, step, 'optims')
    payload = safe_load(path)
    missing = [name for name in optims if name not in payload]
    if missing:
        raise CheckpointError(f'{path} has no optimizer state for {", ".join(missing)}')
    for name, optim in optims.items():
        try:
            optim.load_state_dict(payload[name])
        except (ValueError, KeyError) as err:
            raise CheckpointError(f'{path}: optimizer state of {name} does not match its network ({err})') from None
