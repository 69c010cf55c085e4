"""DCE and hard-negative DCE plug-ins (Jung, Kwon & Ye CVPR 2022, Sec. 3.3)."""
import torch
import torch.nn.functional as F

from core.contrastive import functional as LF
from core.contrastive.base import TemperedPatchLoss, register
from core.schedules import gamma_at

@register('dce')
class DCELoss(TemperedPatchLoss):
    """Mean over anchors of decoupled InfoNCE (positive left out of the denominator).

    The loss (DCE) can be negative. Extra stat: 'infonce' = softplus(DCE) per
    anchor, i.e. InfoNCE on the same logits, the value the released code printed.
    """

    def forward(self, inp):
        return self.decoupled_loss(inp, lambda q, k: LF.dce(q, k, self.tau))

    @staticmethod
    def decoupled_loss(inp, row_losses):
        """(layer mean of row_losses(q, k), {'infonce': its softplus}) over the shared patches."""
        rows = [row_losses(q, k) for q, k in zip(inp.patch_q, inp.patch_k)]   # (B, K_l) per layer
        loss = LF.layer_mean(rows)
        infonce = LF.layer_mean([F.softplus(r.detach()) for r in rows])
        return loss, {'infonce': infonce}


@register('hdce')
class HardDCELoss(DCELoss):
    """DCE with hard negatives weighted by the key-side semantic relation, g on a curriculum.

    mode 'release': the released code's weights (softmax/max of k k^T / g) scale
    the negatives' similarities. mode 'paper': the paper's self-normalised
    importance-sampling estimator with omega = exp(k k^T / g). The temperature g
    of the current step comes from core.schedules.gamma_at and is reported as
    the extra stat 'gamma' (logged as hdce/gamma).
    """

    def __init__(self, tau=0.07, gamma_start=50.0, gamma_end=1.0, total_iters=100000,
                 use_curriculum=True, mode='release'):
        super().__init__(tau=tau)
        self.gamma_start = gamma_start
        self.gamma_end = gamma_end
        self.total_iters = total_iters
        self.use_curriculum = use_curriculum
        self.mode = mode

    @classmethod
    def from_config(cls, cfg, feat_channels):
        return cls(tau=cfg.nce_T, gamma_start=cfg.gamma_start, gamma_end=cfg.gamma_end,
                   total_iters=cfg.total_iters, use_curriculum=cfg.use_curriculum,
                   mode=cfg.hdce_mode)

    def gamma(self, step):
        """Temperature g of the hard-negative weights at this (0-based) step."""
        return gamma_at(step, self.gamma_start, self.gamma_end, self.total_iters,
                        self.use_curriculum)

    def hard_rows(self, q, k, g):
        """(B, K) hDCE per anchor of one layer at temperature g."""
        if self.mode == 'paper':
            return LF.hdce_paper(q, k, g, self.tau)
        return LF.dce(q, k, self.tau, neg_weights=LF.release_hard_weights(k, g))

    def forward(self, inp):
        g = self.gamma(inp.step)   # once per step, shared by every layer
        loss, stats = self.decoupled_loss(inp, lambda q, k: self.hard_rows(q, k, g))
        # A CPU float64 scalar: logged exactly, and no host-to-device copy that would sync the step.
        return loss, {**stats, 'gamma': torch.tensor(g, dtype=torch.float64)}
