"""PatchNCE plug-in: CUT's patch-wise InfoNCE (Park et al. ECCV 2020)."""
from core.contrastive import functional as LF
from core.contrastive.base import PatchLoss, register


@register('patchnce')
class PatchNCELoss(PatchLoss):
    """Mean over anchors of InfoNCE with the other K-1 patches of the same image as negatives."""

    uses_patches = True

    def __init__(self, tau=0.07):
        super().__init__()
        self.tau = tau

    @classmethod
    def validate(cls, cfg):
        return [] if cfg.nce_T > 0 else ['--nce_T must be > 0']

    @classmethod
    def from_config(cls, cfg, feat_channels):
        return cls(tau=cfg.nce_T)

    def forward(self, inp):
        # The caller already detached the key side; detaching again costs nothing.
        rows = [LF.patch_nce(q, k.detach(), self.tau)    # (B, K_l) per layer
                for q, k in zip(inp.patch_q, inp.patch_k)]
        loss = LF.layer_mean(rows)
        return loss, {}
