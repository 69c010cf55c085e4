"""Checkpoints in the official StarGAN v2 layout, written atomically, read safely.

Per saved step, in checkpoint_dir:
  {step:06d}_nets.ckpt      {net name: state_dict} of G, F, E, D (+ patch heads/plug-ins)
  {step:06d}_nets_ema.ckpt  {net name: state_dict} of the EMA G, F, E  (what inference loads)
  {step:06d}_optims.ckpt    {net name: Adam state_dict} (+ 'step')
Each file also holds 'config', the run's resolved config as JSON text, and
'digest', a SHA-256 of everything else in the file (see payload_digest). The
official code ignores entries it does not know, so it can read our files, and
ours reads the official ones (no digest; 'module.'-prefixed keys accepted).

Integrity: a step's files are checked for NaN/inf before the first is written
(nothing is written if one holds any), and every read checks the digest and
the values again (read_checkpoint), so damaged or diverged weights are never
used without a word.

All randomness of training is derived from (seed, step), so nets + optimizers
+ step are the whole training state: resuming continues bit-exactly.
"""
import glob
import hashlib
import os
import re

import torch

from core.config import ARCH_FIELDS, NET_FIELDS, Config, arch_differences
from core.utils.fileio import ModelFileError, atomic_save, safe_load, state_dict_mismatch

KINDS = ('nets', 'nets_ema', 'optims')
KIND_LABELS = {'nets': 'weight', 'nets_ema': 'EMA weight', 'optims': 'optimizer state'}
DIGEST_KEY = 'digest'


class DamagedCheckpoint(ModelFileError):
    """A checkpoint file that cannot be used as it is: unreadable, changed since it was saved, or holding NaN/inf."""


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

    Raises one ModelFileError listing every missing net and mismatched key.
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
        raise ModelFileError(f'{path} does not match the networks built from the current flags:\n'
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


def complete_steps(checkpoint_dir):
    """Steps for which all three files exist (an interrupted save never counts), ascending."""
    steps = []
    for path in glob.glob(os.path.join(checkpoint_dir, '*_optims.ckpt')):
        match = re.fullmatch(r'(\d+)_optims\.ckpt', os.path.basename(path))
        if match and all(os.path.isfile(ckpt_path(checkpoint_dir, int(match.group(1)), k)) for k in KINDS):
            steps.append(int(match.group(1)))
    return sorted(steps)


def latest_step(checkpoint_dir):
    """Highest complete step (see complete_steps), or None."""
    steps = complete_steps(checkpoint_dir)
    return steps[-1] if steps else None


# ----------------------------------------------------------------------------------------------
# Integrity: digests and non-finite values
# ----------------------------------------------------------------------------------------------

def _feed(digest, obj):
    """Hash obj's structure and values in a canonical order (dict keys sorted, tensors as their logical bytes)."""
    if torch.is_tensor(obj):
        t = obj.detach().to('cpu').contiguous()
        digest.update(f'T{t.dtype}{tuple(t.shape)};'.encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())   # any dtype, bf16 included
    elif isinstance(obj, dict):
        digest.update(f'D{len(obj)};'.encode())
        for key in sorted(obj, key=lambda k: (type(k).__name__, str(k))):
            _feed(digest, key)
            _feed(digest, obj[key])
    elif isinstance(obj, (list, tuple)):
        digest.update(f'L{len(obj)};'.encode())
        for item in obj:
            _feed(digest, item)
    else:   # str, int, float, bool, None: repr is exact, the length prefix keeps it unambiguous
        text = repr(obj)
        digest.update(f'{type(obj).__name__}{len(text)}:{text};'.encode())


def payload_digest(payload):
    """'sha256:<hex>' of every entry of a checkpoint payload but the digest itself.

    It hashes the loaded values, not the file's bytes, so it does not depend on
    how torch.save lays out the zip archive (or on a tensor's memory format).
    """
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in payload.items() if k != DIGEST_KEY})
    return 'sha256:' + digest.hexdigest()


def named_tensors(obj, prefix=''):
    """(name, tensor) of every tensor in nested dicts and lists; names join the keys with '/'."""
    if torch.is_tensor(obj):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from named_tensors(value, f'{prefix}/{key}' if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from named_tensors(value, f'{prefix}/{i}' if prefix else str(i))


def first_nonfinite(payload):
    """Name of the first floating-point tensor of `payload` holding a NaN or an infinity, or None.

    One host sync per tensor: for saves and loads only, never on training steps.
    """
    for name, tensor in named_tensors(payload):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def read_checkpoint(path):
    """safe_load(path), refused with DamagedCheckpoint if unreadable, if its digest does not match
    its contents (official files have none), or if it holds NaN/inf."""
    if not os.path.isfile(path):
        raise ModelFileError(f'checkpoint file not found: {path}')
    try:
        payload = safe_load(path)
    except ModelFileError as err:
        raise DamagedCheckpoint(str(err)) from None
    if not isinstance(payload, dict):
        raise DamagedCheckpoint(f'{path} does not hold a dict of state_dicts; it is not a StarGAN v2 checkpoint')
    if DIGEST_KEY in payload and payload[DIGEST_KEY] != payload_digest(payload):
        raise DamagedCheckpoint(f'{path} is damaged: its contents no longer match the SHA-256 digest written '
                                f'when it was saved (its bytes changed on disk or in a copy)')
    bad = first_nonfinite(payload)
    if bad is not None:
        raise DamagedCheckpoint(f'{path} holds NaN or infinite values ({bad}): it was written by a run that '
                                f'diverged and cannot be used')
    return payload


def intact_step_before(checkpoint_dir, step, kinds=KINDS):
    """The newest complete step below `step` whose files of `kinds` all read cleanly, or None.

    Used only to explain a damaged checkpoint, so reading a few files is affordable.
    """
    for earlier in reversed([s for s in complete_steps(checkpoint_dir) if s < step]):
        try:
            for kind in kinds:
                read_checkpoint(ckpt_path(checkpoint_dir, earlier, kind))
        except ModelFileError:
            continue
        return earlier
    return None


def resume_advice(checkpoint_dir, step, kinds=KINDS):
    """What to do when step `step` of checkpoint_dir is damaged: the flag of an earlier intact step."""
    earlier = intact_step_before(checkpoint_dir, step, kinds)
    if earlier is None:
        return f'step {step} is damaged and {checkpoint_dir} holds no intact earlier step'
    return f'step {step} is damaged; the newest intact earlier step is {earlier}: pass --resume_iter {earlier}'


# ----------------------------------------------------------------------------------------------
# Training state
# ----------------------------------------------------------------------------------------------

def training_payloads(step, nets, nets_ema, optims, cfg):
    """{kind: payload} of the three files of `step`; the tensors are the live ones (not copied)."""
    config = cfg.to_json()
    return {'nets': {**{k: v.state_dict() for k, v in nets.items()}, 'config': config},
            'nets_ema': {**{k: v.state_dict() for k, v in nets_ema.items()}, 'config': config},
            'optims': {**{k: v.state_dict() for k, v in optims.items()}, 'config': config, 'step': step}}


def nonfinite_term(payloads):
    """'<what> <net>/<key>' of the first NaN/inf in the payloads of training_payloads, or None."""
    for kind in KINDS:
        bad = first_nonfinite(payloads[kind])
        if bad is not None:
            return f'{KIND_LABELS[kind]} {bad}'
    return None


def write_training_state(checkpoint_dir, step, payloads):
    """Write the three files of `step` with their digests; optims last, so a complete optims file means a
    complete step."""
    for kind in KINDS:
        payload = payloads[kind]
        atomic_save({**payload, DIGEST_KEY: payload_digest(payload)}, ckpt_path(checkpoint_dir, step, kind))


def save_training_state(checkpoint_dir, step, nets, nets_ema, optims, cfg):
    """Check the three files of `step` for NaN/inf, then write them; with one, write nothing and raise."""
    payloads = training_payloads(step, nets, nets_ema, optims, cfg)
    bad = nonfinite_term(payloads)
    if bad is not None:
        raise ModelFileError(f'not saving step {step}: the {bad} holds NaN or infinite values')
    write_training_state(checkpoint_dir, step, payloads)


def load_training_state(checkpoint_dir, step, nets, nets_ema, optims, cfg):
    """Load all three files of `step` into nets, nets_ema and optims (in place).

    Every file is checked (read_checkpoint) before anything is loaded.
    """
    payloads = {kind: read_checkpoint(ckpt_path(checkpoint_dir, step, kind)) for kind in KINDS}
    for kind, modules in (('nets', nets), ('nets_ema', nets_ema)):
        load_modules(modules, payloads[kind], ckpt_path(checkpoint_dir, step, kind), arch_hint(payloads[kind], cfg))
    path, payload = ckpt_path(checkpoint_dir, step, 'optims'), payloads['optims']
    missing = [name for name in optims if name not in payload]
    if missing:
        raise ModelFileError(f'{path} has no optimizer state for {", ".join(missing)}')
    for name, optim in optims.items():
        try:
            optim.load_state_dict(payload[name])
        except (ValueError, KeyError) as err:
            raise ModelFileError(f'{path}: optimizer state of {name} does not match its network ({err})') from None
