"""PatchNCE plug-in: CUT's patch-wise InfoNCE (Park et al. ECCV 2020)."""
from core.contrastive import functional as LF
from core.contrastive.base import TemperedPatchLoss, register


@register('patchnce')
class PatchNCELoss(TemperedPatchLoss):
    """Mean over anchors of InfoNCE with the other K-1 patches of the same image as negatives."""

    def forward(self, inp):
        rows = [LF.patch_nce(q, k, self.tau)    # (B, K_l) per layer
                for q, k in zip(inp.patch_q, inp.patch_k)]
        loss = LF.layer_mean(rows)
        return loss, {}
