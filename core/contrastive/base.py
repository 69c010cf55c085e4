"""The plug-in contract for patch-wise semantic-relation losses.

A plug-in is one file in core/contrastive/ holding a PatchLoss subclass
decorated with @register('name'), the decorator of PATCH_LOSSES (a
core.utils.registry.Registry, as the metrics' is). The training loop never
names a plug-in: it builds core.contrastive.objective.PatchObjective, which
finds plug-ins through this registry. Adding a loss therefore touches no
training code.

What a plug-in may rely on and must do:
  * add_arguments(parser) adds its own flags; validate(cfg) checks only their
    values (the shared flags, --nce_T, --gamma_start, ..., are core/config.py's);
    requirements(cfg) reports files training needs. None reads cfg.mode: a
    run's patch losses are validated in every mode.
  * forward(PatchInputs) gets the key side already detached (the objective
    owns that) and returns (loss, stats) or (loss, stats, aux): the loss is
    unweighted, stats include its own schedule values, aux trains only its own
    parameters and is added without the weight.
  * Parameters it owns are checkpointed and optimised under its name.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from core.utils.registry import Plugin, Registry

PATCH_LOSSES = Registry('patch loss')
# @register('name') makes a PatchLoss subclass available under that name; registered() lists, get(name) finds.
register, registered, get = PATCH_LOSSES.register, PATCH_LOSSES.registered, PATCH_LOSSES.get


def _names(cfg):
    return [name for name, _ in cfg.patch_losses]


def config_errors(cfg):
    """Value errors of the active plug-ins' own flags (PatchLoss.validate), each reported once.

    Unknown names are skipped: core/config.py reports them.
    """
    return PATCH_LOSSES.validation_errors(_names(cfg), cfg)


def requirement_errors(cfg):
    """What the active plug-ins need on disk to train (PatchLoss.requirements), each reported once."""
    return PATCH_LOSSES.errors(_names(cfg), lambda cls: cls.requirements(cfg))


@dataclass(frozen=True)
class PatchInputs:
    """Everything a plug-in may look at during one generator step.

    Query side = the side that receives gradients; key side = stop-gradient.
    Which image is which is decided by the objective (--query_side), never by
    a plug-in. The objective is also the one owner of the stop-gradient: it
    detaches feat_k and x_k and computes patch_k without a graph, so a plug-in
    uses the key side as it is. Feature lists are aligned layer by layer.
    """
    feat_q: List[torch.Tensor]                    # per layer (B, C_l, H_l, W_l), with grad
    feat_k: List[torch.Tensor]                    # per layer (B, C_l, H_l, W_l), detached
    patch_q: Optional[List[torch.Tensor]]         # per layer (B, K_l, D), unit rows, with grad
    patch_k: Optional[List[torch.Tensor]]         # per layer (B, K_l, D), unit rows, detached
    x_q: torch.Tensor                             # (B, 3, H, W) query-side image in [-1, 1]
    x_k: torch.Tensor                             # (B, 3, H, W) key-side image, detached
    step: int                                     # 0-based training iteration (for schedules)
    generator: Optional[torch.Generator] = None   # per-step RNG for any sampling a plug-in does


# What forward returns: (loss, stats) or (loss, stats, aux); see PatchLoss.forward.
PatchOutput = Union[Tuple[torch.Tensor, Dict[str, torch.Tensor]],
                    Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]]


def unpack_output(output):
    """(loss, stats, aux or None) from what a plug-in's forward returned."""
    loss, stats, *aux = output
    return loss, stats, (aux[0] if aux else None)


class PatchLoss(nn.Module, Plugin):
    """Base class of a registered plug-in (its flags: Plugin.add_arguments and Plugin.validate).

    uses_patches: True if the plug-in consumes the shared sampled, projected
    patches (patch_q / patch_k); the objective then builds the shared
    PatchSampler heads. Plug-ins that work on raw maps set it to False.
    """
    uses_patches = True
    # True if the loss is a sum over the images of the batch rather than a mean: under several
    # processes the objective then scales each process's part so that the gradients average to the
    # single-process sum.
    sums_over_images: bool = False

    @classmethod
    def requirements(cls, cfg):
        """Errors about what training with this config needs on disk (e.g. a weight file).

        Called only before training; sampling a trained model needs none of it.
        """
        return []

    @classmethod
    def from_config(cls, cfg, feat_channels):
        """Build the plug-in from the resolved config and the tapped channel counts."""
        return cls()

    def forward(self, inp: PatchInputs) -> PatchOutput:
        """Return (loss, stats) or (loss, stats, aux).

        loss: unweighted scalar averaged over layers; the objective multiplies
        it by the plug-in's weight and logs it under the plug-in's name.
        stats: extra values as detached 0-dim tensors, logged as name/key.
        That includes values of the plug-in's own schedules computed from
        inp.step: the training loop logs no plug-in schedule itself.
        aux (optional): an unweighted scalar that trains only the plug-in's own
        parameters (e.g. a learned head's own objective). The objective adds
        it to the total as it is, so the plug-in never needs its weight.
        """
        raise NotImplementedError


class TemperedPatchLoss(PatchLoss):
    """Base of the InfoNCE-like plug-ins on the shared patches: one temperature, --nce_T."""

    uses_patches = True

    def __init__(self, tau=0.07):
        super().__init__()
        self.tau = tau

    @classmethod
    def from_config(cls, cfg, feat_channels):
        return cls(tau=cfg.nce_T)
