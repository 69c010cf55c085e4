"""train(cfg): StarGAN v2 training with the plug-in semantic relation losses.

One iteration, in upstream order:
  D step (latent) -> D step (reference) -> G step (latent) -> G step (reference) -> EMA.
Two things differ from upstream for speed, with the same mathematics:
  * The latent-guided fake G(x_real, F(z)) is computed once, with gradients,
    and serves both the D latent step (detached) and the G latent step: G and
    F do not change in between. The D reference step decodes from the same
    encoding of x_real. So the encoder runs twice per G step (x_real, x_fake).
  * Networks that a step does not update are frozen (requires_grad False), so
    no weight gradients are computed for them only to be thrown away.
"""
import contextlib
import os

import torch
from munch import Munch

from core.checkpoint import (CheckpointError, atomic_write_text, latest_step, load_training_state,
                             save_training_state)
from core.contrastive.objective import build_objective
from core.data_loader import load_val_batch, make_train_iterator
from core.device import resolve_device
from core.logger import RunLogger
from core.losses import GInputs, compute_d_loss, compute_g_loss
from core.model import EMA_NETS, build_nets
from core.schedules import gamma_at, lambda_ds_at
from core.seeding import STREAM_LATENT, STREAM_PATCHES, step_generator
from core.visualize import debug_image


# ----------------------------------------------------------------------------------------------
# Set-up
# ----------------------------------------------------------------------------------------------

def build_training(cfg, device):
    """Networks, EMA copies, patch objective and optimizers, all built eagerly on `device`."""
    torch.manual_seed(cfg.seed)   # network initialisation
    nets, nets_ema = build_nets(cfg)
    objective = build_objective(cfg, nets.generator)
    if objective is not None:
        nets.update(objective.checkpoint_modules())
        objective.to(device)
    for net in list(nets.values()) + list(nets_ema.values()):
        net.to(device)
    optims = Munch({name: torch.optim.Adam(net.parameters(),
                                           lr=cfg.f_lr if name == 'mapping_network' else cfg.lr,
                                           betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
                    for name, net in nets.items()})
    return Munch(nets=nets, nets_ema=nets_ema, optims=optims, objective=objective,
                 head_names=[n for n in nets if n not in ('generator', 'mapping_network',
                                                         'style_encoder', 'discriminator')])


def resolve_start_step(cfg):
    """The step to resume from (0 for a fresh run); refuses to overwrite another run's checkpoints."""
    latest = latest_step(cfg.checkpoint_dir) if os.path.isdir(cfg.checkpoint_dir) else None
    if cfg.resume_iter == 'latest':
        return latest or 0
    if cfg.resume_iter == 0 and latest:
        raise CheckpointError(
            f'{cfg.checkpoint_dir} already holds checkpoints up to step {latest}; pass --resume_iter latest '
            f'(or --resume_iter {latest}) to continue that run, or choose another --checkpoint_dir')
    return cfg.resume_iter


# ----------------------------------------------------------------------------------------------
# One iteration
# ----------------------------------------------------------------------------------------------

@contextlib.contextmanager
def frozen(*modules):
    """Temporarily compute no weight gradients for `modules` (input gradients still flow).

    Each parameter gets its own flag back afterwards, so parameters that are
    always frozen stay frozen.
    """
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def optimize(loss, optims):
    """Zero the grads of `optims`, back-propagate, step them."""
    for optim in optims:
        optim.zero_grad(set_to_none=True)
    loss.backward()
    for optim in optims:
        optim.step()


@torch.no_grad()
def update_ema(nets, nets_ema, beta):
    """ema <- beta * ema + (1 - beta) * online, for the parameters of G, F and E."""
    for name in EMA_NETS:
        torch._foreach_lerp_(list(nets_ema[name].parameters()), list(nets[name].parameters()), 1 - beta)


def draw_latents(cfg, step, batch_size, device):
    """z_trg, z_trg2 ~ N(0, I) from the step's own stream: (B, latent_dim) each."""
    gen = step_generator(cfg.seed, step, STREAM_LATENT)
    z = torch.randn(2, batch_size, cfg.latent_dim, generator=gen)
    return z[0].to(device, non_blocking=True), z[1].to(device, non_blocking=True)


def train_step(run, cfg, batch, step, device):
    """One StarGAN v2 iteration; returns the named losses as detached tensors."""
    nets, optims, objective = run.nets, run.optims, run.objective
    G, F, E, D = nets.generator, nets.mapping_network, nets.style_encoder, nets.discriminator
    heads = [nets[n] for n in run.head_names]
    x_real, y_org = batch.x_src, batch.y_src
    x_ref, x_ref2, y_trg = batch.x_ref, batch.x_ref2, batch.y_ref
    z_trg, z_trg2 = draw_latents(cfg, step, x_real.size(0), device)
    patch_gen = step_generator(cfg.seed, step, STREAM_PATCHES, device) if objective is not None else None
    taps = cfg.nce_layers if objective is not None else ()
    lambda_ds = lambda_ds_at(step, cfg.lambda_ds, cfg.ds_iter)
    stats = {}

    # --- Latent-guided fake, shared by the D latent step (detached) and the G latent step.
    enc_real = G.run_encoder(x_real, taps)
    s_trg = F(z_trg, y_trg)
    x_fake = G.run_decoder(enc_real, s_trg)

    # --- D step, latent-guided fakes.
    d_loss, d_stats = compute_d_loss(D, x_real, y_org, x_fake, y_trg, cfg.lambda_reg)
    optimize(d_loss, [optims.discriminator])
    stats.update({f'D/latent/{k}': v for k, v in d_stats.items()})

    # --- D step, reference-guided fakes (G unchanged: decode the same encoding).
    with torch.no_grad():
        x_fake_ref = G.run_decoder(enc_real, E(x_ref, y_trg))
    d_loss, d_stats = compute_d_loss(D, x_real, y_org, x_fake_ref, y_trg, cfg.lambda_reg)
    optimize(d_loss, [optims.discriminator])
    stats.update({f'D/ref/{k}': v for k, v in d_stats.items()})

    # --- G step, latent-guided: G, F, E and the patch heads learn.
    with frozen(D):
        with torch.no_grad():
            s_trg2 = F(z_trg2, y_trg)
        inp = GInputs(x_real, y_org, y_trg, s_trg, s_trg2, enc_real, x_fake)
        g_loss, g_stats = compute_g_loss(nets, objective, inp, cfg, lambda_ds, step, patch_gen)
        optimize(g_loss, [optims.generator, optims.mapping_network, optims.style_encoder]
                 + [optims[n] for n in run.head_names])
    stats.update({f'G/latent/{k}': v for k, v in g_stats.items()})

    # --- G step, reference-guided: only G learns (and the heads, unless --patch_head_update latent).
    still = [D, F, E] + (heads if cfg.patch_head_update == 'latent' else [])
    with frozen(*still):
        with torch.no_grad():
            s_trg = E(x_ref, y_trg)
            s_trg2 = E(x_ref2, y_trg)
        enc_real = G.run_encoder(x_real, taps)
        x_fake = G.run_decoder(enc_real, s_trg)
        inp = GInputs(x_real, y_org, y_trg, s_trg, s_trg2, enc_real, x_fake)
        g_loss, g_stats = compute_g_loss(nets, objective, inp, cfg, lambda_ds, step, patch_gen)
        stepped = [] if cfg.patch_head_update == 'latent' else [optims[n] for n in run.head_names]
        optimize(g_loss, [optims.generator] + stepped)
    stats.update({f'G/ref/{k}': v for k, v in g_stats.items()})

    # --- Exponential moving average of G, F, E.
    update_ema(nets, run.nets_ema, cfg.ema_beta)
    return stats


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------

def _every(step, period):
    return period > 0 and step % period == 0


def schedule_stats(cfg, step):
    """Scalars of the schedules at `step`, logged beside the losses."""
    stats = {'lambda_ds': lambda_ds_at(step, cfg.lambda_ds, cfg.ds_iter)}
    if any(name == 'hdce' for name, _ in cfg.patch_losses):
        stats['gamma'] = gamma_at(step, cfg.gamma_start, cfg.gamma_end, cfg.total_iters, cfg.use_curriculum)
    return stats


class StepHook:
    """Callbacks of train(); this base class does nothing.

    start(run, device) runs once before the first iteration, with everything
    built and loaded; before(step) once the step's batch is fetched; after(step,
    stats) right after train_step, before logging and saving. stats holds
    device tensors: reading them waits for the device, so a hook that does not
    need the values should not touch them.
    """

    def start(self, run, device):
        pass

    def before(self, step):
        pass

    def after(self, step, stats):
        pass


def train(cfg, hook=None):
    """Train from scratch or resume (--resume_iter N | latest) until --total_iters.

    hook: an optional StepHook called around every iteration (bench/ablation.py times the steps).
    """
    hook = hook or StepHook()
    device = resolve_device(cfg.device)
    start = resolve_start_step(cfg)
    run = build_training(cfg, device)
    if start > 0:
        load_training_state(cfg.checkpoint_dir, start, run.nets, run.nets_ema, run.optims, cfg)
    os.makedirs(cfg.checkpoint_dir, exist_ok=True)
    atomic_write_text(os.path.join(cfg.checkpoint_dir, 'config.json'), cfg.to_json() + '\n')
    if start >= cfg.total_iters:
        return start
    val = load_val_batch(cfg, device)
    batches = make_train_iterator(cfg, start, device)
    logger = RunLogger(cfg.checkpoint_dir, start, cfg.total_iters)
    saved = start
    try:
        hook.start(run, device)
        for step in range(start, cfg.total_iters):
            batch = next(batches)
            hook.before(step)
            stats = train_step(run, cfg, batch, step, device)
            hook.after(step, stats)
            done = step + 1   # files and logs count completed iterations, as upstream
            logger.advance()
            if _every(done, cfg.print_every):
                logger.log(done, {**stats, **schedule_stats(cfg, step)})
            if _every(done, cfg.sample_every):
                logger.images(done, debug_image(run.nets_ema, cfg, val, done, device))
            if _every(done, cfg.save_every):
                save_training_state(cfg.checkpoint_dir, done, run.nets, run.nets_ema, run.optims, cfg)
                saved = done
            if _every(done, cfg.eval_every):
                from metrics.eval import evaluate_nets   # the metric networks load only when used
                logger.log(done, evaluate_nets(run.nets_ema, cfg, done, device))
        if saved != cfg.total_iters:
            save_training_state(cfg.checkpoint_dir, cfg.total_iters, run.nets, run.nets_ema, run.optims, cfg)
    finally:
        batches.close()
        logger.close()
    return cfg.total_iters
