"""Frozen ImageNet VGG16 features for the LSeSim and PatchGCL plug-ins, read from the weight cache.

The released LSeSim (Zheng et al. CVPR 2021) and PatchGCL code compare
relu3_1, relu4_1 and relu4_3 of torchvision's ImageNet VGG16. The weights come
from the project's weight cache (`bash download.sh vgg16`); a missing or
corrupt file is a clear UserError, never a download.

The trunk is built once per weight file and device and kept in a module-level
cache, outside every plug-in: it is never saved in checkpoints, never handed
to an optimizer, and its parameters never require gradients (gradients still
flow through it into the translated image).
"""
import torch
from torch import nn

from core.utils.errors import UserError
from core.utils.weights import WEIGHTS, require_weight

# Layers of torchvision's vgg16().features up to relu4_3: channel counts and 'M' for max-pooling.
_PLAN = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512)
# Index in vgg16().features of each tapped ReLU output.
TAPS = {'relu3_1': 11, 'relu4_1': 18, 'relu4_3': 22}
VGG_LAYERS = ('relu3_1', 'relu4_1', 'relu4_3')
VGG_CHANNELS = (256, 512, 512)

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

_CACHE = {}


def _features_up_to_relu4_3():
    """nn.Sequential with torchvision's vgg16().features layers 0..22 (same indices, same keys)."""
    layers, dim_in = [], 3
    for item in _PLAN:
        if item == 'M':
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(dim_in, item, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            dim_in = item
    return nn.Sequential(*layers)


class VGG16Trunk(nn.Module):
    """Images in [-1, 1] -> [relu3_1, relu4_1, relu4_3] of ImageNet VGG16."""

    def __init__(self):
        super().__init__()
        self.features = _features_up_to_relu4_3()
        self.register_buffer('mean', torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x):
        """x (B, 3, H, W) in [-1, 1] -> maps (B, 256, H/4, W/4), (B, 512, H/8, W/8) x 2."""
        # As the releases: [-1, 1] -> [0, 1], then ImageNet normalisation.
        h = ((x + 1) * 0.5 - self.mean) / self.std
        wanted = {index: name for name, index in TAPS.items()}
        maps = {}
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in wanted:
                maps[wanted[index]] = h
        return [maps[name] for name in VGG_LAYERS]


def _read_state_dict(path):
    """The tensors of a torchvision VGG16 file; memory-mapped when the format allows it."""
    hint = f'delete it and run: bash download.sh {WEIGHTS["vgg16"].target}'
    try:
        try:
            # mmap avoids reading the 400 MB classifier, which is not used.
            return torch.load(path, map_location='cpu', weights_only=True, mmap=True)
        except RuntimeError:
            return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:   # any failure to read means an unusable file
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f'{path} is not a readable VGG16 weight file ({first_line}); {hint}') from None


def load_vgg16_trunk(path):
    """A frozen VGG16Trunk (eval mode, no parameter gradients) with the weights of `path`, on the CPU."""
    state = _read_state_dict(path)
    trunk = VGG16Trunk()
    own = trunk.features.state_dict()
    wanted = {f'features.{key}': key for key in own}
    missing = [k for k in wanted if k not in state]
    shapes = [k for k in wanted if k in state and tuple(state[k].shape) != tuple(own[wanted[k]].shape)]
    if missing or shapes:
        raise UserError(f'{path} is not torchvision\'s VGG16 (missing: {", ".join(missing[:4]) or "-"}; '
                        f'wrong shape: {", ".join(shapes[:4]) or "-"}); delete it and run: '
                        f'bash download.sh {WEIGHTS["vgg16"].target}')
    trunk.features.load_state_dict({wanted[k]: state[k] for k in wanted})
    return trunk.eval().requires_grad_(False)


def vgg16_trunk(device):
    """The shared frozen trunk on `device`, loaded (and its SHA-256 checked) on first use."""
    path = require_weight('vgg16', check_hash=False)   # existence only: this runs every step
    key = (path, str(device))
    if key not in _CACHE:
        _CACHE[key] = load_vgg16_trunk(require_weight('vgg16')).to(device)
    return _CACHE[key]
