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
import math
import os

import torch
from munch import Munch

from core.utils import distributed
from core.checkpoint import (ModelFileError, DamagedCheckpoint, latest_step, load_training_state, lr_flag,
                             resume_advice, state_problem, training_payloads, write_training_state)
from core.runconfig import read_config
from core.utils.errors import UserError
from core.contrastive.objective import build_objective, tapped_layers
from core.data.loader import load_val_batch, make_train_iterator
from core.utils.fileio import atomic_write_text
from core.data.images import domain_tree
from core.utils.logger import RunLogger
from core.utils.runlock import RunLock, RunLocked
from core.losses import GInputs, compute_d_loss, compute_g_loss
from core.model import EMA_NETS, build_nets
from core.schedules import lambda_ds_at
from core.utils.seeding import STREAM_LATENT, STREAM_PATCHES, step_generator
from core.visualize import debug_image


# ----------------------------------------------------------------------------------------------
# Set-up
# ----------------------------------------------------------------------------------------------

def build_training(cfg, rt):
    """Networks, EMA copies, patch objective, optimizers and gradient scalers, built eagerly on rt.device.

    rt is the core.utils.distributed.Runtime of this process.
    """
    device = rt.device
    torch.manual_seed(cfg.seed)   # network initialisation, equal in every process
    nets, nets_ema = build_nets(cfg)
    objective = build_objective(cfg, nets.generator, rt.world_size)
    heads = objective.checkpoint_modules() if objective is not None else {}
    nets.update(heads)
    if objective is not None:
        objective.to(device)
    memory_format = torch.channels_last if rt.channels_last else torch.preserve_format
    for net in list(nets.values()) + list(nets_ema.values()):
        net.to(device, memory_format=memory_format)
    optims = Munch({name: torch.optim.Adam(net.parameters(), **adam_settings(cfg, name))
                    for name, net in nets.items()})
    if cfg.compile:
        compile_networks(nets)
    # fp16 only: one scaler for the discriminator's steps and one for the generator side's.
    scalers = (Munch(d=torch.amp.GradScaler(device.type), g=torch.amp.GradScaler(device.type))
               if rt.amp_dtype == torch.float16 else Munch(d=None, g=None))
    return Munch(nets=nets, nets_ema=nets_ema, optims=optims, objective=objective, rt=rt, scalers=scalers,
                 head_names=list(heads))


def adam_settings(cfg, name):
    """Adam's hyperparameters for the network `name` (F learns at --f_lr, as upstream)."""
    return dict(lr=cfg.f_lr if name == 'mapping_network' else cfg.lr, betas=(cfg.beta1, cfg.beta2),
                weight_decay=cfg.weight_decay)


def compile_networks(nets):
    """torch.compile G's encoder and decoder, F and E in place (instance attributes shadow the methods,
    so parameters, state_dict keys and checkpoints stay exactly as in eager mode).

    D stays eager: the R1 penalty differentiates D's gradient, and compiled graphs
    do not support double backward.
    """
    G = nets.generator
    G.run_encoder, G.run_decoder = torch.compile(G.run_encoder), torch.compile(G.run_decoder)
    for name in ('mapping_network', 'style_encoder'):
        nets[name].forward = torch.compile(nets[name].forward)


def resolve_start_step(cfg):
    """The step to resume from (0 for a fresh run); refuses to overwrite another run's checkpoints.

    A process that torchrun restarted after a failure (--max-restarts) resumes from the latest checkpoint.
    """
    latest = latest_step(cfg.checkpoint_dir) if os.path.isdir(cfg.checkpoint_dir) else None
    if cfg.resume_iter == 'latest' or (cfg.resume_iter == 0 and distributed.restarted()):
        return latest or 0
    if cfg.resume_iter == 0 and latest:
        raise ModelFileError(
            f'{cfg.checkpoint_dir} already holds checkpoints up to step {latest}; pass --resume_iter latest '
            f'(or --resume_iter {latest}) to continue that run, or choose another --checkpoint_dir')
    return cfg.resume_iter


def load_resume_state(run, cfg, start):
    """Load step `start` into the run; a damaged step is refused with the flag of an earlier intact one."""
    try:
        load_training_state(cfg.checkpoint_dir, start, run.nets, run.nets_ema, run.optims, cfg)
    except DamagedCheckpoint as err:
        raise DamagedCheckpoint(f'{err}; {resume_advice(cfg.checkpoint_dir, start)}') from None
    # Optimizer.load_state_dict restores the saved lr and betas: the flags of this run win, so that
    # resuming with a lower --lr (what the divergence message advises) takes effect.
    for name, optim in run.optims.items():
        for group in optim.param_groups:
            group.update(adam_settings(cfg, name))


# Fields that describe how a run was started rather than the run itself.
_INVOCATION_FIELDS = ('resume_iter', 'dry_run')


def config_changes(old_text, cfg):
    """'--field old -> new' for every flag of cfg that differs from the config JSON `old_text`
    (a config of the earlier layout is compared without the run facts it held)."""
    try:
        before = read_config(old_text)
    except (ValueError, TypeError, AttributeError):
        return ['the old file is not a readable config']
    return [f'--{k} {before.get(k)} -> {cfg.get(k)}' for k in sorted(set(before) | set(cfg))
            if k not in _INVOCATION_FIELDS and before.get(k) != cfg.get(k)]


def write_run_config(cfg):
    """Write checkpoint_dir/config.json (the flags), first printing which flags differ from the one
    already there, and run.json beside it (the run's facts, core.runconfig.RunFacts).

    The new config is written, not refused: changing --total_iters, intervals or paths on
    resume is normal, flags that change the networks are refused by loading the checkpoint,
    and each checkpoint keeps the config it was trained with inside it.
    """
    path = os.path.join(cfg.checkpoint_dir, 'config.json')
    text = cfg.to_json() + '\n'
    old = None
    if os.path.isfile(path):
        with open(path) as f:
            old = f.read()
        changes = config_changes(old, cfg) if old != text else []
        if changes:
            print(f'train: the config differs from {path}: {", ".join(changes)}; writing the new one')
    if old != text:
        atomic_write_text(path, text)
    atomic_write_text(os.path.join(cfg.checkpoint_dir, 'run.json'), cfg.facts.to_json() + '\n')


# ----------------------------------------------------------------------------------------------
# Divergence: the losses on logging steps, the state on saving steps
# ----------------------------------------------------------------------------------------------

class TrainingDiverged(UserError):
    """A loss or the saved state became NaN, infinite or absurdly large; the run stops and nothing bad is saved."""


def diverged(cfg, step, what, good_step, culprit=None):
    """The one message of a run that diverged at iteration `step`.

    culprit: the state_problem of the run's state, naming the network whose learning rate to lower
    (F: --f_lr, the others: --lr), or None when the state is sound or unknown.
    """
    if good_step:
        good = (f'the newest good checkpoint is step {good_step} in {cfg.checkpoint_dir} '
                f'(--resume_iter {good_step})')
    else:
        good = 'no checkpoint of this run was saved before it'
    if culprit is None:
        advice = f'a lower --lr (now {cfg.lr}) or --f_lr (now {cfg.f_lr})'
    else:
        flag = lr_flag(culprit)
        advice = f'a lower {flag} (now {cfg.f_lr if flag == "--f_lr" else cfg.lr})'
    return TrainingDiverged(f'training diverged at iteration {step}: {what}; {good}. {advice[0].upper()}{advice[1:]} '
                            f'or smaller --lambda_* loss weights usually help')


def host_values(values):
    """{name: float} of logged scalars (tensors or numbers), read from the device with one sync."""
    names = [k for k, v in values.items() if torch.is_tensor(v)]
    if not names:
        return dict(values)
    device = values[names[0]].device
    read = torch.stack([values[k].detach().float().reshape(()).to(device) for k in names]).tolist()
    return {**values, **dict(zip(names, read))}


def check_losses(run, cfg, step, values, good_step):
    """Stop the run at the first logged value that is NaN or infinite (same decision on every process:
    the values are already averaged over them); the message names the network whose state blew up."""
    for name, value in values.items():
        if not math.isfinite(value):
            culprit = state_problem(training_payloads(step, run.nets, run.nets_ema, run.optims, cfg))
            what = f'the loss term {name} is {value}' + (f' (the {culprit})' if culprit else '')
            raise diverged(cfg, step, what, good_step, culprit)


def save_checkpoint(run, cfg, step, writer, good_step):
    """Save step `step` (rank 0 writes) unless some process finds NaN/inf or an absurd magnitude in it
    (core.checkpoint.MAX_MAGNITUDE); then every process stops.

    Every process checks its own copy (they are equal) and one all_reduce of the
    flags makes them decide together, so none is left waiting in a collective.
    """
    payloads = training_payloads(step, run.nets, run.nets_ema, run.optims, cfg)
    bad = state_problem(payloads)
    flag = torch.tensor(float(bad is not None), device=run.rt.device)
    if float(distributed.mean_over_processes({'bad': flag})['bad']) > 0:
        raise diverged(cfg, step, f'the {bad or "state of another process holds NaN, infinite or absurd values"}; '
                                  f'step {step} was not saved', good_step, bad)
    if writer:
        write_training_state(cfg.checkpoint_dir, step, payloads)


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


def optimize(loss, optims, scaler=None):
    """Zero the grads of `optims`, back-propagate, average the gradients over processes, step them.

    With an fp16 gradient scaler, a phase whose gradients are not all finite is
    skipped for every optimizer of the phase (no Adam state is touched, not even
    for networks whose own gradients were finite) and the scale shrinks.
    """
    for optim in optims:
        optim.zero_grad(set_to_none=True)
    (loss if scaler is None else scaler.scale(loss)).backward()
    params = [p for optim in optims for group in optim.param_groups for p in group['params']]
    distributed.average_gradients(params)
    if scaler is None:
        for optim in optims:
            optim.step()
        return
    for optim in optims:
        scaler.unscale_(optim)
    grads = [p.grad for p in params if p.grad is not None]
    if bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):   # fp16 only: one host sync
        for optim in optims:
            scaler.step(optim)
    scaler.update()


@torch.no_grad()
def update_ema(nets, nets_ema, beta):
    """ema <- beta * ema + (1 - beta) * online, for the parameters of G, F and E."""
    for name in EMA_NETS:
        torch._foreach_lerp_(list(nets_ema[name].parameters()), list(nets[name].parameters()), 1 - beta)


def draw_latents(cfg, step, device, part=slice(None)):
    """z_trg, z_trg2 ~ N(0, I) from the step's own stream: this process's rows (b, latent_dim) each.

    Every process draws the whole global batch (2, batch_size, latent_dim) and keeps its part.
    """
    gen = step_generator(cfg.seed, step, STREAM_LATENT)
    z = torch.randn(2, cfg.batch_size, cfg.latent_dim, generator=gen)[:, part]   # (2, b, latent_dim)
    return z[0].to(device, non_blocking=True), z[1].to(device, non_blocking=True)


def r1_this_step(cfg, step, phase):
    """Weight of the R1 penalty in D step `phase` (0 latent, 1 reference) of iteration `step`.

    Lazy R1 (--r1_every K): the penalty on every K-th D step, scaled by K; None on the others and with
    --lambda_reg 0 (then the penalty and its double backward are not computed at all).
    """
    if cfg.lambda_reg == 0 or (2 * step + phase) % cfg.r1_every:
        return None
    return cfg.lambda_reg * cfg.r1_every


def train_step(run, cfg, batch, step, device):
    """One StarGAN v2 iteration on this process's part of the batch; returns the named losses (detached)."""
    nets, optims, objective, rt, scalers = run.nets, run.optims, run.objective, run.rt, run.scalers
    G, F, E, D = nets.generator, nets.mapping_network, nets.style_encoder, nets.discriminator
    heads = [nets[n] for n in run.head_names]
    x_real, y_org = rt.images(batch.x_src), batch.y_src
    x_ref, x_ref2, y_trg = rt.images(batch.x_ref), rt.images(batch.x_ref2), batch.y_ref
    part = distributed.process_slice(cfg.batch_size, rank=rt.rank, world_size=rt.world_size)
    z_trg, z_trg2 = draw_latents(cfg, step, device, part)
    patch_gen = step_generator(cfg.seed, step, STREAM_PATCHES, device) if objective is not None else None
    taps = tapped_layers(objective)
    lambda_ds = lambda_ds_at(step, cfg.lambda_ds, cfg.ds_iter)
    stats = {}

    # --- Latent-guided fake, shared by the D latent step (detached) and the G latent step.
    with rt.autocast():
        enc_real = G.run_encoder(x_real, taps)
        s_trg = F(z_trg, y_trg)
        x_fake = G.run_decoder(enc_real, s_trg)

    # --- D step, latent-guided fakes.
    d_loss, d_stats = compute_d_loss(D, x_real, y_org, x_fake, y_trg, r1_this_step(cfg, step, 0), rt.autocast)
    optimize(d_loss, [optims.discriminator], scalers.d)
    stats.update({f'D/latent/{k}': v for k, v in d_stats.items()})

    # --- D step, reference-guided fakes (G unchanged: decode the same encoding).
    with torch.no_grad(), rt.autocast():
        x_fake_ref = G.run_decoder(enc_real, E(x_ref, y_trg))
    d_loss, d_stats = compute_d_loss(D, x_real, y_org, x_fake_ref, y_trg, r1_this_step(cfg, step, 1), rt.autocast)
    optimize(d_loss, [optims.discriminator], scalers.d)
    stats.update({f'D/ref/{k}': v for k, v in d_stats.items()})

    # --- G step, latent-guided: G, F, E and the patch heads learn.
    with frozen(D), rt.autocast():
        with torch.no_grad():
            s_trg2 = F(z_trg2, y_trg)
        inp = GInputs(x_real, y_org, y_trg, s_trg, s_trg2, enc_real, x_fake)
        g_loss, g_stats = compute_g_loss(nets, objective, inp, cfg, lambda_ds, step, patch_gen)
    optimize(g_loss, [optims.generator, optims.mapping_network, optims.style_encoder]
             + [optims[n] for n in run.head_names], scalers.g)
    stats.update({f'G/latent/{k}': v for k, v in g_stats.items()})

    # --- G step, reference-guided: only G learns (and the heads, unless --patch_head_update latent).
    still = [D, F, E] + (heads if cfg.patch_head_update == 'latent' else [])
    with frozen(*still):
        with rt.autocast():
            with torch.no_grad():
                s_trg = E(x_ref, y_trg)
                s_trg2 = E(x_ref2, y_trg)
            enc_real = G.run_encoder(x_real, taps)
            x_fake = G.run_decoder(enc_real, s_trg)
            inp = GInputs(x_real, y_org, y_trg, s_trg, s_trg2, enc_real, x_fake)
            g_loss, g_stats = compute_g_loss(nets, objective, inp, cfg, lambda_ds, step, patch_gen)
        stepped = [] if cfg.patch_head_update == 'latent' else [optims[n] for n in run.head_names]
        optimize(g_loss, [optims.generator] + stepped, scalers.g)
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
    # Plug-ins report their own schedule values in their stats, under their own names.
    return {'lambda_ds': lambda_ds_at(step, cfg.lambda_ds, cfg.ds_iter)}


def with_domain_names(cfg):
    """The config whose run facts hold the domain names of --train_img_dir (sorted folder names = domain ids)."""
    if cfg.facts.domain_names is not None:
        return cfg
    tree = domain_tree(cfg.train_img_dir, 'train_img_dir', cfg.num_domains)
    return cfg.with_facts(domain_names=tuple(tree.names))


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

    Under torchrun every process runs this on its part of each batch; rank 0
    alone writes files. hook: an optional StepHook called around every
    iteration (bench/ablation.py times the steps).
    """
    cfg = with_domain_names(cfg)
    rt = distributed.setup(cfg)
    try:
        with run_folder_lock(cfg, rt):
            return _train(cfg, rt, hook or StepHook())
    finally:
        distributed.shutdown()


@contextlib.contextmanager
def run_folder_lock(cfg, rt):
    """Hold the lock of --checkpoint_dir (core.utils.runlock) for the whole run; one lock per job.

    Rank 0 takes it; every process then learns the outcome in one collective, so no
    process reads or writes the folder before the lock is held, and all stop together
    when another run holds it. A torchrun restart takes it over: the dead processes
    released it.
    """
    lock, error = RunLock(cfg.checkpoint_dir), None
    if rt.rank == 0:
        try:
            lock.acquire()
        except UserError as err:   # held by another run, or the lock file cannot be written
            error = err
    message = distributed.gather_objects(None if error is None else str(error))[0]
    if message is not None:
        raise error or RunLocked(message)
    try:
        yield
    finally:
        lock.release()


def _train(cfg, rt, hook):
    device, writer = rt.device, rt.rank == 0
    start = resolve_start_step(cfg)
    run = build_training(cfg, rt)
    if start > 0:
        load_resume_state(run, cfg, start)
    if start >= cfg.total_iters:   # checked (loaded) but left alone: not one file changes
        if writer:
            print(f'train: nothing to do: resuming at step {start} and --total_iters is {cfg.total_iters} '
                  f'(raise --total_iters to train further)')
        return start
    distributed.broadcast_modules(list(run.nets.values()) + list(run.nets_ema.values()))
    if writer:
        os.makedirs(cfg.checkpoint_dir, exist_ok=True)
        write_run_config(cfg)
        print(f'train: {rt.world_size} process(es) on {device.type}, global batch {cfg.batch_size}, '
              f'precision {"fp32" if rt.amp_dtype is None else cfg.amp}')
        if device.type == 'cuda' and rt.amp_dtype is None and not cfg.tf32:
            print('train: tip: on a recent GPU, --amp bf16 --tf32 --channels_last (and --compile) train faster')
    val = load_val_batch(cfg, device) if writer else None
    batches = make_train_iterator(cfg, start, device, rt.rank, rt.world_size)
    logger = RunLogger(cfg.checkpoint_dir, start, cfg.total_iters) if writer else None
    saved = start   # the newest checkpoint of this run: all of them are finite
    try:
        hook.start(run, device)
        for step in range(start, cfg.total_iters):
            batch = next(batches)
            hook.before(step)
            stats = train_step(run, cfg, batch, step, device)
            hook.after(step, stats)
            done = step + 1   # files and logs count completed iterations, as upstream
            if writer:
                logger.advance()
            if _every(done, cfg.print_every):   # every process joins the average and checks it; rank 0 writes it
                values = host_values(distributed.mean_over_processes({**stats, **schedule_stats(cfg, step)}))
                check_losses(run, cfg, done, values, saved)
                if writer:
                    logger.log(done, values)
            if writer and _every(done, cfg.sample_every):
                logger.images(done, debug_image(run.nets_ema, cfg, val, done, device))
            if _every(done, cfg.save_every):
                save_checkpoint(run, cfg, done, writer, saved)
                saved = done
            if _every(done, cfg.eval_every):
                evaluate_during_training(run, cfg, done, device, logger)
        if saved != cfg.total_iters:
            save_checkpoint(run, cfg, cfg.total_iters, writer, saved)
        distributed.barrier()   # nobody leaves before the last checkpoint is written
    finally:
        batches.close()
        if writer:
            logger.close()
    return cfg.total_iters


def evaluate_during_training(run, cfg, step, device, logger):
    """--eval_every: the --metrics of the EMA networks, split over every process; rank 0 writes and logs."""
    from metrics.eval import evaluate_nets   # the metric networks load only when used
    means = evaluate_nets(run.nets_ema, cfg, step, device)   # every process holds the same EMA weights
    if logger is not None:
        logger.log(step, means)
