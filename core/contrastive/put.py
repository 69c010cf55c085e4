"""PUT plug-in: InfoNCE with pruned negatives (Lin et al., "Exploring Negatives in Contrastive
Learning for Unpaired Image-to-Image Translation", ACM MM 2022).

Each query keeps only its --put_negatives most similar negatives ("quality over
quantity"). With every negative kept it is PatchNCE (or DCE with --put_loss
dce). The released code sorts the negative matrix along the query axis instead
of ranking each query's own negatives; that behaviour is available only as
--put_variant released_column_sort, to reproduce its numbers.

Features: the shared projected patches of the generator encoder (the same
patches PatchNCE/DCE see), or, with --put_features vgg16, patches of the frozen
VGG16 maps projected by PUT's own heads (saved and optimised as 'put').
"""
import torch

from core.contrastive import functional as LF
from core.contrastive._features import (add_feature_flag, feature_channels, feature_errors, feature_maps,
                                        feature_requirements)
from core.contrastive.base import PatchLoss, register
from core.contrastive.sampler import PatchSampler

PUT_VARIANTS = ['per_query', 'released_column_sort']
PUT_LOSSES = ['infonce', 'dce']


@register('put')
class PUTLoss(PatchLoss):
    """Mean over anchors and layers of InfoNCE (or DCE) over each query's hardest negatives."""

    def __init__(self, num_neg=5, tau=0.07, variant='per_query', decoupled=False, source='encoder',
                 n_patch=256, channels=(), dim=256):
        super().__init__()
        self.num_neg, self.tau, self.variant, self.decoupled = num_neg, tau, variant, decoupled
        self.source, self.n_patch = source, n_patch
        # Encoder features: the objective's shared patches. VGG maps: own heads on its channels.
        self.uses_patches = source == 'encoder'
        self.sampler = None if self.uses_patches else PatchSampler(channels, dim)

    @classmethod
    def add_arguments(cls, parser):
        g = parser.add_argument_group('PUT negative pruning (--patch_loss put=W; patches: --n_patch, '
                                      'temperature: --nce_T)')
        add_feature_flag(g, 'put_features', 'PUT')
        g.add_argument('--put_negatives', type=int, default=5,
                       help='negatives kept per query, the most similar ones (release --choose_patch, whose '
                            'default 0 silently disables the loss); clipped to K-1')
        g.add_argument('--put_variant', choices=PUT_VARIANTS, default='per_query',
                       help="per_query: rank each query's own negatives; released_column_sort: the released "
                            "code's sort over the query axis, which pairs queries with other queries' "
                            "negatives (reproduction only)")
        g.add_argument('--put_loss', choices=PUT_LOSSES, default='infonce',
                       help='infonce (as released) or dce: the positive left out of the denominator')

    @classmethod
    def validate(cls, cfg):
        errors = feature_errors(cfg, 'put_features')
        if cfg.put_negatives < 1:
            errors.append(f'--put_negatives must be at least 1 (got {cfg.put_negatives}): with no negatives '
                          f'the loss is identically 0')
        if cfg.put_variant == 'released_column_sort' and cfg.put_loss != 'infonce':
            errors.append('--put_variant released_column_sort reproduces the release, which uses '
                          '--put_loss infonce')
        return errors

    @classmethod
    def requirements(cls, cfg):
        return feature_requirements(cfg, 'put_features')

    @classmethod
    def from_config(cls, cfg, feat_channels):
        return cls(num_neg=cfg.put_negatives, tau=cfg.nce_T, variant=cfg.put_variant,
                   decoupled=cfg.put_loss == 'dce', source=cfg.put_features, n_patch=cfg.n_patch,
                   channels=feature_channels(cfg.put_features, feat_channels), dim=cfg.patch_dim)

    def patches(self, inp):
        """Per layer (B, K, D) unit query and key patches (keys without gradient)."""
        if self.uses_patches:
            return inp.patch_q, inp.patch_k
        maps_q, maps_k = feature_maps(self.source, inp)
        ids = PatchSampler.sample_ids(maps_k, self.n_patch, inp.generator)
        # PUT's own heads project the keys too; as the objective does for the shared heads, the key
        # side is a fixed target that must not train them.
        with torch.no_grad():
            patch_k = self.sampler(maps_k, ids)
        return self.sampler(maps_q, ids), patch_k

    def row_losses(self, q, k):
        """(B, K) loss rows of one layer."""
        if self.variant == 'released_column_sort':
            return LF.put_nce_released(q, k, self.tau, self.num_neg)
        return LF.put_nce(q, k, self.tau, self.num_neg, self.decoupled)

    def forward(self, inp):
        patch_q, patch_k = self.patches(inp)
        rows = [self.row_losses(q, k) for q, k in zip(patch_q, patch_k)]   # (B, K_l) per layer
        return LF.layer_mean(rows), {}
