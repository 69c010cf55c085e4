"""--metrics structure: is the scene kept? Edge agreement of each output with its ground truth.

The Pearson correlation between the edge maps (Sobel gradient magnitude of
the luminance) of the output and of the ground truth: core.data.synthetic
renders the same layout in the target domain, so the correct translation is
known. Without such a dataset the source image stands in (the files' field
'ground_truth' says which). Returning the input unchanged scores the
identity baseline, a perfect translation 1.
"""
import json
import os
import re

import torch
import torch.nn.functional as F

from core.data.synthetic import GENERATOR, MARKER, layout_seed, render_scene
from metrics.registry import Metric, Series, register

LUMA = (0.299, 0.587, 0.114)


def edge_map(x):
    """Sobel gradient magnitude of the luminance: (N, 3, H, W) in [-1, 1] -> (N, H, W)."""
    luma = (x * torch.tensor(LUMA, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)   # (N, 1, H, W)
    kx = torch.tensor([[-1., 0., 1.], [-2., 0., 2.], [-1., 0., 1.]], device=x.device)
    kernels = torch.stack([kx, kx.T]).unsqueeze(1)                                             # (2, 1, 3, 3)
    grad = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode='replicate'), kernels)                      # (N, 2, H, W)
    return grad.pow(2).sum(1).sqrt()


def edge_agreement(x, target):
    """Pearson correlation of the edge maps of x and target, per image: (N,) in [-1, 1]."""
    a, b = edge_map(x).flatten(1), edge_map(target).flatten(1)   # (N, H*W)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-8)


def synthetic_params(val_dir):
    """The parameters of the core.data.synthetic dataset that holds val_dir, or None for other data."""
    try:
        with open(os.path.join(os.path.dirname(os.path.abspath(val_dir)), MARKER), encoding='utf-8') as f:
            params = json.load(f)
    except (OSError, ValueError):
        return None
    return params if params.get('generator') == GENERATOR else None


def ground_truth(params, path, src, trg, img_size):
    """The layout of val image `path` (domain src) rendered in domain trg, (3, S, S) in [-1, 1]; None if unknown."""
    match = re.fullmatch(r'(\d+)\.png', os.path.basename(path))
    if params is None or match is None or src not in params['domains'] or trg not in params['domains']:
        return None
    seed = layout_seed(params['dataset'], src, 'val', int(match.group(1)), params['seed'])
    pixels = torch.from_numpy(render_scene(seed, params['dataset'], trg, img_size)).float()   # (S, S, 3)
    return pixels.permute(2, 0, 1) / 127.5 - 1


def structure_targets(params, paths, src_names, trg, x_src, img_size):
    """Ground-truth renderings of the sources in domain trg, or the sources themselves: ((N, 3, S, S), is_gt).

    paths, src_names: the file and domain name of each source x_src (N, 3, S, S).
    """
    if params is not None:
        renders = [ground_truth(params, p, src, trg, img_size) for p, src in zip(paths, src_names)]
        if all(r is not None for r in renders):
            return torch.stack(renders).to(x_src.device), True
    return x_src, False


@register('structure')
class Structure(Metric):
    """Per task: the mean edge agreement of the outputs with the ground truth (synthetic data) or the sources."""
    series = (Series('structure'),)

    @classmethod
    def build(cls, cfg, device, pretrained=True):
        return cls(synthetic_params(cfg.val_img_dir), cfg.img_size)

    def __init__(self, params, img_size):
        self.params, self.img_size, self.used_gt = params, img_size, True

    def update(self, task, batch):
        n = len(batch.x_src)
        target, is_gt = structure_targets(self.params, task.paths[batch.first:batch.first + n], [task.src] * n,
                                          task.trg, batch.x_src, self.img_size)
        return {'agreement': torch.cat([edge_agreement(x_fake, target) for x_fake in batch.x_fake]),   # (K * N,)
                'ground_truth': torch.full((n,), int(is_gt), device=batch.x_src.device)}

    def end_task(self, task, rows):
        self.used_gt &= bool(rows['ground_truth'].all())
        return {'structure': float(rows['agreement'].double().sum()) / rows['agreement'].numel()}

    def fields(self, series):
        return {'ground_truth': self.used_gt}
