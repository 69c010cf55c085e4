"""DCE and hard-negative DCE plug-ins (Jung, Kwon & Ye CVPR 2022, Sec. 3.3)."""
import torch.nn.functional as F

from core.contrastive import functional as LF
from core.contrastive.base import TemperedPatchLoss, register
from core.schedules import gamma_at

HDCE_MODES = ['release', 'paper']


@register('dce')
class DCELoss(TemperedPatchLoss):
    """Mean over anchors of decoupled InfoNCE (positive left out of the denominator).

    The loss (DCE) can be negative. Extra stat: 'infonce' = softplus(DCE) per
    anchor, i.e. InfoNCE on the same logits, the value the released code printed.
    """

    def row_losses(self, q, k, step):
        """(B, K) loss per anchor of one layer; k is already detached."""
        return LF.dce(q, k, self.tau)

    def forward(self, inp):
        # The caller already detached the key side; detaching again costs nothing.
        rows = [self.row_losses(q, k.detach(), inp.step)     # (B, K_l) per layer
                for q, k in zip(inp.patch_q, inp.patch_k)]
        loss = LF.layer_mean(rows)
        infonce = LF.layer_mean([F.softplus(r.detach()) for r in rows])
        return loss, {'infonce': infonce}


@register('hdce')
class HardDCELoss(DCELoss):
    """DCE with hard negatives weighted by the key-side semantic relation, g on a curriculum.

    mode 'release': the released code's weights (softmax/max of k k^T / g) scale
    the negatives' similarities. mode 'paper': the paper's self-normalised
    importance-sampling estimator with omega = exp(k k^T / g). The temperature g
    of the current step comes from core.schedules.gamma_at (the trainer logs it).
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
    def validate(cls, cfg):
        errors = super().validate(cfg)
        if not (cfg.gamma_start > 0 and cfg.gamma_end > 0):
            errors.append('--gamma_start and --gamma_end must be > 0 (g is a temperature)')
        if cfg.hdce_mode not in HDCE_MODES:
            errors.append(f'--hdce_mode must be one of {HDCE_MODES}, got {cfg.hdce_mode!r}')
        return errors

    @classmethod
    def from_config(cls, cfg, feat_channels):
        return cls(tau=cfg.nce_T, gamma_start=cfg.gamma_start, gamma_end=cfg.gamma_end,
                   total_iters=cfg.total_iters, use_curriculum=cfg.use_curriculum,
                   mode=cfg.hdce_mode)

    def gamma(self, step):
        """Temperature g of the hard-negative weights at this (0-based) step."""
        return gamma_at(step, self.gamma_start, self.gamma_end, self.total_iters,
                        self.use_curriculum)

    def row_losses(self, q, k, step):
        g = self.gamma(step)
        if self.mode == 'paper':
            return LF.hdce_paper(q, k, g, self.tau)
        return LF.dce(q, k, self.tau, neg_weights=LF.release_hard_weights(k, g))
