"""SRC plug-in: semantic relation consistency (Jung, Kwon & Ye CVPR 2022, Eq. 1-3)."""
from core.contrastive import functional as LF
from core.contrastive.base import PatchLoss, register


@register('src')
class SRCLoss(PatchLoss):
    """JSD between the key and query patch-relation distributions, averaged over layers.

    reduction 'sum' (release scale, use with lambda_src = 0.1) sums over images
    and anchors; 'mean' averages, so its weight must be about B*K times larger.
    """

    uses_patches = True

    def __init__(self, reduction='sum'):
        super().__init__()
        self.reduction = reduction
        self.sums_over_images = reduction == 'sum'

    @classmethod
    def from_config(cls, cfg, feat_channels):
        return cls(reduction=cfg.src_reduction)

    def forward(self, inp):
        per_layer = [LF.src_jsd(q, k, self.reduction)   # scalar per layer
                     for q, k in zip(inp.patch_q, inp.patch_k)]
        loss = LF.layer_mean(per_layer)
        return loss, {}
