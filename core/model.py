"""StarGAN v2 networks (Choi et al., CVPR 2020) and the Hneg_SRC generator variant.

Module attributes and registration order follow the official code, so the
state_dict keys, shapes and parameter order (which Adam states are keyed by)
are identical and the released checkpoints load strictly.

The generator is split into run_encoder() and run_decoder() so that training can run
the encoder once per input image and reuse the style-free result for every
style it decodes, and take the contrastive features from that same pass.
"""
import copy
import math
from typing import List, NamedTuple

import torch
import torch.nn.functional as F
from munch import Munch
from torch import nn

ARCHS = ('stargan-v2', 'hsrc')


def default_base_dim(img_size):
    """Channels of the first conv as upstream: 64 at 256 px, 128 at 128 px."""
    return 2 ** 14 // img_size


def _log2(n):
    return int(round(math.log2(n)))


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------

class ResBlk(nn.Module):
    """Pre-activation residual block; optional instance norm and 2x average-pool downsampling."""

    def __init__(self, dim_in, dim_out, normalize=False, downsample=False):
        super().__init__()
        self.normalize = normalize
        self.downsample = downsample
        self.learned_sc = dim_in != dim_out
        # Registration order conv1, conv2, norm1, norm2, conv1x1 as upstream (keys and Adam order).
        self.conv1 = nn.Conv2d(dim_in, dim_in, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        if normalize:
            self.norm1 = nn.InstanceNorm2d(dim_in, affine=True)
            self.norm2 = nn.InstanceNorm2d(dim_in, affine=True)
        if self.learned_sc:
            self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False)

    def _shortcut(self, x):
        if self.learned_sc:
            x = self.conv1x1(x)
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        return x

    def _residual(self, x):
        if self.normalize:
            x = self.norm1(x)
        x = self.conv1(F.leaky_relu(x, 0.2))
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        if self.normalize:
            x = self.norm2(x)
        return self.conv2(F.leaky_relu(x, 0.2))

    def forward(self, x):
        # Dividing by sqrt(2) keeps unit variance after adding two unit-variance paths.
        return (self._shortcut(x) + self._residual(x)) / math.sqrt(2)


class AdaIN(nn.Module):
    """Adaptive instance norm: (1 + gamma(s)) * IN(x) + beta(s)."""

    def __init__(self, style_dim, num_features):
        super().__init__()
        self.norm = nn.InstanceNorm2d(num_features, affine=False)
        self.fc = nn.Linear(style_dim, num_features * 2)

    def forward(self, x, s):
        h = self.fc(s)[:, :, None, None]               # (B or 1, 2C, 1, 1)
        gamma, beta = torch.chunk(h, chunks=2, dim=1)  # (B or 1, C, 1, 1) each
        return (1 + gamma) * self.norm(x) + beta


class AdainResBlk(nn.Module):
    """Decoder block of StarGAN v2, style-modulated by AdaIN; optional nearest 2x upsampling."""

    def __init__(self, dim_in, dim_out, style_dim=64, upsample=False):
        super().__init__()
        self.upsample = upsample
        self.learned_sc = dim_in != dim_out
        self.conv1 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_out, dim_out, 3, 1, 1)
        self.norm1 = AdaIN(style_dim, dim_in)
        self.norm2 = AdaIN(style_dim, dim_out)
        if self.learned_sc:
            self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False)

    def _shortcut(self, x):
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode='nearest')
        if self.learned_sc:
            x = self.conv1x1(x)
        return x

    def _residual(self, x, s):
        x = F.leaky_relu(self.norm1(x, s), 0.2)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode='nearest')
        x = self.conv1(x)
        x = F.leaky_relu(self.norm2(x, s), 0.2)
        return self.conv2(x)

    def forward(self, x, s):
        return (self._residual(x, s) + self._shortcut(x)) / math.sqrt(2)


class ConvBlk(nn.Module):
    """Hneg_SRC's plain block: [nearest 2x up] -> IN -> LReLU -> conv (4x4 stride 2 down or 3x3).

    It has no shortcut and ignores the style, as in the released code.
    """

    def __init__(self, dim_in, dim_out, upsample=False):
        super().__init__()
        self.upsample = upsample
        # conv1 before norm1: the released key order.
        if upsample:
            self.conv1 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        else:
            self.conv1 = nn.Conv2d(dim_in, dim_out, 4, 2, 1)
        self.norm1 = nn.InstanceNorm2d(dim_in, affine=True)

    def forward(self, x, s=None):
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode='nearest')
        return self.conv1(F.leaky_relu(self.norm1(x), 0.2))


# ----------------------------------------------------------------------------------------------
# Generators
# ----------------------------------------------------------------------------------------------

class EncoderPlan(NamedTuple):
    """Geometry of a generator encoder, computed once by encoder_plan()."""
    dims: List[int]       # channels after from_rgb, then after each downsampling block (num_down + 1)
    channels: List[int]   # output channels of every encoder block
    sizes: List[int]      # output height (= width) of every encoder block

    @property
    def num_blocks(self):
        return len(self.channels)

    @property
    def num_down(self):
        return len(self.dims) - 1


def encoder_plan(arch, img_size, base_dim=None, max_conv_dim=512):
    """Channels and output sizes of the encoder blocks of `arch` at `img_size`.

    stargan-v2: log2(S)-4 downsampling ResBlks, then 2 bottleneck ResBlks
    (the bottleneck is 16x16 at every size). hsrc: 2 strided-conv blocks,
    then 4 bottleneck ResBlks at S/4. Channels double per downsampling block
    from base_dim (default_base_dim(S) when None), capped at max_conv_dim.
    """
    if arch == 'stargan-v2':
        # floor(log2), so that invalid sizes (rejected by the config) still get a plan for its messages
        num_down, num_neck = max(0, img_size.bit_length() - 5), 2
    elif arch == 'hsrc':
        num_down, num_neck = 2, 4
    else:
        raise ValueError(f'unknown generator architecture {arch!r}; available: {", ".join(ARCHS)}')
    dims = [base_dim or default_base_dim(img_size)]
    for _ in range(num_down):
        dims.append(min(dims[-1] * 2, max_conv_dim))
    sizes = [img_size // 2 ** (i + 1) for i in range(num_down)]
    neck_size = img_size // 2 ** num_down
    return EncoderPlan(dims, dims[1:] + [dims[-1]] * num_neck, sizes + [neck_size] * num_neck)


class Encoding(NamedTuple):
    """Style-free result of Generator.run_encoder, reusable for any number of styles."""
    h: torch.Tensor                   # (B, C_bottleneck, S_b, S_b)
    feats: List[torch.Tensor]         # outputs of the tapped encoder blocks, in tap order


def _reject_w_hpf(w_hpf):
    # Upstream's FAN high-pass skips (w_hpf > 0, its 2020 CelebA-HQ model) are not implemented.
    if w_hpf != 0:
        raise ValueError(f'w_hpf={w_hpf}: the FAN high-pass path is not supported; use w_hpf=0')


class _EncoderDecoder(nn.Module):
    """Shared forward logic of both generator architectures.

    Subclasses create from_rgb, encode, decode, to_rgb in that order, which is
    the upstream registration order, and keep their EncoderPlan as self.plan.
    """
    plan: EncoderPlan

    def run_encoder(self, x, taps=()):
        """Run from_rgb and the encoder once; keep the outputs of the blocks listed in taps."""
        x = self.from_rgb(x)
        feats = {}
        for i, block in enumerate(self.encode):
            x = block(x)
            if i in taps:
                feats[i] = x
        return Encoding(x, [feats[i] for i in taps])

    def run_decoder(self, enc, s):
        """Decode an Encoding with style s (B or 1, style_dim)."""
        x = enc.h
        for block in self.decode:
            x = block(x, s)
        return self.to_rgb(x)

    def forward(self, x, s):
        return self.run_decoder(self.run_encoder(x), s)

    def tap_channels(self, taps):
        """Output channels of the given encoder blocks (known at construction)."""
        return [self.plan.channels[i] for i in taps]

    def _make_to_rgb(self, dim):
        # No tanh: the output is unbounded as upstream and only clamped when saved.
        return nn.Sequential(nn.InstanceNorm2d(dim, affine=True), nn.LeakyReLU(0.2), nn.Conv2d(dim, 3, 1, 1, 0))


class Generator(_EncoderDecoder):
    """Official StarGAN v2 generator: log2(S)-4 down/up stages, 2 bottleneck blocks.

    w_hpf is kept for upstream's signature; only 0 is supported.
    """

    def __init__(self, img_size=256, style_dim=64, max_conv_dim=512, w_hpf=0, base_dim=None):
        super().__init__()
        _reject_w_hpf(w_hpf)
        self.img_size = img_size
        self.plan = plan = encoder_plan('stargan-v2', img_size, base_dim, max_conv_dim)
        dims = plan.dims
        self.from_rgb = nn.Conv2d(3, dims[0], 3, 1, 1)
        down = [ResBlk(a, b, normalize=True, downsample=True) for a, b in zip(dims[:-1], dims[1:])]
        neck = [ResBlk(dims[-1], dims[-1], normalize=True) for _ in range(plan.num_blocks - plan.num_down)]
        self.encode = nn.ModuleList(down + neck)
        # The decoder mirrors the encoder: the bottleneck blocks, then upsampling back to dims[0].
        up = [AdainResBlk(b, a, style_dim, upsample=True) for a, b in zip(dims[:-1], dims[1:])]
        neck_dec = [AdainResBlk(dims[-1], dims[-1], style_dim) for _ in neck]
        self.decode = nn.ModuleList(neck_dec + up[::-1])
        self.to_rgb = self._make_to_rgb(dims[0])


class HSRCGenerator(_EncoderDecoder):
    """The lighter generator of the Hneg_SRC release (model_src.py).

    Two strided-conv downsampling blocks, four bottleneck ResBlks, four AdaIN
    ResBlks and two style-free upsampling ConvBlks; no skip connections.
    w_hpf is kept for the common signature; only 0 is supported.
    """

    def __init__(self, img_size=256, style_dim=64, max_conv_dim=512, w_hpf=0, base_dim=None):
        super().__init__()
        _reject_w_hpf(w_hpf)
        self.img_size = img_size
        self.plan = plan = encoder_plan('hsrc', img_size, base_dim, max_conv_dim)
        dims = plan.dims
        self.from_rgb = nn.Conv2d(3, dims[0], 3, 1, 1)
        down = [ConvBlk(a, b) for a, b in zip(dims[:-1], dims[1:])]
        neck = [ResBlk(dims[-1], dims[-1], normalize=True) for _ in range(plan.num_blocks - plan.num_down)]
        self.encode = nn.ModuleList(down + neck)
        neck_dec = [AdainResBlk(dims[-1], dims[-1], style_dim) for _ in neck]
        up = [ConvBlk(b, a, upsample=True) for a, b in zip(dims[:-1], dims[1:])]
        self.decode = nn.ModuleList(neck_dec + up[::-1])
        self.to_rgb = self._make_to_rgb(dims[0])


def default_taps(arch, img_size, w_hpf=0):
    """Encoder blocks whose outputs feed the patch losses when --nce_layers is not given.

    hsrc: as the release, every encoder block with a 64x64 output (blocks 1-5 at
    256 px, block 0 at 128 px); sizes where none exists use the blocks at the
    bottleneck resolution (1-5).
    stargan-v2: up to three downsampling blocks (finest first) plus the last
    bottleneck block, i.e. 128/64/32/16 px at 256 px.
    w_hpf is accepted for compatibility and ignored (only 0 is supported).
    """
    plan = encoder_plan(arch, img_size)
    if arch == 'hsrc':
        taps = [i for i, s in enumerate(plan.sizes) if s == 64]
        return taps or [i for i, s in enumerate(plan.sizes) if s == plan.sizes[-1]]
    return sorted(set(range(min(3, plan.num_down))) | {plan.num_blocks - 1})


def num_encoder_blocks(arch, img_size, w_hpf=0):
    """Number of blocks in Generator.encode for the architecture (w_hpf: ignored, only 0 is supported)."""
    return encoder_plan(arch, img_size).num_blocks


# ----------------------------------------------------------------------------------------------
# Mapping network, style encoder, discriminator
# ----------------------------------------------------------------------------------------------

def _select_domain(out, y):
    """Pick row y_b of (B, num_domains, ...) for every sample b."""
    return out[torch.arange(y.size(0), device=y.device), y]


class MappingNetwork(nn.Module):
    """z -> per-domain style codes: 4 shared and 4 domain-specific linear layers."""

    def __init__(self, latent_dim=16, style_dim=64, num_domains=2, hidden_dim=512):
        super().__init__()
        layers = [nn.Linear(latent_dim, hidden_dim), nn.ReLU()]
        for _ in range(3):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]
        self.shared = nn.Sequential(*layers)
        self.unshared = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                          nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                          nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                          nn.Linear(hidden_dim, style_dim))
            for _ in range(num_domains))

    def all_styles(self, z):
        """Style codes of every domain: z (B, latent_dim) -> (B, num_domains, style_dim)."""
        h = self.shared(z)
        return torch.stack([head(h) for head in self.unshared], dim=1)

    def forward(self, z, y):
        return _select_domain(self.all_styles(z), y)   # (B, style_dim)


def _trunk(img_size, base_dim, max_conv_dim):
    """Shared conv trunk of the style encoder and discriminator: S x S image -> (B, C, 1, 1)."""
    dim_in = base_dim or default_base_dim(img_size)
    blocks = [nn.Conv2d(3, dim_in, 3, 1, 1)]
    for _ in range(_log2(img_size) - 2):
        dim_out = min(dim_in * 2, max_conv_dim)
        blocks.append(ResBlk(dim_in, dim_out, downsample=True))
        dim_in = dim_out
    # After log2(S)-2 halvings the map is 4x4; the valid 4x4 conv reduces it to 1x1.
    blocks += [nn.LeakyReLU(0.2), nn.Conv2d(dim_in, dim_in, 4, 1, 0), nn.LeakyReLU(0.2)]
    return blocks, dim_in


class StyleEncoder(nn.Module):
    """Image -> per-domain style codes."""

    def __init__(self, img_size=256, style_dim=64, num_domains=2, max_conv_dim=512, base_dim=None):
        super().__init__()
        blocks, dim_out = _trunk(img_size, base_dim, max_conv_dim)
        self.shared = nn.Sequential(*blocks)
        self.unshared = nn.ModuleList(nn.Linear(dim_out, style_dim) for _ in range(num_domains))

    def forward(self, x, y):
        h = self.shared(x).flatten(1)                                   # (B, C)
        out = torch.stack([head(h) for head in self.unshared], dim=1)  # (B, num_domains, style_dim)
        return _select_domain(out, y)


class Discriminator(nn.Module):
    """Multi-task discriminator: one real/fake logit per domain, the one of y is returned."""

    def __init__(self, img_size=256, num_domains=2, max_conv_dim=512, base_dim=None):
        super().__init__()
        blocks, dim_out = _trunk(img_size, base_dim, max_conv_dim)
        blocks.append(nn.Conv2d(dim_out, num_domains, 1, 1, 0))
        self.main = nn.Sequential(*blocks)

    def forward(self, x, y):
        out = self.main(x).flatten(1)   # (B, num_domains)
        return _select_domain(out, y)   # (B,)


# ----------------------------------------------------------------------------------------------
# Construction
# ----------------------------------------------------------------------------------------------

def he_init(module):
    """Kaiming-normal (fan_in, ReLU gain) weights and zero biases, as upstream."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, mode='fan_in', nonlinearity='relu')
        if module.bias is not None:
            nn.init.constant_(module.bias, 0)


def build_generator(arch, img_size, style_dim, max_conv_dim, w_hpf, base_dim):
    """The generator of the chosen architecture."""
    cls = {'stargan-v2': Generator, 'hsrc': HSRCGenerator}[arch]
    return cls(img_size, style_dim, max_conv_dim, w_hpf, base_dim)


def build_nets(cfg):
    """Build, initialise, then copy to EMA, in that order.

    Returns (nets, nets_ema) as Munch bundles keyed by the upstream names. The
    EMA copies start equal to the initialised online networks (upstream copies
    before initialising, so its EMA starts from PyTorch's default init).
    """
    nets = Munch(
        generator=build_generator(cfg.arch, cfg.img_size, cfg.style_dim, cfg.max_conv_dim,
                                  cfg.w_hpf, cfg.base_dim),
        mapping_network=MappingNetwork(cfg.latent_dim, cfg.style_dim, cfg.num_domains, cfg.hidden_dim),
        style_encoder=StyleEncoder(cfg.img_size, cfg.style_dim, cfg.num_domains, cfg.max_conv_dim,
                                   cfg.base_dim),
        discriminator=Discriminator(cfg.img_size, cfg.num_domains, cfg.max_conv_dim, cfg.base_dim))
    for net in nets.values():
        net.apply(he_init)
    nets_ema = Munch({name: ema_copy(nets[name]) for name in EMA_NETS})
    return nets, nets_ema


EMA_NETS = ('generator', 'mapping_network', 'style_encoder')


def ema_copy(net):
    """A frozen deep copy for exponential moving averaging."""
    return copy.deepcopy(net).eval().requires_grad_(False)
