"""The domain classifier of the quality measures: does a translation land in its target domain?

A small classifier, trained only on the real training images (never on a
translation model's outputs), labels images by domain; --metrics domain_acc
(metrics/domain_acc.py) and the CPU benchmark (metrics/benchmark.py) count
how many translations it puts in the target domain. It is cached per
training-folder content in --fid_stats_dir.
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from munch import Munch

from core.data.images import check_images, domain_tree, list_domains
from core.data.loader import stack_images
from core.data.manifest import content_digest, file_records, relative_images
from core.utils import distributed
from core.utils.fileio import atomic_save, safe_load

CLASSIFIER_SIZE = 32        # the classifier sees images at 32 x 32: colour and layout suffice
CLASSIFIER_VERSION = 1      # bump when the classifier or its training changes
CLASSIFIER_STEPS = 200
CLASSIFIER_BATCH = 64


class DomainClassifier(nn.Module):
    """Three conv layers and a linear head: images in [-1, 1] of any size -> domain logits."""

    def __init__(self, num_domains, width=16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(2 * width, num_domains)

    def forward(self, x):
        x = F.interpolate(x, size=(CLASSIFIER_SIZE, CLASSIFIER_SIZE), mode='area')
        return self.head(self.features(x).flatten(1))   # (N, num_domains)


def load_tree(root, img_size, limit=None):
    """(images (N, 3, S, S) in [-1, 1], domain ids (N,), paths) of a domain tree (the first `limit` of
    each domain), read and checked as every mode reads one (core.data.images.domain_tree, check_images)."""
    tree = domain_tree(root)
    picked = [(path, y) for y, found in enumerate(tree.paths_by_domain) for path in found[:limit]]
    paths = check_images([path for path, _ in picked])
    return stack_images(paths, img_size), torch.tensor([y for _, y in picked]), paths


def train_domain_classifier(train_dir, img_size, device, seed=0, steps=CLASSIFIER_STEPS):
    """Train a DomainClassifier on the images of train_dir (flip augmentation); returns it in eval mode."""
    x, y, _ = load_tree(train_dir, img_size)
    x = F.interpolate(x, size=(CLASSIFIER_SIZE, CLASSIFIER_SIZE), mode='area').to(device)   # (N, 3, 32, 32)
    y = y.to(device)
    torch.manual_seed(seed)
    model = DomainClassifier(int(y.max()) + 1).to(device)
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    with torch.enable_grad():   # callers such as quality_scores run under no_grad
        for _ in range(steps):
            idx = torch.randint(len(x), (min(CLASSIFIER_BATCH, len(x)),), generator=gen).to(device)
            flip = (torch.rand(len(idx), generator=gen) < 0.5).to(device).view(-1, 1, 1, 1)
            batch = torch.where(flip, x[idx].flip(-1), x[idx])
            loss = F.cross_entropy(model(batch), y[idx])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
    return model.eval().requires_grad_(False)


@torch.no_grad()
def predict(classifier, x, chunk=256):
    """The domain the classifier gives each image x (N, 3, S, S): (N,)."""
    return torch.cat([classifier(x[i:i + chunk]).argmax(1) for i in range(0, len(x), chunk)])


def accuracy(classifier, x, y, chunk=256):
    """Fraction of images x (N, 3, S, S) that the classifier puts in domain y (N,)."""
    preds = predict(classifier, x, chunk)
    return float((preds == y.to(preds.device)).float().mean())


def classifier_path(cfg, cache_dir=None):
    """Cache file of the classifier for cfg.train_img_dir's current contents and cfg.img_size."""
    rels = relative_images(cfg.train_img_dir)
    digest = content_digest(file_records(cfg.train_img_dir, rels))
    folder = cache_dir or cfg.fid_stats_dir
    return os.path.join(folder, f'domain_classifier_v{CLASSIFIER_VERSION}_{cfg.img_size}px_{digest[:16]}.pt')


def load_or_train_classifier(cfg, device, path=None):
    """The domain classifier of cfg.train_img_dir: loaded from `path` (default: the cache), else trained and saved.

    Returns Munch(model, val_acc, path); val_acc is its accuracy on the real val images.
    """
    path = path or classifier_path(cfg)
    model = None
    if distributed.is_main() and not os.path.isfile(path):   # one writer; under torchrun the others load its file
        model = train_domain_classifier(cfg.train_img_dir, cfg.img_size, device, cfg.seed)
        atomic_save(model.state_dict(), path)
    distributed.barrier()
    if model is None:
        model = DomainClassifier(len(list_domains(cfg.train_img_dir))).to(device)
        model.load_state_dict(safe_load(path))
        model.eval().requires_grad_(False)
    x_val, y_val, _ = load_tree(cfg.val_img_dir, cfg.img_size)
    return Munch(model=model, val_acc=accuracy(model, x_val.to(device), y_val), path=path)
