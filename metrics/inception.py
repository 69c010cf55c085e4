"""The two Inception v3 feature networks of the FID protocols (2048-d pool features).

StarGANInception: torchvision's ImageNet Inception v3 (inception_v3_google-0cc3c7bd.pth),
    run as StarGAN v2's metrics/fid.py runs it: its sub-modules chained
    directly, so torchvision's transform_input re-normalisation never happens
    (the official quirk, kept so that numbers compare with the paper).
TFInception: the TensorFlow "2015-12-05" Inception graph used by the standard
    FID (TTUR, pytorch-fid, torch-fidelity): torchvision's architecture with a
    1008-class head and four patched blocks (pt_inception-2015-12-05-6726825d.pth).

Both take preprocessed float images (N, 3, 299, 299) and return (N, 2048).
With pretrained=False the weights are random (tests); otherwise they come from
the weight cache (core.utils.weights), never from the network. torchvision is
imported when a network is built, not with this module: importing metrics/
(which the command line does to read the metrics' flags) stays fast.
"""
import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.utils.weights import load_weights

FEATURE_DIM = 2048


def random_init(module):
    """He-normal conv and linear weights: random features keep a usable scale through 90+ layers (tests)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity='relu')
    return module


class StarGANInception(nn.Module):
    """torchvision Inception v3 blocks up to the 2048-d average pool, without transform_input."""

    def __init__(self, pretrained=True):
        from torchvision.models.inception import Inception3
        super().__init__()
        net = Inception3(aux_logits=True, init_weights=False)   # the weight file holds the aux head too
        if pretrained:
            load_weights(net, 'inception_v3_torchvision')
        else:
            random_init(net)
        self.blocks = nn.Sequential(
            net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, nn.MaxPool2d(kernel_size=3, stride=2),
            net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, nn.MaxPool2d(kernel_size=3, stride=2),
            net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a,
            net.Mixed_6b, net.Mixed_6c, net.Mixed_6d, net.Mixed_6e,
            net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, nn.AdaptiveAvgPool2d(output_size=(1, 1)))

    def forward(self, x):
        return self.blocks(x).flatten(1)   # (N, 2048)


# ----------------------------------------------------------------------------------------------
# The TF-Inception graph: where its blocks differ from torchvision's (pytorch-fid issue #17)
# ----------------------------------------------------------------------------------------------

def _tf_avg_pool(x):
    """TensorFlow's 3x3 average pool leaves the zero padding out of the average."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


@functools.lru_cache(maxsize=None)
def tf_blocks():
    """(TFInceptionA, TFInceptionC, TFInceptionE): torchvision's blocks with TensorFlow's pooling."""
    from torchvision.models.inception import InceptionA, InceptionC, InceptionE

    class TFInceptionA(InceptionA):
        """InceptionA with TensorFlow's average pool."""

        def forward(self, x):
            branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
            branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            branch_pool = self.branch_pool(_tf_avg_pool(x))
            return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, branch_pool], 1)

    class TFInceptionC(InceptionC):
        """InceptionC with TensorFlow's average pool."""

        def forward(self, x):
            branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            branch7x7dbl = self.branch7x7dbl_1(x)
            for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
                branch7x7dbl = layer(branch7x7dbl)
            branch_pool = self.branch_pool(_tf_avg_pool(x))
            return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, branch_pool], 1)

    class TFInceptionE(InceptionE):
        """InceptionE with TensorFlow's pooling: an average pool in Mixed_7b, a max pool in Mixed_7c."""

        def __init__(self, in_channels, max_pool):
            super().__init__(in_channels)
            self.max_pool = max_pool

        def forward(self, x):
            branch3x3 = self.branch3x3_1(x)
            branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
            branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
            return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(pooled)], 1)

    return TFInceptionA, TFInceptionC, TFInceptionE


class TFInception(nn.Module):
    """The TF 2015-12-05 Inception v3 (FID network) up to its 2048-d average pool."""

    def __init__(self, pretrained=True):
        from torchvision.models.inception import Inception3
        super().__init__()
        TFInceptionA, TFInceptionC, TFInceptionE = tf_blocks()
        net = Inception3(num_classes=1008, aux_logits=False, init_weights=False)
        net.Mixed_5b = TFInceptionA(192, pool_features=32)
        net.Mixed_5c = TFInceptionA(256, pool_features=64)
        net.Mixed_5d = TFInceptionA(288, pool_features=64)
        net.Mixed_6b = TFInceptionC(768, channels_7x7=128)
        net.Mixed_6c = TFInceptionC(768, channels_7x7=160)
        net.Mixed_6d = TFInceptionC(768, channels_7x7=160)
        net.Mixed_6e = TFInceptionC(768, channels_7x7=192)
        net.Mixed_7b = TFInceptionE(1280, max_pool=False)
        net.Mixed_7c = TFInceptionE(2048, max_pool=True)
        if pretrained:
            load_weights(net, 'inception_tf_fid')
        else:
            random_init(net)
        self.net = net

    def forward(self, x):
        n = self.net
        for layer in (n.Conv2d_1a_3x3, n.Conv2d_2a_3x3, n.Conv2d_2b_3x3, n.maxpool1,
                      n.Conv2d_3b_1x1, n.Conv2d_4a_3x3, n.maxpool2,
                      n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a, n.Mixed_6b, n.Mixed_6c, n.Mixed_6d,
                      n.Mixed_6e, n.Mixed_7a, n.Mixed_7b, n.Mixed_7c, n.avgpool):
            x = layer(x)
        return x.flatten(1)   # (N, 2048)
