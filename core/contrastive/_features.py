"""Where a plug-in takes its feature maps from: the generator encoder or a frozen VGG16.

Shared by the plug-ins that work on raw maps (LSeSim/FSeSim, PatchGCL) or
that may project their own patches (PUT). 'encoder' uses the tapped encoder
blocks the objective hands over (no download); 'vgg16' runs the frozen
ImageNet VGG16 of the released LSeSim/PatchGCL code on both images.
"""
import torch

from core.contrastive._vgg import VGG_CHANNELS, vgg16_trunk
from core.utils.errors import UserError
from core.utils.weights import require_weight

FEATURE_SOURCES = ['encoder', 'vgg16']


def add_feature_flag(group, flag, loss_name):
    """Add --<flag> {encoder, vgg16} to an argument group."""
    group.add_argument(f'--{flag}', choices=FEATURE_SOURCES, default='encoder',
                       help=f'features of {loss_name}: the generator encoder blocks of --nce_layers, or relu3_1, '
                            f'relu4_1, relu4_3 of a frozen ImageNet VGG16 as in the released LSeSim and '
                            f'PatchGCL code (needs the weight file: bash download.sh vgg16)')


def feature_errors(cfg, flag):
    """Value errors of the feature source chosen by --<flag> (for PatchLoss.validate)."""
    if getattr(cfg, flag) == 'vgg16' and cfg.query_side != 'fake':
        return [f'--{flag} vgg16 needs --query_side fake: the frozen VGG16 of the real image passes '
                f'no gradient to the generator']
    return []


def feature_requirements(cfg, flag):
    """The weight file of the feature source chosen by --<flag> (for PatchLoss.requirements)."""
    if getattr(cfg, flag) != 'vgg16':
        return []
    try:
        require_weight('vgg16', check_hash=False)   # the hash is checked once, when the file is loaded
    except UserError as err:
        return [f'--{flag} vgg16: {err}']
    return []


def feature_channels(source, encoder_channels):
    """Channel count of every map the source yields."""
    return list(VGG_CHANNELS) if source == 'vgg16' else list(encoder_channels)


def feature_maps(source, inp):
    """(maps_q, maps_k): per layer (B, C_l, H_l, W_l); query maps carry gradients, key maps do not."""
    if source == 'encoder':
        return list(inp.feat_q), list(inp.feat_k)   # the objective detached the key side
    trunk = vgg16_trunk(inp.x_q.device)
    maps_q = trunk(inp.x_q)
    with torch.no_grad():
        maps_k = trunk(inp.x_k)
    return maps_q, maps_k


def real_is_key(cfg):
    """True when the key side is the source image (--query_side fake, the paper's orientation)."""
    return cfg.query_side == 'fake'


def gather_positions(feat, ids):
    """Feature vectors at flat positions ids (K,) of every image: (B, C, H, W) -> (B, K, C)."""
    flat = feat.flatten(2)                 # (B, C, H*W)
    return flat[:, :, ids].transpose(1, 2)
