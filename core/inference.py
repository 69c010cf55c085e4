"""Using a trained model: loading it once per run, and the no-grad translation primitives
shared by debug images, sampling, video and evaluation.

The primitives take the specific networks and tensors they need and return
tensors; writing files is the caller's business.
"""
import os
import re
from typing import NamedTuple, Optional

import torch
from munch import Munch
from torch.utils.data import DataLoader

from core.checkpoint import (DamagedCheckpoint, arch_hint, ckpt_path, latest_step, load_modules, read_checkpoint,
                             resume_advice, stored_config)
from core.runconfig import Config, NET_FIELDS
from core.utils.errors import UserError
from core.utils.fileio import ModelFileError
from core.model import EMA_NETS, build_nets
from core.utils.seeding import STREAM_SAMPLE, step_generator

# Purposes within STREAM_SAMPLE (sample, translate, the Python API): each draws from its own generator.
PURPOSE_Z = 0           # latent codes: style k of a seed is the k-th draw
PURPOSE_AVERAGE = 1     # z averaged into the truncation centres

# Generated images live in [-1, 1], but G's last layer is unbounded and overshoots: measured |x_fake| up to
# 8.4 (untrained G of every --arch at 32 and 64 px, and the demo preset after 50 steps, over 64 random
# and every reference style). Far beyond that the weights blew up, and the clamped images are black or
# blank (one step at --f_lr 1e30 gives values of 1e30 and more, or NaN).
MAX_GENERATED = 1e3


class GeneratedError(UserError):
    """A model whose outputs are NaN, infinite or absurdly large: its weights blew up in training."""


def check_generated(x_fake, source):
    """Raise GeneratedError naming `source` (the checkpoint) unless every value of x_fake is finite and
    smaller than MAX_GENERATED in magnitude.

    One reduction and one host sync: call it once per generated batch, before anything is written.
    """
    largest = x_fake.detach().abs().amax()   # NaN if any value is NaN, inf if any is infinite
    if bool(torch.isfinite(largest) & (largest < MAX_GENERATED)):
        return
    what = ('NaN or infinite values' if not bool(torch.isfinite(largest))
            else f'values up to {float(largest):.3g} (images lie in [-1, 1])')
    raise GeneratedError(f'the model of {source} generates {what}: its weights blew up in training, and its '
                         f'images would be black or blank; use an earlier checkpoint of the run')


@torch.no_grad()
def all_domain_styles(mapping_network, z):
    """Style codes of every domain for each z: (N, latent_dim) -> (N, num_domains, style_dim)."""
    return mapping_network.all_styles(z)


@torch.no_grad()
def average_styles(mapping_network, latent_dim, num=10000, generator=None, device='cpu', chunk=2500):
    """Mean style of every domain over `num` random z: (num_domains, style_dim).

    This is the centre of the truncation trick (psi < 1), as upstream.
    """
    total = 0
    for start in range(0, num, chunk):
        z = torch.randn(min(chunk, num - start), latent_dim, generator=generator).to(device)
        total = total + all_domain_styles(mapping_network, z).sum(dim=0)   # (num_domains, style_dim)
    return total / num


def draw_latents(seed, num, latent_dim):
    """The first `num` latent codes of `seed`, drawn on the CPU: (num, 1, latent_dim).

    One draw per code, so the k-th code does not depend on how many are drawn,
    and equal seeds give equal codes on every device.
    """
    gen = step_generator(seed, PURPOSE_Z, STREAM_SAMPLE)
    return torch.stack([torch.randn(1, latent_dim, generator=gen) for _ in range(num)])


def domain_averages(mapping_network, latent_dim, seed, device):
    """Truncation centres of `seed`: the mean style of every domain, (num_domains, style_dim)."""
    gen = step_generator(seed, PURPOSE_AVERAGE, STREAM_SAMPLE)
    return average_styles(mapping_network, latent_dim, generator=gen, device=device)


def truncate(s, s_avg, psi):
    """Truncation trick: move style s toward the domain average by 1 - psi."""
    return torch.lerp(s_avg, s, psi)


@torch.no_grad()
def translate_styles(generator, x_src, styles):
    """Translate one source batch with several styles, encoding the sources only once.

    x_src (N, 3, S, S); styles: iterable of (N or 1, style_dim). Yields (N, 3, S, S) per style.
    """
    enc = generator.run_encoder(x_src)
    for s in styles:
        yield generator.run_decoder(enc, s)


@torch.no_grad()
def style_codes(style_encoder, dataset, y, batch_size, device, num_workers=0):
    """Style codes E(x, y) of every image of an EvalDataset, all taken as domain y: (N, style_dim)."""
    styles = []
    for x_ref, _, _ in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
        x_ref = x_ref.to(device)
        y_ref = torch.full((x_ref.size(0),), y, dtype=torch.long, device=device)   # (n,)
        styles.append(style_encoder(x_ref, y_ref))
    return torch.cat(styles)


# ----------------------------------------------------------------------------------------------
# Loading the EMA networks, resolved once per run
# ----------------------------------------------------------------------------------------------

class LoadedModel(NamedTuple):
    """The EMA networks of one checkpoint file, with what was resolved to load them."""
    nets: Munch            # generator, mapping_network, style_encoder (eval mode, no grad)
    cfg: Config            # the run's config with the checkpoint's architecture (and domain names in cfg.facts)
    path: str              # the file the weights came from
    step: Optional[int]    # its training step (None for a file whose name carries none)
    stored: Optional[Config] = None   # the run's config stored in the file (None for official files)


def ema_steps(checkpoint_dir):
    """Steps of checkpoint_dir that have an EMA weight file ({step:06d}_nets_ema.ckpt), ascending."""
    steps = [re.fullmatch(r'(\d+)_nets_ema\.ckpt', name) for name in os.listdir(checkpoint_dir)]
    return sorted(int(match.group(1)) for match in steps if match)


def ema_checkpoint_path(cfg):
    """(path, step) of --checkpoint FILE, or of checkpoint_dir/{resume_iter}_nets_ema.ckpt ('latest' allowed).

    'latest' is resolved here, once, so the step names the weights that are loaded.
    """
    if cfg.checkpoint:
        match = re.fullmatch(r'(\d+)_nets_ema\.ckpt', os.path.basename(cfg.checkpoint))
        return cfg.checkpoint, int(match.group(1)) if match else None
    step = cfg.resume_iter
    if step == 'latest':
        step = latest_step(cfg.checkpoint_dir) if os.path.isdir(cfg.checkpoint_dir) else None
        if step is None:
            raise ModelFileError(f'no complete checkpoint in {cfg.checkpoint_dir}; train first, or name the run: '
                                  f'its --preset (the demo\'s: --preset demo), --checkpoint_dir, or '
                                  f'--checkpoint PATH/TO/xxxxxx_nets_ema.ckpt')
    path = ckpt_path(cfg.checkpoint_dir, step, 'nets_ema')
    if not os.path.isfile(path):
        raise ModelFileError(f'checkpoint file not found: {path}; pass --resume_iter STEP (or latest) of a saved '
                              f'step in --checkpoint_dir, or --checkpoint PATH/TO/xxxxxx_nets_ema.ckpt')
    return path, step


def _note_overridden_flags(cfg, stored, path):
    """Print which architecture flags given on the command line the checkpoint's stored values replace."""
    given = set(cfg.facts.explicit_flags)
    changed = [k for k in NET_FIELDS if k in given and k in stored and stored[k] != cfg[k]]
    if changed:
        print(f'note: {path} stores its architecture, which replaces the flag(s) '
              + ', '.join(f'--{k} {cfg[k]} (the checkpoint has {stored[k]})' for k in changed))


def load_model(cfg, device, verbose=True):
    """The EMA generator, mapping network and style encoder for sampling and evaluation.

    Architecture flags come from the config stored in the checkpoint when there
    is one (a model trained here), else from the command line (official and
    Hneg_SRC checkpoints). A damaged file or one holding NaN/inf is refused,
    naming an earlier intact step of --checkpoint_dir when there is one.
    """
    path, step = ema_checkpoint_path(cfg)
    try:
        payload = read_checkpoint(path)
    except DamagedCheckpoint as err:
        if cfg.checkpoint or step is None:
            raise
        raise DamagedCheckpoint(f'{err}; {resume_advice(cfg.checkpoint_dir, step, ("nets_ema",))}') from None
    stored = stored_config(payload)
    if stored is not None:
        if verbose:
            _note_overridden_flags(cfg, stored, path)
        cfg = cfg.replace(**{k: stored[k] for k in NET_FIELDS if k in stored})
        cfg = cfg.with_facts(domain_names=stored.facts.domain_names)
    if verbose and 'discriminator' in payload:
        print(f'note: {path} holds the networks as trained, not their moving average (EMA); the modes '
              f'normally use the EMA networks of the step\'s _nets_ema.ckpt')
    nets, _ = build_nets(cfg)
    nets_ema = {name: nets[name] for name in EMA_NETS}
    load_modules(nets_ema, payload, path, arch_hint(payload, cfg))
    for net in nets_ema.values():
        net.to(device).eval().requires_grad_(False)
    if verbose:
        names = ', '.join(cfg.facts.domain_names) if cfg.facts.domain_names else 'not stored (official layout)'
        print(f'Loaded {path} ({cfg.arch}, {cfg.img_size} px, {cfg.num_domains} domains: {names})')
    return LoadedModel(Munch(nets_ema), cfg, path, step, stored)
