"""CUT's networks, module for module at the released indices, so the state_dict keys and shapes match.

ResnetGenerator, NLayerDiscriminator ('basic' = 3 layers, the 70x70 PatchGAN)
and PatchSampleF of the CUT release (Park et al., ECCV 2020), rebuilt from
their description: every module sits at the index it has in the released
nn.Sequential, so the keys are model.<index>.<...> (mlp_<l>.<...> for the
heads), a released latest_net_G.pth loads strictly here and ours load in the
released code. Instance norm has no parameters, so it adds no keys; the fixed
blur filters of the anti-aliased down- and up-sampling are persistent
buffers named 'filt', as released.

One change, in how the heads come to exist: the release creates them at the
first forward pass; here they are built with the generator, from the channel
counts of the tapped layers, which the generator knows at construction
(tap_channels). Their keys and shapes are the released ones.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from core.contrastive.sampler import PatchSampler

NORMS = ('instance', 'batch', 'none')
INIT_TYPES = ('xavier', 'normal', 'kaiming', 'orthogonal')
GENERATOR_BLOCKS = {'resnet_9blocks': 9, 'resnet_6blocks': 6}   # --netG -> residual blocks
DISCRIMINATORS = ('basic', 'n_layers')                        # --netD: 3 layers, or --n_layers_D


def num_layers(n_blocks, antialias=True, antialias_up=True):
    """Length of ResnetGenerator.model: stem 4, two down blocks of 4 (3 without blur), the residual
    blocks, two up blocks of 4 (3 with transposed convs), head 3."""
    return 4 + 2 * (4 if antialias else 3) + n_blocks + 2 * (4 if antialias_up else 3) + 3


def binomial_filter(size):
    """(size, size) outer product of the binomial row of that length, normalised to sum 1."""
    row = torch.tensor([math.comb(size - 1, k) for k in range(size)], dtype=torch.float64)
    kernel = torch.outer(row, row)
    return (kernel / kernel.sum()).float()


def norm_layer(kind, channels):
    """The --normG / --normD layer: instance norm without parameters or running statistics, as released."""
    if kind == 'instance':
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == 'batch':
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    return nn.Identity()


def uses_bias(norm):
    """The release gives convolutions a bias only before an instance norm (a batch norm has its own)."""
    return norm == 'instance'


class Downsample(nn.Module):
    """Anti-aliased 2x down-sampling (Zhang 2019): reflection pad 1, fixed 3x3 binomial blur, stride 2."""

    def __init__(self, channels):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.register_buffer('filt', binomial_filter(3)[None, None].repeat(channels, 1, 1, 1))   # (C, 1, 3, 3)

    def forward(self, x):
        return F.conv2d(self.pad(x), self.filt, stride=2, groups=x.shape[1])


class Upsample(nn.Module):
    """Anti-aliased 2x up-sampling: replicate pad 1, transposed depthwise conv with the 4x4 binomial filter
    scaled by 4 (stride 2, padding 2), one row and column cropped on each side."""

    def __init__(self, channels):
        super().__init__()
        self.pad = nn.ReplicationPad2d(1)
        self.register_buffer('filt', (binomial_filter(4) * 4)[None, None].repeat(channels, 1, 1, 1))   # (C, 1, 4, 4)

    def forward(self, x):
        y = F.conv_transpose2d(self.pad(x), self.filt, stride=2, padding=2, groups=x.shape[1])   # (B, C, 2H+2, 2W+2)
        return y[:, :, 1:-1, 1:-1]                                                               # (B, C, 2H, 2W)


class ResnetBlock(nn.Module):
    """x + [pad, conv3x3, norm, ReLU, (dropout), pad, conv3x3, norm](x); no activation after the sum."""

    def __init__(self, dim, norm='instance', use_dropout=False):
        super().__init__()
        bias = uses_bias(norm)
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), norm_layer(norm, dim), nn.ReLU(True)]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), norm_layer(norm, dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """CUT's generator: a 7x7 stem, two down-sampling blocks, n_blocks residual blocks at 1/4 size,
    two up-sampling blocks and a 7x7 tanh head, all in one nn.Sequential `model`.

    antialias: stride-1 conv + blur-pool down-sampling (False: stride-2 conv, the
    release's --no_antialias); antialias_up: blur up-sampling + 3x3 conv (False:
    transposed conv, --no_antialias_up). layer_channels[i] is the channel count
    of model[i]'s output, the width of a patch head on that layer.
    """

    def __init__(self, input_nc=3, output_nc=3, ngf=64, n_blocks=9, norm='instance', use_dropout=False,
                 antialias=True, antialias_up=True):
        super().__init__()
        bias = uses_bias(norm)
        layers, channels = [], []

        def add(c_out, *modules):
            layers.extend(modules)
            channels.extend([c_out] * len(modules))

        add(input_nc, nn.ReflectionPad2d(3))
        add(ngf, nn.Conv2d(input_nc, ngf, 7, bias=bias), norm_layer(norm, ngf), nn.ReLU(True))
        for i in range(2):   # down-sampling, 2x each
            c_in, c_out = ngf * 2 ** i, ngf * 2 ** (i + 1)
            if antialias:
                add(c_out, nn.Conv2d(c_in, c_out, 3, stride=1, padding=1, bias=bias), norm_layer(norm, c_out),
                    nn.ReLU(True), Downsample(c_out))
            else:
                add(c_out, nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=bias), norm_layer(norm, c_out),
                    nn.ReLU(True))
        dim = ngf * 4
        for _ in range(n_blocks):
            add(dim, ResnetBlock(dim, norm, use_dropout))
        for i in range(2):   # up-sampling, 2x each
            c_in, c_out = ngf * 2 ** (2 - i), ngf * 2 ** (1 - i)
            if antialias_up:
                add(c_in, Upsample(c_in))
                add(c_out, nn.Conv2d(c_in, c_out, 3, stride=1, padding=1, bias=bias), norm_layer(norm, c_out),
                    nn.ReLU(True))
            else:
                add(c_out, nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=bias),
                    norm_layer(norm, c_out), nn.ReLU(True))
        add(ngf, nn.ReflectionPad2d(3))
        add(output_nc, nn.Conv2d(ngf, output_nc, 7), nn.Tanh())
        self.model = nn.Sequential(*layers)
        self.layer_channels = tuple(channels)

    def forward(self, x):
        """(B, input_nc, H, W) in [-1, 1] -> (B, output_nc, H, W) in [-1, 1]; H and W multiples of 4."""
        return self.model(x)

    def forward_with_taps(self, x, layers):
        """(G(x), [output of model[i] for i in layers]): the translation and its encoder features, one pass.

        layers: ascending indices. As in the release, a tapped tensor is the
        module's output as the next modules leave it (an in-place ReLU right
        after a tapped norm rectifies it).
        """
        wanted, feats = set(layers), []
        for i, module in enumerate(self.model):
            x = module(x)
            if i in wanted:
                feats.append(x)
        return x, feats

    def encode(self, x, layers):
        """[output of model[i] for i in layers] (ascending): runs the network only up to layers[-1]."""
        wanted, feats = set(layers), []
        for i, module in enumerate(self.model):
            x = module(x)
            if i in wanted:
                feats.append(x)
            if i == layers[-1]:
                break
        return feats

    def tap_channels(self, layers):
        """Channel count of every tapped layer (the input width of its patch head)."""
        return [self.layer_channels[i] for i in layers]


class NLayerDiscriminator(nn.Module):
    """PatchGAN: 4x4 convolutions, LeakyReLU 0.2, n_layers down-sampling stages, raw logits per patch.

    With antialias each stride-2 conv of the classic PatchGAN becomes a stride-1
    conv followed by a blur-pool Downsample, as released.
    """

    def __init__(self, input_nc=3, ndf=64, n_layers=3, norm='instance', antialias=True):
        super().__init__()
        bias = uses_bias(norm)
        layers = [nn.Conv2d(input_nc, ndf, 4, stride=1 if antialias else 2, padding=1), nn.LeakyReLU(0.2, True)]
        if antialias:
            layers.append(Downsample(ndf))
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1 if antialias else 2, padding=1, bias=bias),
                       norm_layer(norm, ndf * mult), nn.LeakyReLU(0.2, True)]
            if antialias:
                layers.append(Downsample(ndf * mult))
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=bias), norm_layer(norm, ndf * mult),
                   nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        """(B, input_nc, H, W) -> (B, 1, H', W') logits, one per overlapping patch (30x30 at 256 px)."""
        return self.model(x)


class PatchSampleF(PatchSampler):
    """The shared patch sampler (same sampling, projection and normalisation) with CUT's module names:
    one Linear-ReLU-Linear head mlp_<l> per tapped layer, so its state_dict is the released netF's."""

    def __init__(self, in_channels, out_dim=256):
        nn.Module.__init__(self)   # not PatchSampler.__init__: its ModuleList would name the heads mlp.<l>
        self.num_heads = len(in_channels)
        for l, c in enumerate(in_channels):
            self.add_module(f'mlp_{l}', nn.Sequential(nn.Linear(c, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim)))

    @property
    def mlp(self):
        """The heads in layer order (what PatchSampler.forward iterates)."""
        return [getattr(self, f'mlp_{l}') for l in range(self.num_heads)]


def init_weights(net, init_type='xavier', gain=0.02):
    """The release's initialisation (--init_type, --init_gain): every conv and linear weight from the
    chosen law, biases 0; batch-norm weights N(1, gain)."""
    for module in net.modules():
        name = type(module).__name__
        if ('Conv' in name or 'Linear' in name) and getattr(module, 'weight', None) is not None:
            if init_type == 'xavier':
                nn.init.xavier_normal_(module.weight, gain=gain)
            elif init_type == 'normal':
                nn.init.normal_(module.weight, 0.0, gain)
            elif init_type == 'kaiming':
                nn.init.kaiming_normal_(module.weight, a=0, mode='fan_in')
            else:
                nn.init.orthogonal_(module.weight, gain=gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, gain)
            nn.init.zeros_(module.bias)
    return net
