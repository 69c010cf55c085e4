"""DRN-D-22 for Cityscapes semantic segmentation: the network behind the label->photo scores.

The segmentation network that Hneg_SRC's get_mAP.py builds as
DRNSeg('drn_d_22', classes=19) (Yu et al., "Dilated Residual Networks", 2017):

    base  the DRN-D-22 trunk without its average pool and classifier: nine stages
          base.0 ... base.8, output stride 8, 512 channels
    seg   1x1 convolution 512 -> 19 with bias (class scores at 1/8 resolution)
    up    fixed bilinear up-sampling x8: ConvTranspose2d(19, 19, 16, stride 8,
          padding 4, groups 19, no bias), so an H x W input (H, W multiples of 8)
          gives H x W scores
    (the release ends with a LogSoftmax; the segmentation is its argmax, which is
    the argmax of the scores, so forward() returns the scores)

DRN-D-22 is DRN(BasicBlock, [1, 1, 2, 2, 2, 2, 1, 1], arch 'D') with channels
(16, 32, 64, 128, 256, 512, 512, 512):

    stage  kind                        channels  stride  dilation
    0      7x7 conv + BN + ReLU        3 -> 16   1       1
    1      3x3 conv + BN + ReLU        16 -> 16  1       1
    2      3x3 conv + BN + ReLU        16 -> 32  2       1
    3      2 BasicBlocks               32 -> 64  2       1
    4      2 BasicBlocks               64 -> 128 2       1
    5      2 BasicBlocks               128 -> 256 1      2
    6      2 BasicBlocks               256 -> 512 1      4
    7      3x3 conv + BN + ReLU        512 -> 512 1      2
    8      3x3 conv + BN + ReLU        512 -> 512 1      1

Every convolution of the trunk has no bias; padding equals dilation (3 for the
7x7), so only the strides change the size. A BasicBlock is conv3x3 (bn1, ReLU)
-> conv3x3 (bn2), plus the input (through a 1x1 conv + BN "downsample" when the
stride or the width changes: the first block of stages 3-6), then ReLU; both
of its convolutions use the stage's dilation.

State-dict keys (RELEASE_KEYS lists them with their shapes), what is verified
and what is inferred:
* From the reference description of the release: the architecture above
  (BasicBlock, layers, arch D, channels, output stride 8), that `base` is the
  trunk's children without the last two, the 1x1 `seg` conv with bias and the
  fixed bilinear `up` transposed conv (which has a weight, so the file holds
  `up.weight`), and that the released .pth is loaded strictly into DRNSeg.
* Inferred from that module structure, not checked against the released file
  (not inspected yet): the key names. `base.<i>` numbers the nine
  stages in the order DRN registers them (layer0 ... layer8); a conv stage is a
  Sequential (conv `.0`, BatchNorm `.1`, ReLU); a block stage is a Sequential of
  blocks whose parts are named conv1, bn1, conv2, bn2 and downsample (`.0`
  conv, `.1` BatchNorm), as torchvision's ResNet BasicBlock, which DRN's
  follows; the stage and block parameters (strides, dilations, which blocks
  have a downsample) follow from the table above.
* Inferred: the release predates BatchNorm's num_batches_tracked buffer
  (PyTorch 0.4.1), so the loader accepts files with or without it
  (load_drn_state_dict). A file saved as {'state_dict': ...} with a 'module.'
  prefix (DRN's training checkpoints) is accepted too, as get_mAP.py does.
"""
import math

import torch
import torch.nn as nn

NUM_CLASSES = 19
CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)
LAYERS = (1, 1, 2, 2, 2, 2, 1, 1)
OUTPUT_STRIDE = 8
UP_KERNEL = 16   # the transposed conv of `up`: kernel 16, stride 8, padding 4 -> exactly x8


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------

def conv_bn_relu(in_ch, out_ch, kernel, stride=1, dilation=1):
    """One conv stage: Sequential(conv `.0` without bias, BatchNorm `.1`, ReLU); padding keeps the size at stride 1."""
    padding = dilation * (kernel // 2)
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation=dilation, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    """Two dilated 3x3 convs with BatchNorm and a residual connection (1x1 conv + BN when the shape changes)."""

    def __init__(self, in_ch, out_ch, stride=1, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + shortcut)


def block_stage(in_ch, out_ch, blocks, stride, dilation):
    """A stage of BasicBlocks; only the first changes the stride or the width."""
    return nn.Sequential(BasicBlock(in_ch, out_ch, stride, dilation),
                         *[BasicBlock(out_ch, out_ch, 1, dilation) for _ in range(blocks - 1)])


def drn_d_22_trunk():
    """The nine stages of DRN-D-22 (table in the module docstring) as Sequential base.0 ... base.8."""
    c, n = CHANNELS, LAYERS
    return nn.Sequential(
        conv_bn_relu(3, c[0], 7),
        conv_bn_relu(c[0], c[0], 3),
        conv_bn_relu(c[0], c[1], 3, stride=2),
        block_stage(c[1], c[2], n[2], stride=2, dilation=1),
        block_stage(c[2], c[3], n[3], stride=2, dilation=1),
        block_stage(c[3], c[4], n[4], stride=1, dilation=2),
        block_stage(c[4], c[5], n[5], stride=1, dilation=4),
        conv_bn_relu(c[5], c[6], 3, dilation=2),
        conv_bn_relu(c[6], c[7], 3, dilation=1))


def bilinear_up_kernel(size):
    """(size, size) bilinear interpolation kernel of a transposed conv that up-samples by ceil(size / 2)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor   # (size,)
    return torch.outer(ramp, ramp).float()


class DRNSeg(nn.Module):
    """DRN-D-22 segmentation: images (N, 3, H, W), H and W multiples of 8 -> class scores (N, 19, H, W)."""

    def __init__(self, num_classes=NUM_CLASSES):
        super().__init__()
        self.base = drn_d_22_trunk()
        self.seg = nn.Conv2d(CHANNELS[-1], num_classes, 1, bias=True)
        self.up = nn.ConvTranspose2d(num_classes, num_classes, UP_KERNEL, stride=OUTPUT_STRIDE,
                                     padding=OUTPUT_STRIDE // 2, groups=num_classes, bias=False)
        self.reset_parameters()

    def reset_parameters(self):
        """He-normal convs, unit BatchNorm, zero seg bias, the fixed bilinear `up` (a random network for tests)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0, math.sqrt(2 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.seg.bias)
        with torch.no_grad():
            self.up.weight.copy_(bilinear_up_kernel(UP_KERNEL).expand_as(self.up.weight))   # (19, 1, 16, 16)
        self.up.weight.requires_grad_(False)   # a fixed interpolation, never trained

    def forward(self, x):
        return self.up(self.seg(self.base(x)))


# ----------------------------------------------------------------------------------------------
# The released state dict
# ----------------------------------------------------------------------------------------------

def _conv_bn(prefix, out_ch, in_ch, kernel, conv='0', bn='1'):
    """(key, shape) of a bias-free conv and its BatchNorm (without num_batches_tracked)."""
    return [(f'{prefix}{conv}.weight', (out_ch, in_ch, kernel, kernel))] + \
        [(f'{prefix}{bn}.{name}', (out_ch,)) for name in ('weight', 'bias', 'running_mean', 'running_var')]


def _release_keys():
    keys = _conv_bn('base.0.', 16, 3, 7) + _conv_bn('base.1.', 16, 16, 3) + _conv_bn('base.2.', 32, 16, 3)
    for stage, in_ch, out_ch in ((3, 32, 64), (4, 64, 128), (5, 128, 256), (6, 256, 512)):
        for block in (0, 1):
            prefix = f'base.{stage}.{block}.'
            keys += _conv_bn(prefix, out_ch, out_ch if block else in_ch, 3, 'conv1', 'bn1')
            keys += _conv_bn(prefix, out_ch, out_ch, 3, 'conv2', 'bn2')
            if block == 0:
                keys += _conv_bn(prefix + 'downsample.', out_ch, in_ch, 1)
    keys += _conv_bn('base.7.', 512, 512, 3) + _conv_bn('base.8.', 512, 512, 3)
    return keys + [('seg.weight', (19, 512, 1, 1)), ('seg.bias', (19,)), ('up.weight', (19, 1, 16, 16))]


# (key, shape) of every tensor of drn_d_22_cityscapes.pth, in the module's order, num_batches_tracked
# excepted (names inferred: see the module docstring). Written out stage by stage, apart from DRNSeg's
# construction, so that a test can hold one against the other.
RELEASE_KEYS = tuple(_release_keys())


def load_drn_state_dict(state):
    """The state dict of a DRN-D-22 Cityscapes file in this module's naming.

    Accepts DRN's training checkpoints ({'state_dict': ...} with 'module.' keys) and
    files without BatchNorm's num_batches_tracked (added as 0: eval mode never reads it).
    Anything else is returned as it is, for the caller's strict key check.
    """
    if isinstance(state, dict) and isinstance(state.get('state_dict'), dict):
        state = {(k[len('module.'):] if k.startswith('module.') else k): v for k, v in state['state_dict'].items()}
    if not isinstance(state, dict):
        return state
    state = dict(state)
    for key in list(state):
        if key.endswith('.running_mean'):
            state.setdefault(key[:-len('running_mean')] + 'num_batches_tracked', torch.tensor(0, dtype=torch.long))
    return state
