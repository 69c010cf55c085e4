"""FSeSim and LSeSim plug-ins: the spatially-correlative loss (Zheng, Cham & Cai, CVPR 2021).

Each sampled query position i of a feature map gets a self-similarity map S_i,
its similarity to every position of the map (or of a p x p window around i).
The translated image must keep the source's maps:
    L = mean_i crit(1, cos(m_i * S_i^real, m_i * S_i^fake)),
where the mask m_i keeps the top fraction of S_i^fake (the positions most
related to i in the output). FSeSim ('fsesim') compares fixed features;
LSeSim ('lsesim') first passes them through a learned 1x1-conv head per layer,
trained by its own InfoNCE on detached maps and frozen inside the structure loss.

As released (F-LSeSim): centring, tanh(dot / 10) or l2 normalisation, the
clamped windows, floor(N/4) + 1 kept entries, SmoothL1 or L1, the head
architecture and the logits of its InfoNCE. Differences forced by the plug-in
contract:
  * the 'other' image of the head's InfoNCE is the source of the next image of
    the batch (the image itself when B = 1), flipped in H and W at feature
    level; the release flips a real target-domain image before VGG. No
    colour-jitter augmentation (the shipped script does not use it either).
  * the head steps with G from the same backward (the release gives it its
    own step just before): the head's InfoNCE is returned as the auxiliary
    loss, which the objective adds without the loss weight, so --patch_loss
    lsesim=W scales the structure loss only.
"""
import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn

from core.contrastive import functional as LF
from core.contrastive._features import (add_feature_flag, feature_channels, feature_errors, feature_maps,
                                        feature_requirements, real_is_key)
from core.contrastive.base import PatchLoss, register
from core.contrastive.sampler import PatchSampler

SESIM_MODES = ['cos', 'l1']


# ----------------------------------------------------------------------------------------------
# Tensor functions
# ----------------------------------------------------------------------------------------------

def window_index(ids, height, width, size):
    """Flat positions of the size x size window around each id, clamped inside the map: (K,) -> (K, size**2)."""
    row, col = ids // width, ids % width
    top = (row - size // 2).clamp(0, height - size)
    left = (col - size // 2).clamp(0, width - size)
    offsets = torch.arange(size, device=ids.device)
    rows = top[:, None] + offsets                                   # (K, size)
    cols = left[:, None] + offsets                                  # (K, size)
    return (rows[:, :, None] * width + cols[:, None, :]).flatten(1)  # (K, size, size) -> (K, size**2)


def self_similarity(feat, ids, patch_size, use_norm):
    """Self-similarity maps of the query positions ids: (B, C, H, W), (K,) -> (B, K, N), fp32.

    Features are centred per channel, then l2-normalised per position
    (use_norm) or divided by sqrt(C). N = H*W, or patch_size**2 when the
    window is smaller than the map in both dimensions (as released).
    Values: cosines (use_norm) or tanh(dot / 10).
    """
    _, channels, height, width = feat.shape
    feat = feat.float()
    feat = feat - feat.mean(dim=(2, 3), keepdim=True)
    feat = F.normalize(feat, dim=1) if use_norm else feat / math.sqrt(channels)
    flat = feat.flatten(2)                                          # (B, C, H*W)
    query = flat[:, :, ids].transpose(1, 2)                         # (B, K, C)
    sim = torch.bmm(query, flat)                                    # (B, K, H*W)
    if patch_size < height and patch_size < width:
        # Pick each window from the full map: gathering the window keys instead would need
        # (B, C, K, p*p) memory, gigabytes at 256 px.
        window = window_index(ids, height, width, patch_size)      # (K, p*p)
        sim = sim.gather(2, window.expand(sim.shape[0], -1, -1))   # (B, K, p*p)
    return sim if use_norm else torch.tanh(sim / 10)


def kept_count(n, keep):
    """Entries kept per map: floor(n * keep) + 1 (the release's floor(N/4) + 1), at most n."""
    return min(int(n * keep) + 1, n)


def keep_mask(sim_fake, keep):
    """True on the entries of each (B, K, N) map row not below its kept_count-th largest (ties keep more)."""
    sim_fake = sim_fake.detach()
    threshold = sim_fake.topk(kept_count(sim_fake.shape[-1], keep), dim=-1).values[..., -1:]   # (B, K, 1)
    return sim_fake >= threshold


def structure_loss(sim_real, sim_fake, keep, mode='cos', use_norm=False):
    """Spatially-correlative loss per query (Zheng et al. 2021): (B, K, N) maps -> (B, K).

    Entries outside keep_mask(sim_fake) are zeroed in both maps; the mask
    carries no gradient. mode 'cos': crit(1, cos(real, fake)); 'l1':
    crit(s * real, s * fake) averaged over N with s = N / floor(N * keep).
    crit is L1 with use_norm, else SmoothL1. Zero when both maps are equal.
    """
    n = sim_fake.shape[-1]
    drop = ~keep_mask(sim_fake, keep)
    real, fake = sim_real.masked_fill(drop, 0.0), sim_fake.masked_fill(drop, 0.0)
    crit = F.l1_loss if use_norm else F.smooth_l1_loss
    if mode == 'cos':
        cos = F.cosine_similarity(real, fake, dim=-1)                # (B, K)
        return crit(cos, torch.ones_like(cos), reduction='none')
    scale = n / max(int(n * keep), 1)
    return crit(scale * real, scale * fake, reduction='none').mean(dim=-1)


def head_nce(sim_src, sim_tgt, sim_oth, tau):
    """InfoNCE that trains the LSeSim head: three (B, K, N) maps -> (B, K) per query.

    Rows are l2-normalised; the logits of query i are
    [src_i . tgt_j ; src_i . oth_j ; tgt_i . oth_j] / tau over j = 1..K, and the
    positive is src_i . tgt_i. All maps identical gives ln(3K).
    """
    src, tgt, oth = (F.normalize(s.float(), dim=-1) for s in (sim_src, sim_tgt, sim_oth))
    logits = torch.cat([src @ tgt.mT, src @ oth.mT, tgt @ oth.mT], dim=-1) / tau   # (B, K, 3K)
    return logits.logsumexp(dim=-1) - logits.diagonal(dim1=1, dim2=2)              # positive at (i, i)


def _conv_head(channels):
    """LSeSim's per-layer head: 1x1 conv C -> max(32, C/4), ReLU, 1x1 conv, normal(0, 0.02) weights."""
    hidden = max(32, channels // 4)
    head = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, hidden, 1))
    for conv in (head[0], head[2]):
        nn.init.normal_(conv.weight, 0.0, 0.02)
        nn.init.zeros_(conv.bias)
    return head


# ----------------------------------------------------------------------------------------------
# Plug-ins
# ----------------------------------------------------------------------------------------------

@register('fsesim')
class FSeSimLoss(PatchLoss):
    """Fixed spatially-correlative loss, averaged over queries and layers; range [0, 2] (cos mode).

    Queries: --n_patch positions per layer (at most H*W), shared by both images
    and the whole batch, drawn from the step's generator.
    """

    uses_patches = False

    def __init__(self, channels, source='encoder', n_patch=256, patch_size=64, use_norm=False, mode='cos',
                 keep=0.25, real_is_key=True):
        super().__init__()
        self.channels = list(channels)
        self.source, self.n_patch, self.patch_size = source, n_patch, patch_size
        self.use_norm, self.mode, self.keep = use_norm, mode, keep
        self.real_is_key = real_is_key

    @classmethod
    def add_arguments(cls, parser):
        g = parser.add_argument_group('FSeSim / LSeSim spatially-correlative loss '
                                      '(--patch_loss fsesim=W or lsesim=W; queries: --n_patch)')
        add_feature_flag(g, 'sesim_features', 'FSeSim/LSeSim')
        g.add_argument('--sesim_patch_size', type=int, default=64,
                       help='side (in feature pixels) of the window each query is compared with; the whole map '
                            'when the map is not larger in both dimensions (release --patch_size)')
        g.add_argument('--sesim_use_norm', action=argparse.BooleanOptionalAction, default=False,
                       help='l2-normalise the features and use L1 (release --use_norm); '
                            'default: tanh(dot/10) maps and SmoothL1')
        g.add_argument('--sesim_loss', choices=SESIM_MODES, default='cos',
                       help='cos: 1 - cosine of the masked maps (release default); l1: their scaled L1 distance')
        g.add_argument('--sesim_keep', type=float, default=0.25,
                       help='fraction of each self-similarity map kept, its most related positions in the '
                            'translated image (release: 1/4)')

    @classmethod
    def validate(cls, cfg):
        errors = feature_errors(cfg, 'sesim_features')
        if cfg.sesim_patch_size < 1:
            errors.append('--sesim_patch_size must be at least 1')
        if not 0 < cfg.sesim_keep <= 1:
            errors.append(f'--sesim_keep must be in (0, 1], got {cfg.sesim_keep}')
        return errors

    @classmethod
    def requirements(cls, cfg):
        return feature_requirements(cfg, 'sesim_features')

    @classmethod
    def config_kwargs(cls, cfg, feat_channels):
        """Constructor arguments from the resolved config."""
        return dict(channels=feature_channels(cfg.sesim_features, feat_channels), source=cfg.sesim_features,
                    n_patch=cfg.n_patch, patch_size=cfg.sesim_patch_size, use_norm=cfg.sesim_use_norm,
                    mode=cfg.sesim_loss, keep=cfg.sesim_keep, real_is_key=real_is_key(cfg))

    @classmethod
    def from_config(cls, cfg, feat_channels):
        return cls(**cls.config_kwargs(cfg, feat_channels))

    def project(self, layer, feat):
        """Features the maps are computed from (FSeSim: unchanged)."""
        return feat

    def similarity(self, layer, feat, ids):
        """(B, K, N) self-similarity maps of one layer at positions ids."""
        return self_similarity(self.project(layer, feat), ids, self.patch_size, self.use_norm)

    def structure(self, inp):
        """(loss averaged over layers, maps of the real image, maps of the fake image, positions)."""
        maps_q, maps_k = feature_maps(self.source, inp)
        maps_real, maps_fake = (maps_k, maps_q) if self.real_is_key else (maps_q, maps_k)
        ids = PatchSampler.sample_ids(maps_k, self.n_patch, inp.generator)
        rows = [structure_loss(self.similarity(l, real, idx), self.similarity(l, fake, idx),
                               self.keep, self.mode, self.use_norm)         # (B, K_l)
                for l, (real, fake, idx) in enumerate(zip(maps_real, maps_fake, ids))]
        return LF.layer_mean(rows), maps_real, maps_fake, ids

    def forward(self, inp):
        loss, _, _, _ = self.structure(inp)
        return loss, {}


@register('lsesim')
class LSeSimLoss(FSeSimLoss):
    """FSeSim on the output of a learned 1x1-conv head per layer (saved and optimised as 'lsesim').

    Auxiliary loss and extra stat 'head_nce': the head's InfoNCE, averaged over layers.
    """

    def __init__(self, channels, tau=0.07, **kwargs):
        super().__init__(channels, **kwargs)
        self.heads = nn.ModuleList(_conv_head(c) for c in channels)
        self.tau = tau

    @classmethod
    def add_arguments(cls, parser):
        # The shared --sesim_* flags are added by FSeSimLoss; only the head's own flag here.
        g = parser.add_argument_group('LSeSim learned head (--patch_loss lsesim=W)')
        g.add_argument('--lsesim_T', type=float, default=0.07,
                       help="temperature of the head's InfoNCE (release --T)")

    @classmethod
    def validate(cls, cfg):
        errors = super().validate(cfg)
        if cfg.lsesim_T <= 0:
            errors.append('--lsesim_T must be > 0')
        return errors

    @classmethod
    def config_kwargs(cls, cfg, feat_channels):
        return dict(super().config_kwargs(cfg, feat_channels), tau=cfg.lsesim_T)

    def project(self, layer, feat):
        # The structure loss sees the head frozen (as released): gradients pass through to the
        # features but never reach the head's own weights.
        head = self.heads[layer]
        frozen = {name: p.detach() for name, p in head.named_parameters()}
        return torch.func.functional_call(head, frozen, (feat,))

    def head_loss(self, maps_real, maps_fake, ids):
        """InfoNCE of the heads on detached maps, averaged over layers (gradient reaches only the heads)."""
        rows = []
        for head, real, fake, idx in zip(self.heads, maps_real, maps_fake, ids):
            real, fake = real.detach(), fake.detach()
            # Another source image, flipped: same statistics, different structure.
            other = real.roll(1, dims=0).flip(2, 3)
            src, tgt, oth = (self_similarity(head(m), idx, self.patch_size, self.use_norm)
                             for m in (real, fake, other))
            rows.append(head_nce(src, tgt, oth, self.tau))             # (B, K_l)
        return LF.layer_mean(rows)

    def forward(self, inp):
        loss, maps_real, maps_fake, ids = self.structure(inp)
        nce = self.head_loss(maps_real, maps_fake, ids)
        # The head's own objective: an auxiliary loss, so the weight of the structure loss does not scale it.
        return loss, {'head_nce': nce.detach()}, nce
