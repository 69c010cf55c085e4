"""Frechet Inception Distance under two protocols, on uint8 images held in memory.

stargan-v2  StarGAN v2's metrics/fid.py exactly: images as saved to PNG
            (uint8, torchvision save_image rounding), Pillow bilinear resize to
            299x299, ToTensor, ImageNet mean/std, torchvision Inception v3
            sub-modules without transform_input. Numbers compare with the
            StarGAN v2 and SRC papers.
standard    The TF-Inception (2015-12-05) FID of TTUR / pytorch-fid /
            torch-fidelity: uint8 input, TF1 bilinear resize to 299x299,
            (x - 128) / 128. Numbers compare with the wider literature.
The two are different metrics; every result file says which one it holds.

Command line (upstream's, plus the protocol):
    python -m metrics.fid --paths REAL_DIR FAKE_DIR [--img_size 256] [--batch_size 50]
                          [--fid_protocol stargan-v2|standard]
"""
import argparse
import hashlib
import os
import sys

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from core.utils import distributed
from core.data.images import check_images, list_images
from core.utils.errors import run_cli
from core.utils.weights import WEIGHTS
from metrics.inception import StarGANInception, TFInception
from metrics.registry import Metric, Series, register
from metrics.resize import pil_bilinear_resize, tf1_bilinear_resize
from metrics.stats_cache import extract_features, feature_stats, real_statistics

PROTOCOLS = ('stargan-v2', 'standard')   # --fid_protocol: one of these or 'both'
# The Inception weight file (core.utils.weights name) of each protocol.
FID_WEIGHTS = {'stargan-v2': 'inception_v3_torchvision', 'standard': 'inception_tf_fid'}
INCEPTION_SIZE = (299, 299)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def protocols_of(choice):
    """The protocols selected by --fid_protocol ('both' means both)."""
    return PROTOCOLS if choice == 'both' else (choice,)


class FIDExtractor(nn.Module):
    """Protocol preprocessing + Inception: uint8 images (N, 3, H, W) -> features (N, 2048) float32.

    `identity` names the exact feature network (weight file, or a digest of
    random weights); cached real statistics are keyed by it.
    """

    def __init__(self, protocol, pretrained=True):
        super().__init__()
        if protocol not in PROTOCOLS:
            raise ValueError(f'unknown FID protocol {protocol!r}; choose one of {PROTOCOLS}')
        self.protocol = protocol
        self.net = StarGANInception(pretrained) if protocol == 'stargan-v2' else TFInception(pretrained)
        self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.identity = WEIGHTS[FID_WEIGHTS[protocol]].filename if pretrained else 'random-' + _weights_digest(self.net)

    def preprocess(self, x):
        """uint8 (N, 3, H, W) -> the network input (N, 3, 299, 299) float32."""
        if self.protocol == 'stargan-v2':
            x = pil_bilinear_resize(x, INCEPTION_SIZE).float().div_(255)   # transforms.ToTensor
            return x.sub_(self.mean).div_(self.std)                        # transforms.Normalize
        x = tf1_bilinear_resize(x.float(), INCEPTION_SIZE)
        return (x - 128) / 128

    @torch.no_grad()
    def forward(self, x):
        return self.net(self.preprocess(x))


def _weights_digest(module):
    digest = hashlib.sha256()
    for tensor in module.state_dict().values():
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def build_fid_extractors(choice, device, pretrained=True):
    """{protocol: FIDExtractor} for --fid_protocol `choice`, in eval mode on `device`."""
    return {p: FIDExtractor(p, pretrained).eval().requires_grad_(False).to(device) for p in protocols_of(choice)}


# ----------------------------------------------------------------------------------------------
# The distance
# ----------------------------------------------------------------------------------------------

def frechet_distance(stats1, stats2):
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) of two FeatureStats.

    With S_i = V_i L_i V_i^T, Tr (S1 S2)^(1/2) is the sum of the singular values
    of C = L1^(1/2) V1^T V2 L2^(1/2) (r1 x r2): the same number as the official
    scipy.linalg.sqrtm form up to rounding, without its 2048 x 2048 Schur
    decomposition (~20 s on one CPU core), and free of the complex round-off
    sqrtm produces for the rank-deficient covariances of small sets.
    """
    c = (stats1.eigvec * np.sqrt(stats1.eigval)).T @ (stats2.eigvec * np.sqrt(stats2.eigval))   # (r1, r2)
    gram = c @ c.T if c.shape[0] <= c.shape[1] else c.T @ c
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(gram), 0, None)).sum()
    diff = stats1.mu - stats2.mu
    return float(diff @ diff + np.trace(stats1.sigma) + np.trace(stats2.sigma) - 2 * tr_covmean)


# ----------------------------------------------------------------------------------------------
# The registered metric: --metrics fid
# ----------------------------------------------------------------------------------------------

def series_name(protocol):
    """Upstream's FID_... files for the stargan-v2 protocol, FID_standard_... for the other."""
    return 'FID' if protocol == 'stargan-v2' else 'FID_standard'


@register('fid')
class FID(Metric):
    """FID of each task's outputs against all training images of its target domain, per --fid_protocol.

    One result file per protocol and mode (keys FID_<mode>/<task> in both);
    the real statistics come from metrics.stats_cache, once per target domain.
    """
    by_default = True   # upstream's metrics: FID and LPIPS

    @classmethod
    def add_arguments(cls, parser):
        g = parser.add_argument_group('FID (--metrics fid)')
        g.add_argument('--fid_protocol', choices=list(PROTOCOLS) + ['both'], default='stargan-v2',
                       help='stargan-v2: the official StarGAN v2 FID (torchvision Inception; comparable with the '
                            'StarGAN v2 and SRC papers); standard: the TF-Inception FID of pytorch-fid and '
                            'torch-fidelity (comparable with the wider literature); both: one file each')
        g.add_argument('--fid_stats_dir', default='expr/fid_stats',
                       help='cache of real-image FID statistics, keyed by folder contents, protocol and image size '
                            '(also holds the domain classifier of --metrics domain_acc)')

    @staticmethod
    def weight_files(cfg):
        return [FID_WEIGHTS[p] for p in protocols_of(cfg.fid_protocol)]

    @classmethod
    def build(cls, cfg, device, pretrained=True):
        return cls(cfg, device, build_fid_extractors(cfg.fid_protocol, device, pretrained))

    def __init__(self, cfg, device, extractors):
        """extractors: {protocol: FIDExtractor} (or a stand-in with its interface)."""
        self.cfg, self.device, self.extractors = cfg, device, extractors
        self.series = tuple(Series(series_name(p), 'FID', '.2f') for p in extractors)
        self._real = {}

    def real(self, domain):
        """{protocol: FeatureStats} of the training images of `domain` (cached on disk and here)."""
        if domain not in self._real:
            cfg = self.cfg
            stats, hits = real_statistics(os.path.join(cfg.train_img_dir, domain), cfg.img_size, self.extractors,
                                          cfg.fid_stats_dir, self.device, cfg.val_batch_size, cfg.num_workers,
                                          cfg.skip_bad_images)
            if hits and distributed.is_main():
                tqdm.write(f'real statistics of {domain}: cached ({", ".join(hits)})')
            self._real[domain] = stats
        return self._real[domain]

    def begin_task(self, task):
        self.real(task.trg)   # every process, together: the real images are split over them

    def update(self, task, batch):
        # (K * N, 2048) per protocol, output-major as upstream's per-batch order
        return {p: torch.cat([extractor(images) for images in batch.images]) for p, extractor in self.extractors.items()}

    def end_task(self, task, rows):
        real = self.real(task.trg)
        return {series_name(p): frechet_distance(real[p], feature_stats(rows[p].cpu().numpy())) for p in self.extractors}

    def fields(self, series):
        protocol = next(p for p in self.extractors if series_name(p) == series.name)
        return {'protocol': protocol, 'feature_network': self.extractors[protocol].identity}


# ----------------------------------------------------------------------------------------------
# Image folders
# ----------------------------------------------------------------------------------------------

def fid_given_paths(paths, img_size=256, batch_size=50, protocol='stargan-v2', device='cpu', num_workers=0,
                    extractor=None):
    """FID between two folders of images (searched recursively), like upstream's calculate_fid_given_paths."""
    extractor = extractor or FIDExtractor(protocol).eval().to(device)
    stats = []
    for folder in paths:
        files = check_images(list_images(folder))
        feats = extract_features({protocol: extractor}, files, img_size, device, batch_size, num_workers,
                                 desc=str(folder))[protocol]
        stats.append(feature_stats(feats))
    return frechet_distance(*stats)


def main(argv=None):
    """python -m metrics.fid --paths REAL FAKE: print the FID of two folders."""
    parser = argparse.ArgumentParser(prog='python -m metrics.fid', description=__doc__.split('\n')[0])
    parser.add_argument('--paths', nargs=2, required=True, metavar=('REAL', 'FAKE'), help='two image folders')
    parser.add_argument('--img_size', type=int, default=256, help='images are first resized to this size')
    parser.add_argument('--batch_size', type=int, default=64, help='batch size of the feature network')
    parser.add_argument('--fid_protocol', choices=list(PROTOCOLS), default='stargan-v2')
    parser.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto')
    args = parser.parse_args(argv)
    from core.utils.device import resolve_device

    def run():
        value = fid_given_paths(args.paths, args.img_size, args.batch_size, args.fid_protocol,
                                resolve_device(args.device))
        print(f'FID ({args.fid_protocol}): {value}')
    return run_cli(run)


if __name__ == '__main__':
    sys.exit(main())
