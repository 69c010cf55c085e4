"""Patch sampling with MLP projection heads, shared by the patch-based plug-ins.

Positions are drawn once per layer per step and shared by every image of the
batch and by both sides (query and key), so that patch i of the translated
image corresponds to patch i of the source (as in CUT and Hneg_SRC).
The state_dict keys (mlp.{l}.0.weight, mlp.{l}.2.weight, ...) match the
released Hneg_SRC `patch_sample` network.
"""
import torch
from torch import nn


def l2_normalize(v, eps=1e-7):
    """Unit rows along the last dim, v / (||v|| + eps) as in CUT / Hneg_SRC."""
    return v / (v.norm(dim=-1, keepdim=True) + eps)


class PatchSampler(nn.Module):
    """One Linear-ReLU-Linear head per tapped layer, followed by l2 normalisation."""

    def __init__(self, in_channels, out_dim=256):
        super().__init__()
        self.mlp = nn.ModuleList(
            nn.Sequential(nn.Linear(c, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))
            for c in in_channels)

    @staticmethod
    def sample_ids(feats, n_patch, generator=None):
        """One random set of min(n_patch, H*W) flat positions per layer, without replacement."""
        ids = []
        for feat in feats:
            num_pos = feat.shape[2] * feat.shape[3]
            perm = torch.randperm(num_pos, generator=generator, device=feat.device)
            ids.append(perm[:min(n_patch, num_pos)])
        return ids

    def forward(self, feats, ids):
        """Project the sampled positions; returns per layer (B, K_l, out_dim) unit rows."""
        patches = []
        for feat, idx, head in zip(feats, ids, self.mlp):
            flat = feat.flatten(2)                     # (B, C, H*W)
            picked = flat[:, :, idx].transpose(1, 2)   # (B, K, C)
            patches.append(l2_normalize(head(picked)))
        return patches

