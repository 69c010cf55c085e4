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
import sys
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from core.data_loader import squash
from core.images import check_images, list_images, load_rgb
from core.errors import UserError, run_cli
from core.weights import WEIGHTS
from metrics.inception import StarGANInception, TFInception
from metrics.preflight import FID_WEIGHTS
from metrics.resize import pil_bilinear_resize, tf1_bilinear_resize

PROTOCOLS = ('stargan-v2', 'standard')
INCEPTION_SIZE = (299, 299)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def protocols_of(choice):
    """The protocols selected by --fid_protocol ('both' means both)."""
    return PROTOCOLS if choice == 'both' else (choice,)


def quantize(x):
    """Generator output in [-1, 1] -> uint8 exactly as StarGAN v2 writes its PNGs: (N, 3, H, W).

    utils.save_image denormalises to [0, 1] (clamped), then torchvision's
    save_image rounds by adding 0.5 and truncating.
    """
    x = ((x.detach().float() + 1) / 2).clamp_(0, 1)
    return x.mul_(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


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
# Statistics and the distance
# ----------------------------------------------------------------------------------------------

class FeatureStats(NamedTuple):
    """Gaussian statistics of a feature set, with the eigen-decomposition of its covariance.

    mu (D,); sigma (D, D) unbiased covariance (np.cov); eigval (r,) its
    positive eigenvalues and eigvec (D, r) their eigenvectors.
    """
    mu: np.ndarray
    sigma: np.ndarray
    eigval: np.ndarray
    eigvec: np.ndarray


def feature_stats(features):
    """FeatureStats of features (N, D), in float64.

    With fewer samples than dimensions (1,000 fakes of 2,048-d features in a
    Seasons task) the covariance has rank < N, and its eigenvectors come from
    the small N x N Gram matrix of the centred features.
    """
    x = np.asarray(features, dtype=np.float64)
    n, dim = x.shape
    if n < 2:
        raise UserError(f'FID needs at least 2 images per set, got {n}')
    mu = x.mean(axis=0)
    xc = x - mu                                          # (N, D)
    sigma = xc.T @ xc / (n - 1)                          # (D, D), = np.cov(x, rowvar=False)
    small = n - 1 < dim
    eigval, vec = np.linalg.eigh(xc @ xc.T / (n - 1) if small else sigma)   # (r0,), (r0, r0)
    # Round-off, not variance: numpy's matrix_rank tolerance.
    keep = eigval > eigval.max(initial=0) * max(n, dim) * np.finfo(np.float64).eps
    eigval, vec = eigval[keep], vec[:, keep]
    eigvec = xc.T @ vec / np.sqrt(eigval * (n - 1)) if small else vec       # (D, r), orthonormal columns
    return FeatureStats(mu, sigma, eigval, eigvec)


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
# Image folders
# ----------------------------------------------------------------------------------------------

class Uint8Images(Dataset):
    """Image files resized to (img_size, img_size) as StarGAN v2's loaders do: dataset[k] -> uint8 (3, S, S)."""

    def __init__(self, paths, img_size):
        self.paths = list(paths)
        self.img_size = img_size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        pixels = np.array(squash(load_rgb(self.paths[index]), self.img_size))   # (S, S, 3)
        return torch.from_numpy(pixels).permute(2, 0, 1)                       # (3, S, S)


@torch.no_grad()
def extract_features(extractors, paths, img_size, device, batch_size=50, num_workers=0, desc='features'):
    """{protocol: features (N, 2048) numpy float32} of image files, one pass over the images."""
    loader = DataLoader(Uint8Images(paths, img_size), batch_size=batch_size, num_workers=num_workers,
                        pin_memory=torch.device(device).type == 'cuda')
    feats = {p: [] for p in extractors}
    for x in tqdm(loader, desc=desc, unit='batch', leave=False):
        x = x.to(device, non_blocking=True)
        for p, extractor in extractors.items():
            feats[p].append(extractor(x))
    return {p: torch.cat(f).cpu().numpy() for p, f in feats.items()}


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
    from core.device import resolve_device

    def run():
        value = fid_given_paths(args.paths, args.img_size, args.batch_size, args.fid_protocol,
                                resolve_device(args.device))
        print(f'FID ({args.fid_protocol}): {value}')
    return run_cli(run)


if __name__ == '__main__':
    sys.exit(main())
