"""LPIPS diversity: the mean perceptual distance between the outputs generated for one source.

The network is the `lpips` package's LPIPS v0.1 with an AlexNet trunk. Its
linear heads ship inside the wheel and are bit-identical to StarGAN v2's
metrics/lpips_weights.ckpt; the AlexNet trunk comes from the weight cache
(core.utils.weights), never from the network. (StarGAN v2 normalises features with
x * rsqrt(sum x^2 + 1e-10), lpips with x / (sqrt(sum x^2) + 1e-10): equal to
about 1e-7.)

Each output's AlexNet features are computed once and every pair is compared
from them, instead of running the trunk twice per pair (90 times for 10 outputs).
"""
import warnings

import torch

from core.utils.weights import load_weights
from metrics.registry import Metric, Series, register

LPIPS_NAME = 'lpips-alex-v0.1'
LPIPS_WEIGHTS = 'alexnet'   # the trunk's weight file (core.utils.weights name); the heads ship with lpips
# Features of this many images are held at once (about 2.5 MB each at 256 px).
LPIPS_CHUNK_IMAGES = 96


def build_lpips(device, pretrained=True):
    """LPIPS (AlexNet, v0.1 heads) in eval mode on `device`; a random trunk if not pretrained (tests)."""
    import lpips   # lpips and torchvision load only when the network is built (--help stays fast)
    import torchvision
    with warnings.catch_warnings():
        # lpips asks torchvision for an untrained AlexNet with the deprecated pretrained=False
        warnings.simplefilter('ignore', UserWarning)
        model = lpips.LPIPS(net='alex', version='0.1', pretrained=True, pnet_rand=True, verbose=False)
    if pretrained:
        copy_alexnet_trunk(model, load_weights(torchvision.models.alexnet(weights=None), 'alexnet'))
    return model.eval().requires_grad_(False).to(device)


def copy_alexnet_trunk(model, alexnet):
    """Copy torchvision AlexNet's convolutions into the LPIPS trunk (lpips slices .features by index)."""
    for block in (model.net.slice1, model.net.slice2, model.net.slice3, model.net.slice4, model.net.slice5):
        for index, layer in block.named_children():
            layer.load_state_dict(alexnet.features[int(index)].state_dict())
    return model


def lpips_features(model, x):
    """Unit-normalised AlexNet features of images in [-1, 1]: a list of 5 maps (N, C_l, H_l, W_l)."""
    import lpips
    return [lpips.normalize_tensor(f) for f in model.net(model.scaling_layer(x))]


def lpips_from_features(model, feats_a, feats_b):
    """LPIPS distance per image from two feature lists: (N,)."""
    total = 0
    for lin, fa, fb in zip(model.lins, feats_a, feats_b):
        total = total + lin((fa - fb) ** 2).mean(dim=(1, 2, 3))   # spatial average of the 1-channel map
    return total


@torch.no_grad()
def lpips_diversity(model, outputs):
    """Mean LPIPS over all pairs of the K outputs of each source: list of K (N, 3, H, W) -> (N,).

    StarGAN v2's LPIPS metric for one source image (K = num_outs_per_domain).
    """
    num_outs, n = len(outputs), outputs[0].size(0)
    if num_outs < 2:
        raise ValueError('LPIPS diversity needs at least two outputs per source')
    chunk = max(1, LPIPS_CHUNK_IMAGES // num_outs)
    result = []
    for start in range(0, n, chunk):
        x = torch.cat([out[start:start + chunk] for out in outputs])   # (K * c, 3, H, W), output-major
        feats = [f.unflatten(0, (num_outs, -1)) for f in lpips_features(model, x)]   # (K, c, C, h, w) each
        pairs = [lpips_from_features(model, [f[i] for f in feats], [f[j] for f in feats])
                 for i in range(num_outs) for j in range(i + 1, num_outs)]
        result.append(torch.stack(pairs).mean(dim=0))   # (c,)
    return torch.cat(result)


@register('lpips')
class LPIPSDiversity(Metric):
    """--metrics lpips: per task, the mean over sources of lpips_diversity; files LPIPS_<step>_<mode>.json."""
    series = (Series('LPIPS'),)
    by_default = True   # upstream's metrics: FID and LPIPS

    @classmethod
    def validate(cls, cfg):
        if cfg.num_outs_per_domain < 2:
            return ['--num_outs_per_domain must be at least 2 for the LPIPS diversity (10 in the papers)']
        return []

    @staticmethod
    def weight_files(cfg):
        return [LPIPS_WEIGHTS]

    @classmethod
    def build(cls, cfg, device, pretrained=True):
        return cls(build_lpips(device, pretrained))

    def __init__(self, model):
        self.model = model

    def update(self, task, batch):
        return {'LPIPS': lpips_diversity(self.model, batch.x_fake)}   # (N,): one per source

    def end_task(self, task, rows):
        return {'LPIPS': float(rows['LPIPS'].cpu().mean())}

    def fields(self, series):
        return {'network': LPIPS_NAME}
