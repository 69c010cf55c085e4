"""The weighted sum of the active patch losses, the only thing the training loop calls.

It owns the shared patch sampler (projection heads) and one module per active
plug-in; plug-ins are looked up by name in the registry, so the loop never
changes when a loss is added.
"""
import torch
from torch import nn

from core import contrastive
from core.contrastive.base import PatchInputs, unpack_output
from core.contrastive.sampler import PatchSampler


class PatchObjective(nn.Module):
    """sum_name lambda_name * loss_name(feat_q, feat_k) + aux_name over the configured plug-ins."""

    def __init__(self, terms, cfg, feat_channels, world_size=1):
        super().__init__()
        self.weights = dict(terms)
        self.world_size = world_size   # processes sharing each batch (see PatchLoss.sums_over_images)
        self.taps = cfg.nce_layers   # the encoder blocks whose features feed every plug-in
        self.n_patch = cfg.n_patch
        self.losses = nn.ModuleDict(
            {name: contrastive.get(name).from_config(cfg, feat_channels) for name, _ in terms})
        uses_patches = any(loss.uses_patches for loss in self.losses.values())
        self.sampler = PatchSampler(feat_channels, cfg.patch_dim) if uses_patches else None

    def checkpoint_modules(self):
        """Modules with parameters, by checkpoint name ('patch_sample' as in Hneg_SRC)."""
        modules = {'patch_sample': self.sampler} if self.sampler is not None else {}
        for name, loss in self.losses.items():
            if any(True for _ in loss.parameters()):
                modules[name] = loss
        return modules

    def forward(self, feat_q, feat_k, x_q, x_k, step, generator=None):
        """Returns (weighted total, {name: unweighted value, name/extra: value}) of detached stats.

        Computed in fp32 even inside an autocast region: relation losses compare
        softmaxed similarities, which half precision rounds away.
        """
        with torch.autocast(x_q.device.type, enabled=False):
            return self._forward([f.float() for f in feat_q], [f.float() for f in feat_k],
                                 x_q.float(), x_k.float(), step, generator)

    def _forward(self, feat_q, feat_k, x_q, x_k, step, generator):
        # The one place the key side is cut from the graph; plug-ins rely on it (see PatchInputs).
        feat_k = [f.detach() for f in feat_k]
        patch_q = patch_k = None
        if self.sampler is not None:
            # Same positions for both sides and for every image of the batch.
            ids = self.sampler.sample_ids(feat_k, self.n_patch, generator)
            patch_q = self.sampler(feat_q, ids)
            with torch.no_grad():
                patch_k = self.sampler(feat_k, ids)
        inp = PatchInputs(feat_q=feat_q, feat_k=feat_k, patch_q=patch_q, patch_k=patch_k,
                          x_q=x_q, x_k=x_k.detach(), step=step, generator=generator)
        total, stats = 0.0, {}
        for name, loss_fn in self.losses.items():
            value, extra, aux = unpack_output(loss_fn(inp))
            if loss_fn.sums_over_images:
                value = value * self.world_size   # this process's sum, scaled so the average over processes is the sum
            total = total + self.weights[name] * value
            if aux is not None:
                total = total + aux   # trains the plug-in's own parameters: not scaled by its weight
            stats[name] = value.detach()
            stats.update({f'{name}/{k}': v for k, v in extra.items()})
        return total, stats


def tapped_layers(objective):
    """Encoder blocks the G step must tap for `objective`; none when no patch loss is active."""
    return objective.taps if objective is not None else ()


def build_objective(cfg, generator, world_size=1):
    """The PatchObjective of cfg.patch_losses on cfg.nce_layers, or None when no loss is active.

    world_size: the number of processes that share each batch.
    """
    if not cfg.patch_losses:
        return None
    return PatchObjective(cfg.patch_losses, cfg, generator.tap_channels(cfg.nce_layers), world_size)
