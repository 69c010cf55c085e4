"""train(cfg) for the CUT family: CUT's training as released (cut_model.py, train.py), one linear loop.

One iteration:
  G(real_A [; real_B]) once -> D step: 0.5 (GAN(D(fake_B), 0) + GAN(D(real_B), 1))
  -> G step: lambda_GAN GAN(D(fake_B), 1) + the patch losses, with G, the patch heads F and any
  plug-in parameters stepped together.
Patch losses come from the shared registry (core/contrastive): the query is the
translation's encoder features, the key the source's (detached). With the
identity term (--nce_idt / --dce_idt) every loss but SRC is averaged over the
translation path (fake_B, real_A) and the identity path (idt_B, real_B), as in
CUT and Hneg_SRC; SRC stays on the translation path (Hneg_SRC). Both paths use
the same patch positions (Hneg_SRC; CUT draws new ones for the identity path).

Differences from the release, with the same mathematics:
  * the heads F are built with the networks (their widths are the tapped
    layers' channels), so the first batch is not run twice;
  * the keys reuse the encoder features of the forward pass that made the
    translation (same weights, same input) unless the input was flipped;
  * schedules are functions of the step: lr and the hDCE temperature change
    at epoch boundaries exactly as released, and resuming is bit-exact.
Shared with StarGAN v2: checkpoints (core/checkpoint.py via core/trainer.py),
the non-finite guard, logging, processes and precision.
"""
import functools
import os

import torch
import torch.nn.functional as F
from munch import Munch

from core.contrastive.objective import PatchObjective
from core.cut.data import TrainData, phase_images
from core.cut.networks import GENERATOR_BLOCKS, NLayerDiscriminator, PatchSampleF, ResnetGenerator, init_weights
from core.cut.options import X_PATH_ONLY
from core.data.images import DataError
from core.schedules import epoch_gamma_at, linear_decay_factor
from core.trainer import (StepHook, adam_settings, check_losses, frozen, host_values, load_resume_state,
                          optimize, resolve_start_step, run_folder_lock, save_checkpoint, write_run_config)
from core.utils import distributed
from core.utils.fileio import atomic_save
from core.utils.logger import RunLogger
from core.utils.seeding import STREAM_LATENT, STREAM_PATCHES, step_generator
from core.visualize import make_grid, save_grid

SAMPLE_IMAGES = 4   # test A images in the training sample grid
RELEASED_NETS = ('G', 'D', 'F')   # written also as <epoch>_net_<name>.pth, the released layout


# ----------------------------------------------------------------------------------------------
# Set-up
# ----------------------------------------------------------------------------------------------

def build_generator(cfg):
    """CUT's ResnetGenerator from --netG, --ngf, --normG, --no_dropout, --no_antialias(_up), initialised."""
    G = ResnetGenerator(cfg.input_nc, cfg.output_nc, cfg.ngf, GENERATOR_BLOCKS[cfg.netG], cfg.normG,
                        not cfg.no_dropout, not cfg.no_antialias, not cfg.no_antialias_up)
    return init_weights(G, cfg.init_type, cfg.init_gain)


def build_discriminator(cfg):
    """The PatchGAN of --netD (basic: 3 layers), --ndf, --normD, initialised."""
    n_layers = 3 if cfg.netD == 'basic' else cfg.n_layers_D
    D = NLayerDiscriminator(cfg.output_nc, cfg.ndf, n_layers, cfg.normD, not cfg.no_antialias)
    return init_weights(D, cfg.init_type, cfg.init_gain)


def path_terms(cfg):
    """(terms of the translation path, terms of the identity path): (name, weight) pairs.

    With the identity term, every loss but X_PATH_ONLY is averaged over the two paths.
    """
    if not cfg.identity:
        return cfg.patch_losses, ()
    x_terms = tuple((n, w if n in X_PATH_ONLY else w / 2) for n, w in cfg.patch_losses)
    return x_terms, tuple((n, w / 2) for n, w in cfg.patch_losses if n not in X_PATH_ONLY)


def build_objectives(cfg, G, world_size):
    """(objective of the translation path, of the identity path or None); None, None without patch losses.

    Both share the heads and the plug-in modules; the heads are PatchSampleF (the released key names).
    """
    x_terms, y_terms = path_terms(cfg)
    if not x_terms:
        return None, None
    channels = G.tap_channels(cfg.nce_layers)
    objective = PatchObjective(x_terms, cfg, channels, world_size)
    if objective.sampler is not None:
        objective.sampler = init_weights(PatchSampleF(channels, cfg.patch_dim), cfg.init_type, cfg.init_gain)
    for loss in objective.losses.values():
        if callable(getattr(loss, 'gamma', None)):   # a temperature curriculum: Single-modal's, per epoch
            loss.gamma = functools.partial(release_gamma, cfg)
    if not y_terms:
        return objective, None
    identity = PatchObjective(y_terms, cfg, channels, world_size)
    if identity.sampler is not None:
        identity.sampler = objective.sampler
    identity.losses = torch.nn.ModuleDict({name: objective.losses[name] for name, _ in y_terms})
    return objective, identity


def build_training(cfg, rt):
    """Networks (G, D, F and plug-in parameters), optimizers, objectives and scalers on rt.device."""
    torch.manual_seed(cfg.seed)   # initialisation, equal in every process
    G, D = build_generator(cfg), build_discriminator(cfg)
    objective, identity = build_objectives(cfg, G, rt.world_size)
    heads = objective.checkpoint_modules() if objective is not None else {}
    heads = {('F' if name == 'patch_sample' else name): module for name, module in heads.items()}
    nets = Munch(G=G, D=D, **heads)
    memory_format = torch.channels_last if rt.channels_last else torch.preserve_format
    for net in nets.values():
        net.to(rt.device, memory_format=memory_format)
    for obj in (objective, identity):
        if obj is not None:
            obj.to(rt.device)
    optims = Munch({name: torch.optim.Adam(net.parameters(), **adam_settings(cfg, name)) for name, net in nets.items()})
    scalers = (Munch(d=torch.amp.GradScaler(rt.device.type), g=torch.amp.GradScaler(rt.device.type))
               if rt.amp_dtype == torch.float16 else Munch(d=None, g=None))
    # CUT keeps no moving average: the inference file (nets_ema) holds the trained generator itself.
    return Munch(nets=nets, nets_ema=Munch(G=G), optims=optims, objective=objective, identity=identity, rt=rt,
                 scalers=scalers, head_names=list(heads))


# ----------------------------------------------------------------------------------------------
# Schedules (pure functions of the step)
# ----------------------------------------------------------------------------------------------

def epoch_of(cfg, step):
    """1-based epoch of the 0-based step."""
    return step // cfg.steps_per_epoch + 1


def lr_at(cfg, step):
    """--lr_policy linear: --lr for --n_epochs, then linear decay over --n_epochs_decay, per epoch."""
    return cfg.lr * linear_decay_factor(epoch_of(cfg, step), cfg.n_epochs, cfg.n_epochs_decay)


def release_gamma(cfg, step):
    """hDCE temperature of Single-modal: per epoch, --HDCE_gamma -> --HDCE_gamma_min, --step_gamma."""
    return epoch_gamma_at(epoch_of(cfg, step), cfg.HDCE_gamma, cfg.HDCE_gamma_min, cfg.n_epochs + cfg.n_epochs_decay,
                          cfg.use_curriculum, cfg.step_gamma_epoch if cfg.step_gamma else None)


# ----------------------------------------------------------------------------------------------
# One iteration
# ----------------------------------------------------------------------------------------------

def gan_loss(logits, real, mode):
    """--gan_mode on D's patch logits (fp32): lsgan MSE to 1/0, vanilla BCE, nonsaturating softplus."""
    logits = logits.float()
    if mode == 'lsgan':
        return F.mse_loss(logits, torch.full_like(logits, float(real)))
    if mode == 'vanilla':
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))
    return F.softplus(-logits if real else logits).flatten(1).mean(1).mean()


def flip_coin(cfg, step):
    """FastCUT's flip equivariance: True when this iteration flips its inputs (one coin per iteration)."""
    if not cfg.flip_equivariance:
        return False
    return bool(torch.rand((), generator=step_generator(cfg.seed, step, STREAM_LATENT)) < 0.5)


def patch_losses(run, cfg, fake, real, feats_real, flipped, step):
    """Weighted patch losses of the translation (and identity) path and their stats.

    fake: (b or 2b, 3, S, S) [fake_B; idt_B]; real: [real_A; real_B] unflipped;
    feats_real: the encoder taps of the forward pass, usable as keys unless flipped.
    """
    G, taps, b = run.nets.G, cfg.nce_layers, run.batch_part
    feats_q = G.encode(fake, taps)
    if flipped:   # the query maps go back to the source's orientation; the keys are of the unflipped source
        feats_q = [f.flip(3) for f in feats_q]
        fake = fake.flip(3)
        with torch.no_grad():
            feats_real = G.encode(real, taps)
    feats_k = [f.detach() for f in feats_real]
    loss, stats = 0.0, {}
    for objective, rows, prefix in ((run.objective, slice(0, b), ''), (run.identity, slice(b, 2 * b), 'idt/')):
        if objective is None:
            continue
        gen = step_generator(cfg.seed, step, STREAM_PATCHES, fake.device)   # the same positions on both paths
        value, path_stats = objective([f[rows] for f in feats_q], [f[rows] for f in feats_k], fake[rows],
                                      real[rows], step, gen)
        loss = loss + value
        stats.update({f'G/{prefix}{k}': v for k, v in path_stats.items()})
    return loss, stats


def train_step(run, cfg, batch, step):
    """One CUT iteration on this process's part of the batch; returns the named losses (detached)."""
    nets, optims, rt, scalers = run.nets, run.optims, run.rt, run.scalers
    G, D = nets.G, nets.D
    lr = lr_at(cfg, step)
    for optim in optims.values():
        for group in optim.param_groups:
            group['lr'] = lr
    real_A, real_B = rt.images(batch.real_A), rt.images(batch.real_B)
    real = torch.cat([real_A, real_B]) if cfg.identity else real_A
    flipped = flip_coin(cfg, step)
    taps = cfg.nce_layers if run.objective is not None else ()

    # --- One generator pass: fake_B (and idt_B) with the source's encoder taps.
    with rt.autocast():
        fake, feats_real = G.forward_with_taps(real.flip(3) if flipped else real, taps)
    fake_B = fake[:run.batch_part]

    # --- D step: LSGAN, 0.5 (fake + real).
    with rt.autocast():
        logits_fake, logits_real = D(fake_B.detach()), D(real_B)
    loss_fake, loss_real = gan_loss(logits_fake, False, cfg.gan_mode), gan_loss(logits_real, True, cfg.gan_mode)
    optimize(0.5 * (loss_fake + loss_real), [optims.D], scalers.d)
    stats = {'D/fake': loss_fake.detach(), 'D/real': loss_real.detach()}

    # --- G step: adversarial term and patch losses; G, F and plug-in heads learn.
    with frozen(D), rt.autocast():
        loss_gan = gan_loss(D(fake_B), True, cfg.gan_mode)
        loss = cfg.lambda_GAN * loss_gan
        if run.objective is not None:
            loss_patch, patch_stats = patch_losses(run, cfg, fake, real, feats_real, flipped, step)
            loss = loss + loss_patch
            stats.update(patch_stats)
    optimize(loss, [optims.G] + [optims[n] for n in run.head_names], scalers.g)
    stats['G/GAN'] = loss_gan.detach()
    return stats


# ----------------------------------------------------------------------------------------------
# Saving and samples
# ----------------------------------------------------------------------------------------------

def save_released(run, cfg, step):
    """G, D and F as plain state_dicts in the released layout: latest_net_<X>.pth, and <epoch>_net_<X>.pth
    at the end of every --save_epoch_freq-th epoch (readable by the released code)."""
    epoch, end_of_epoch = divmod(step, cfg.steps_per_epoch)
    suffixes = ['latest'] + ([str(epoch)] if end_of_epoch == 0 and epoch % cfg.save_epoch_freq == 0 else [])
    for name in RELEASED_NETS:
        if name in run.nets:
            state = {k: v.detach().cpu() for k, v in run.nets[name].state_dict().items()}
            for suffix in suffixes:
                atomic_save(state, os.path.join(cfg.checkpoint_dir, f'{suffix}_net_{name}.pth'))


def save_step(cfg, done):
    """True when step `done` (1-based) is saved: every --save_latest_freq images, at every
    --save_epoch_freq-th epoch end, and at the end."""
    every_images = max(1, cfg.save_latest_freq // cfg.batch_size)
    every_epochs = cfg.save_epoch_freq * cfg.steps_per_epoch
    return done % every_images == 0 or done % every_epochs == 0 or done == cfg.total_iters


def sample_batch(cfg, device):
    """The first SAMPLE_IMAGES test A images (train A when there is no test set): (n, 3, S, S)."""
    try:
        x, _ = phase_images(cfg, 'test', SAMPLE_IMAGES)
    except DataError:
        x, _ = phase_images(cfg, 'train', SAMPLE_IMAGES)
    return x.to(device)


@torch.no_grad()
def sample_grid(G, x):
    """Two rows: the inputs and their translations, [0, 1]."""
    return make_grid(torch.cat([x, G(x)]), x.shape[0])


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------

def train(cfg, hook=None):
    """Train the CUT family for (--n_epochs + --n_epochs_decay) epochs, or resume (--continue_train).

    Under torchrun every process runs this on its part of each batch; rank 0 alone writes files.
    """
    rt = distributed.setup(cfg)
    try:
        with run_folder_lock(cfg, rt):   # one run per folder, as StarGAN v2's
            return _train(cfg, rt, hook or StepHook())
    finally:
        distributed.shutdown()


def _train(cfg, rt, hook):
    device, writer = rt.device, rt.rank == 0
    start = resolve_start_step(cfg)
    data = TrainData(cfg, start, device, rt.rank, rt.world_size)
    total = (cfg.n_epochs + cfg.n_epochs_decay) * data.steps_per_epoch
    cfg = cfg.replace(total_iters=total, steps_per_epoch=data.steps_per_epoch).with_facts(domain_names=tuple(data.names))
    run = build_training(cfg, rt)
    run.batch_part = cfg.batch_size // rt.world_size
    if start > 0:
        load_resume_state(run, cfg, start)
    if start >= total:
        data.close()
        if writer:
            print(f'train: nothing to do: resuming at step {start} of {total}')
        return start
    distributed.broadcast_modules(list(run.nets.values()))
    if writer:
        os.makedirs(cfg.sample_dir, exist_ok=True)
        write_run_config(cfg)
        print(f'train: CUT, {" + ".join(f"{n}={w:g}" for n, w in cfg.patch_losses) or "no patch loss"}'
              f'{" with the identity term" if cfg.identity else ""}; {data.steps_per_epoch} steps per epoch, '
              f'{total} in all; {rt.world_size} process(es) on {device.type}')
    val = sample_batch(cfg, device) if writer else None
    logger = RunLogger(cfg.checkpoint_dir, start, total) if writer else None
    saved = start
    try:
        hook.start(run, device)
        for step in range(start, total):
            batch = next(data)
            hook.before(step)
            stats = train_step(run, cfg, batch, step)
            hook.after(step, stats)
            done = step + 1
            if writer:
                logger.advance()
            if done % cfg.print_every == 0:
                values = host_values(distributed.mean_over_processes({**stats, 'lr': lr_at(cfg, step)}))
                check_losses(run, cfg, done, values, saved)
                if writer:
                    logger.log(done, values)
            if writer and done % cfg.sample_every == 0:
                grid = sample_grid(run.nets.G, val)
                save_grid(grid, os.path.join(cfg.sample_dir, f'{done:06d}.jpg'))
                logger.images(done, {'translation': grid})
            if save_step(cfg, done):
                save_checkpoint(run, cfg, done, writer, saved)
                if writer:
                    save_released(run, cfg, done)
                saved = done
        distributed.barrier()
    finally:
        data.close()
        if writer:
            logger.close()
    return total
