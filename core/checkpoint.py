"""Checkpoints in the official StarGAN v2 layout, written atomically, read safely.

Per saved step, in checkpoint_dir:
  {step:06d}_nets.ckpt      {net name: state_dict} of G, F, E, D (+ patch heads/plug-ins)
  {step:06d}_nets_ema.ckpt  {net name: state_dict} of the EMA G, F, E  (what inference loads)
  {step:06d}_optims.ckpt    {net name: Adam state_dict} (+ 'step')
Each file also holds 'config', the run's resolved flags as JSON text, 'run',
the run's facts (core.runconfig.RunFacts) as JSON text, and 'digest', a
SHA-256 of everything else in the file (see payload_digest). The
official code ignores entries it does not know, so it can read our files, and
ours reads the official ones (no digest; 'module.'-prefixed keys accepted).

Integrity: a step's files are checked for NaN/inf and for absurd magnitudes
(MAX_MAGNITUDE) before the first is written (nothing is written if one holds
any), and every read checks the digest and the values again (read_checkpoint),
so damaged or diverged weights are never used without a word.

All randomness of training is derived from (seed, step), so nets + optimizers
+ step are the whole training state: resuming continues bit-exactly.
"""
import glob
import hashlib
import math
import os
import re

import torch

from core.runconfig import ARCH_FIELDS, NET_FIELDS, arch_differences, read_config
from core.utils.fileio import (ModelFileError, atomic_save, check_checkpoint_file, remove_quietly, safe_load,
                              state_dict_mismatch)

KINDS = ('nets', 'nets_ema', 'optims')
KIND_LABELS = {'nets': 'weight', 'nets_ema': 'EMA weight', 'optims': 'optimizer state'}
DIGEST_KEY = 'digest'


class DamagedCheckpoint(ModelFileError):
    """A checkpoint file that cannot be used as it is: unreadable, changed since it was saved, or holding NaN/inf."""


def ckpt_path(checkpoint_dir, step, kind):
    """Official file name, e.g. expr/checkpoints/010000_nets_ema.ckpt."""
    return os.path.join(checkpoint_dir, f'{step:06d}_{kind}.ckpt')


def stored_config(payload):
    """The Config stored in a checkpoint payload, with its RunFacts, or None for official checkpoints.

    Files of the earlier layout hold the facts inside the config (core.runconfig.read_config).
    """
    text = payload.get('config') if isinstance(payload, dict) else None
    if not isinstance(text, str):
        return None
    run = payload.get('run')
    return read_config(text, run if isinstance(run, str) else None)


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


# No healthy network comes near this |value|. Measured: the weights of G, F, E, D and the patch heads stay
# below 1.5 at initialisation (He init, every --arch) and after 50 demo-preset steps (1.2). A value beyond
# the bound means an update blew up (one step at --f_lr 1e30 leaves F's weights at 1e30: finite, and the
# images it makes are black or NaN). Adam's moments are checked for NaN/inf only: its step divides the
# first by the root of the second, so a gradient spike cannot blow the weights up through them, and
# healthy runs do have huge ones (the CUT family's patch heads start at gain 0.02 with zero biases, and
# the normalisation of their tiny outputs gives bias gradients up to 5e5 in the first step, measured).
MAX_MAGNITUDE = 1e6
_UNBOUNDED = ('step', 'exp_avg', 'exp_avg_sq')   # Adam's step count and moments: NaN/inf only


def _limit(name):
    return math.inf if name.rsplit('/', 1)[-1] in _UNBOUNDED else MAX_MAGNITUDE


def tensor_problem(name, tensor):
    """What is wrong with the values of a named tensor ('NaN or infinite values', 'values up to ...'), or None.

    One host sync for a sound tensor: for saves and loads only, never on training steps.
    """
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return None
    limit = _limit(name)
    largest = tensor.detach().abs().amax()   # NaN if any is NaN, inf if any is infinite
    if bool(torch.isfinite(largest) & (largest <= limit)):
        return None
    if not bool(torch.isfinite(tensor).all()):
        return 'NaN or infinite values'
    return f'values up to {float(largest):.3g} (a healthy network stays far below {limit:g})'


def first_bad_tensor(payload):
    """(name, problem) of the first floating-point tensor of `payload` with NaN/inf or an absurd magnitude,
    or None (see tensor_problem)."""
    for name, tensor in named_tensors(payload):
        problem = tensor_problem(name, tensor)
        if problem is not None:
            return name, problem
    return None


def read_checkpoint(path):
    """safe_load(path), refused with DamagedCheckpoint if unreadable, if its digest does not match
    its contents (official files have none), or if it holds NaN/inf or absurd magnitudes (tensor_problem)."""
    check_checkpoint_file(path)
    try:
        payload = safe_load(path)
    except ModelFileError as err:
        raise DamagedCheckpoint(str(err)) from None
    if not isinstance(payload, dict):
        raise DamagedCheckpoint(f'{path} does not hold a dict of state_dicts; it is not a StarGAN v2 checkpoint')
    if DIGEST_KEY in payload and payload[DIGEST_KEY] != payload_digest(payload):
        raise DamagedCheckpoint(f'{path} is damaged: its contents no longer match the SHA-256 digest written '
                                f'when it was saved (its bytes changed on disk or in a copy)')
    bad = first_bad_tensor(payload)
    if bad is not None:
        raise DamagedCheckpoint(f'{path} holds {bad[1]} ({bad[0]}): it was written by a run that '
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
    stored = {'config': cfg.to_json(), 'run': cfg.facts.to_json()}
    return {'nets': {**{k: v.state_dict() for k, v in nets.items()}, **stored},
            'nets_ema': {**{k: v.state_dict() for k, v in nets_ema.items()}, **stored},
            'optims': {**{k: v.state_dict() for k, v in optims.items()}, **stored, 'step': step}}


def state_problem(payloads):
    """'<what> <net>/<key> holds <problem>' of the first bad tensor in the payloads of training_payloads, or None."""
    for kind in KINDS:
        bad = first_bad_tensor(payloads[kind])
        if bad is not None:
            return f'{KIND_LABELS[kind]} {bad[0]} holds {bad[1]}'
    return None


def lr_flag(term):
    """The learning-rate flag of the network a state_problem names: --f_lr for F, --lr for the others."""
    return '--f_lr' if 'mapping_network/' in term else '--lr'


def write_training_state(checkpoint_dir, step, payloads):
    """Write the three files of `step` with their digests; optims last, so a complete optims file means a
    complete step. If one cannot be written, those already written are removed (a full disk gets their
    space back) and the error is raised."""
    written = []
    try:
        for kind in KINDS:
            payload = payloads[kind]
            written.append(ckpt_path(checkpoint_dir, step, kind))
            atomic_save({**payload, DIGEST_KEY: payload_digest(payload)}, written[-1])
    except BaseException:
        for path in written[:-1]:
            remove_quietly(path)
        raise


def save_training_state(checkpoint_dir, step, nets, nets_ema, optims, cfg):
    """Check the three files of `step` (state_problem), then write them; with a problem, write nothing and raise."""
    payloads = training_payloads(step, nets, nets_ema, optims, cfg)
    bad = state_problem(payloads)
    if bad is not None:
        raise ModelFileError(f'not saving step {step}: the {bad}')
    write_training_state(checkpoint_dir, step, payloads)


def check_domains(payload, cfg, path):
    """Refuse to resume a run on domains other than its own (names and order: domain ids are positions).

    The check sampling makes of --src_dir/--ref_dir: the training folders must be named after the
    domains stored in the checkpoint, so that no network output is relabelled silently.
    """
    stored = stored_config(payload)
    names = stored.facts.domain_names if stored is not None else None
    current = cfg.facts.domain_names
    if names and current and tuple(names) != tuple(current):
        raise ModelFileError(f'--train_img_dir {cfg.train_img_dir} has the domain folders '
                              f'{", ".join(current)} but the run being resumed ({path}) was trained on '
                              f'{", ".join(names)}; name the sub-folders after the run\'s domains, or train a '
                              f'new run in another --checkpoint_dir')


def load_training_state(checkpoint_dir, step, nets, nets_ema, optims, cfg):
    """Load all three files of `step` into nets, nets_ema and optims (in place).

    Every file is checked (read_checkpoint) before anything is loaded.
    """
    payloads = {kind: read_checkpoint(ckpt_path(checkpoint_dir, step, kind)) for kind in KINDS}
    check_domains(payloads['nets'], cfg, ckpt_path(checkpoint_dir, step, 'nets'))
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
