"""StarGAN v2 objectives. Leaf terms are pure tensor functions; objectives return (loss, stats).

Nothing here calls backward() or steps an optimizer. Stats are detached
tensors; they become Python numbers only on logging steps (no host syncs).
"""
import contextlib
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from core.contrastive.objective import tapped_layers


# ----------------------------------------------------------------------------------------------
# Leaf terms
# ----------------------------------------------------------------------------------------------

def adv_loss(logits, target):
    """Non-saturating GAN loss: BCE-with-logits of (B,) logits against a constant 0/1 target."""
    logits = logits.float()   # fp32 loss under mixed precision
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(target)))


def r1_reg(d_out, x_in):
    """R1 penalty (Mescheder et al. 2018): 0.5 * E_b ||d D(x_b) / d x_b||^2, kept differentiable."""
    grad = torch.autograd.grad(d_out.sum(), x_in, create_graph=True)[0]
    return 0.5 * grad.pow(2).flatten(1).sum(1).mean()   # (B, C*H*W) -> (B,) -> scalar


def l1(a, b):
    """Mean absolute difference (in fp32 under mixed precision)."""
    return torch.mean(torch.abs(a.float() - b.float()))


# ----------------------------------------------------------------------------------------------
# Discriminator objective
# ----------------------------------------------------------------------------------------------

def compute_d_loss(discriminator, x_real, y_org, x_fake, y_trg, lambda_reg, autocast=contextlib.nullcontext):
    """Real images of their own domain are real, fakes of the target domain are fake, plus R1.

    lambda_reg None skips the penalty (lazy R1 on the other steps); the real
    pass that R1 differentiates runs in fp32, the fake pass under `autocast`.
    """
    if lambda_reg is None:
        with autocast():
            out = discriminator(x_real, y_org)
        loss_reg = torch.zeros((), device=x_real.device)
    else:
        # A fresh leaf for R1, so the caller's x_real never carries requires_grad into the G steps.
        x_real = x_real.detach().requires_grad_(True)
        out = discriminator(x_real, y_org)
        loss_reg = r1_reg(out, x_real)
    loss_real = adv_loss(out, 1)
    with autocast():
        out_fake = discriminator(x_fake.detach(), y_trg)
    loss_fake = adv_loss(out_fake, 0)
    loss = loss_real + loss_fake + (0 if lambda_reg is None else lambda_reg * loss_reg)
    return loss, {'real': loss_real.detach(), 'fake': loss_fake.detach(), 'reg': loss_reg.detach()}


# ----------------------------------------------------------------------------------------------
# Generator objective
# ----------------------------------------------------------------------------------------------

class GInputs(NamedTuple):
    """One generator step's inputs; enc_real and x_fake may come from an earlier shared pass."""
    x_real: torch.Tensor            # (B, 3, S, S) source images
    y_org: torch.Tensor             # (B,) source domains
    y_trg: torch.Tensor             # (B,) target domains
    s_trg: torch.Tensor             # (B, style_dim) target style (from z or a reference)
    s_trg2: torch.Tensor            # (B, style_dim) second style for the diversity term, no grad
    enc_real: object                # core.model.Encoding of x_real (with grad)
    x_fake: torch.Tensor            # (B, 3, S, S) G(x_real, s_trg) decoded from enc_real


def compute_g_loss(nets, objective, inp, cfg, lambda_ds, step, patch_gen=None):
    """L_adv + l_sty L_sty - l_ds L_ds + l_cyc L_cyc + semantic (plug-in) losses.

    The generator encoder runs once per distinct input image: x_real's encoding
    (inp.enc_real) is reused for the diversity and identity terms, and x_fake is
    encoded once for the cycle; the patch features come from those same passes.
    """
    G, E, D = nets.generator, nets.style_encoder, nets.discriminator
    x_real, x_fake = inp.x_real, inp.x_fake
    taps = tapped_layers(objective)

    loss_adv = adv_loss(D(x_fake, inp.y_trg), 1)
    loss_sty = l1(E(x_fake, inp.y_trg), inp.s_trg)

    # Diversity sensitive loss: the second image is a constant target (upstream detaches it).
    with torch.no_grad():
        x_fake2 = G.run_decoder(inp.enc_real, inp.s_trg2)
    loss_ds = l1(x_fake, x_fake2)

    s_org = E(x_real, inp.y_org)
    enc_fake, x_rec = _reconstruct(G, inp.enc_real, x_fake, s_org, taps, cfg, objective)
    loss_cyc = l1(x_rec, x_real)

    loss = loss_adv + cfg.lambda_sty * loss_sty - lambda_ds * loss_ds + cfg.lambda_cyc * loss_cyc
    stats = {'adv': loss_adv.detach(), 'sty': loss_sty.detach(), 'ds': loss_ds.detach(),
             'cyc': loss_cyc.detach()}
    if objective is not None:
        loss_sem, sem_stats = _semantic_loss(objective, inp, enc_fake, cfg, step, patch_gen)
        loss = loss + loss_sem
        stats.update(sem_stats)
    return loss, stats


def _reconstruct(G, enc_real, x_fake, s_org, taps, cfg, objective) -> tuple:
    """(encoding of x_fake or None, x_rec) for --cyc_mode cycle or identity."""
    if cfg.cyc_mode == 'cycle':
        enc_fake = G.run_encoder(x_fake, taps)
        return enc_fake, G.run_decoder(enc_fake, s_org)
    # Hneg_SRC's "cycle" term: G(x_real, s_org) ~ x_real, decoded from the shared encoding.
    x_rec = G.run_decoder(enc_real, s_org)
    enc_fake: Optional[object] = None
    if objective is not None:
        if cfg.query_side == 'real':
            # x_fake's features are only keys (detached): no graph needed.
            with torch.no_grad():
                enc_fake = G.run_encoder(x_fake, taps)
        else:
            enc_fake = G.run_encoder(x_fake, taps)
    return enc_fake, x_rec


def _semantic_loss(objective, inp, enc_fake, cfg, step, patch_gen):
    """Route features to query/key by --query_side and evaluate the patch objective."""
    if cfg.query_side == 'fake':
        return objective(enc_fake.feats, inp.enc_real.feats, inp.x_fake, inp.x_real, step, patch_gen)
    return objective(inp.enc_real.feats, enc_fake.feats, inp.x_real, inp.x_fake, step, patch_gen)
