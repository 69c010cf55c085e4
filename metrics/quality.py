"""A CPU-sized quality benchmark for comparing loss plug-ins on the synthetic datasets.

FID needs thousands of images and an ImageNet network to mean much; on a
laptop, with the synthetic seasons/weather data, two direct measures are
cheaper and easier to read:

domain_acc  Does the translation land in the target domain? A small domain
            classifier, trained only on the real training images (never on
            the translation model's outputs), labels every latent- and
            reference-guided translation of the val images into every other
            domain; the score is its accuracy (chance = 1 / num_domains).
structure   Is the scene kept? The Pearson correlation between the edge maps
            (Sobel gradient magnitude of the luminance) of the output and of
            the ground truth: core.data.synthetic renders the same layout in the
            target domain, so the correct translation is known. Without such
            a dataset the source image stands in (the key 'structure_ground_truth' says which).
diversity   Do the styles of one domain differ? Each source is translated
            into a target domain with DIVERSITY_STYLES styles; the mean
            pairwise distance of those outputs in a fixed feature space
            (channel means and standard deviations of a seeded random conv
            net: appearance statistics) is divided by the mean pairwise
            distance of the real images of that domain. 0: every style gives
            the same image; 1: the outputs of one source spread as much as
            the real images of the domain (whose layouts differ as well, so a
            translation that keeps the layout stays below 1).

Each figure comes with its reference points (identity_structure,
classifier_val_acc, real_spread), so it can be read alone; docs/evaluation.md
lists them.

quality_scores(nets_ema, cfg, device) returns all of them (and per mode);
bench/quality.py is the command line. The classifier is cached per
training-folder content.
"""
import json
import os
import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from munch import Munch

from core.utils import distributed
from core.data.loader import stack_images
from core.utils.fileio import atomic_save, safe_load
from core.data.images import check_images, domain_tree, list_domains
from core.data.manifest import content_digest, file_records, relative_images
from core.utils.seeding import STREAM_QUALITY, step_generator
from core.data.synthetic import MARKER, layout_seed, render_scene
from metrics.registry import Metric, Series, register_metric

CLASSIFIER_SIZE = 32        # the classifier sees images at 32 x 32: colour and layout suffice
CLASSIFIER_VERSION = 1      # bump when the classifier or its training changes
CLASSIFIER_STEPS = 200
CLASSIFIER_BATCH = 64
MAX_SOURCES_PER_DOMAIN = 32
DIVERSITY_STYLES = 4        # styles per (source, target domain) for the diversity figure
DIVERSITY_SOURCES = 8       # sources per source domain for the diversity figure
FEATURE_SEED = 1234         # the random feature net of the diversity figure is fixed by this seed
LUMA = (0.299, 0.587, 0.114)


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


def _load_tree(root, img_size, limit=None):
    """(images (N, 3, S, S) in [-1, 1], domain ids (N,), paths) of a domain tree (the first `limit` of
    each domain), read and checked as every mode reads one (core.data.images.domain_tree, check_images)."""
    tree = domain_tree(root)
    picked = [(path, y) for y, found in enumerate(tree.paths_by_domain) for path in found[:limit]]
    paths = check_images([path for path, _ in picked])
    return stack_images(paths, img_size), torch.tensor([y for _, y in picked]), paths


def train_domain_classifier(train_dir, img_size, device, seed=0, steps=CLASSIFIER_STEPS):
    """Train a DomainClassifier on the images of train_dir (flip augmentation); returns it in eval mode."""
    x, y, _ = _load_tree(train_dir, img_size)
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
    x_val, y_val, _ = _load_tree(cfg.val_img_dir, cfg.img_size)
    return Munch(model=model, val_acc=accuracy(model, x_val.to(device), y_val), path=path)


# ----------------------------------------------------------------------------------------------
# Structure
# ----------------------------------------------------------------------------------------------

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
    return params if params.get('generator') == 'core.data.synthetic' else None


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


# ----------------------------------------------------------------------------------------------
# Diversity
# ----------------------------------------------------------------------------------------------

class StyleFeatures(nn.Module):
    """A fixed random conv net: images in [-1, 1] -> channel means and stds of its layers (appearance statistics).

    The weights come from FEATURE_SEED alone, so distances are comparable across runs and machines.
    """

    def __init__(self, width=16):
        super().__init__()
        gen = torch.Generator().manual_seed(FEATURE_SEED)
        self.convs = nn.ModuleList([nn.Conv2d(3, width, 3, padding=1),
                                    nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
                                    nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1)])
        for conv in self.convs:
            fan_in = conv.weight[0].numel()
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2 / fan_in) ** 0.5)
                conv.bias.zero_()
        self.eval().requires_grad_(False)

    def forward(self, x):
        h = F.interpolate(x, size=(CLASSIFIER_SIZE, CLASSIFIER_SIZE), mode='area')   # (N, 3, 32, 32)
        stats = [h.mean((2, 3)), h.std((2, 3))]                                       # colour statistics
        for conv in self.convs:
            h = F.relu(conv(h))
            stats += [h.mean((2, 3)), h.std((2, 3))]
        return torch.cat(stats, dim=1)                                                # (N, d)


def mean_pairwise_distance(feats):
    """Mean Euclidean distance over the unordered pairs of the first axis: (K, ..., d) -> (...); 0 if K < 2."""
    k = feats.size(0)
    if k < 2:
        return feats.new_zeros(feats.shape[1:-1])
    i, j = torch.triu_indices(k, k, offset=1)
    return (feats[i] - feats[j]).norm(dim=-1).mean(0)


def real_spread(features, x_val, y_val, num_domains):
    """Mean pairwise feature distance of the real images of each domain: (num_domains,)."""
    return torch.stack([mean_pairwise_distance(features(x_val[y_val == y]).unsqueeze(1))[0]
                        for y in range(num_domains)])


def _diversity_styles(nets, mode, x_val, y_val, y, gen, device, latent_dim):
    """Up to DIVERSITY_STYLES style codes of domain y, (K, style_dim): random z, or distinct val references."""
    if mode == 'latent':
        z = torch.randn(DIVERSITY_STYLES, latent_dim, generator=gen).to(device)
        return nets.mapping_network(z, torch.full((len(z),), y, dtype=torch.long, device=device))
    members = torch.nonzero(y_val == y).flatten()
    members = members[torch.randperm(len(members), generator=gen)[:DIVERSITY_STYLES]]
    return nets.style_encoder(x_val[members].to(device), torch.full((len(members),), y, dtype=torch.long,
                                                                    device=device))


def _sources_per_domain(y_val, limit):
    """Indices of the first `limit` images of every domain: (M,)."""
    keep = [torch.nonzero(y_val == y).flatten()[:limit] for y in range(int(y_val.max()) + 1)]
    return torch.cat(keep)


@torch.no_grad()
def diversity_scores(nets_ema, cfg, device, x_val, y_val, features=None):
    """Diversity of latent- and reference-guided outputs relative to the real within-domain spread.

    For every target domain y, DIVERSITY_SOURCES sources of every other domain
    are each translated with the same K styles of y; the mean pairwise feature
    distance over the K outputs of a source, averaged over sources, is divided
    by real_spread of y, then averaged over targets. Returns {diversity_latent,
    diversity_reference, diversity, real_spread (raw, mean over domains)}.
    """
    features = features or StyleFeatures().to(device)
    num_domains = int(y_val.max()) + 1
    spread = real_spread(features, x_val.to(device), y_val.to(device), num_domains)   # (D,)
    pool = _sources_per_domain(y_val, DIVERSITY_SOURCES)
    scores = {}
    for mode in ('latent', 'reference'):
        gen = step_generator(cfg.seed, 2 if mode == 'latent' else 3, STREAM_QUALITY)
        ratios = []
        for y in range(num_domains):
            x_src = x_val[pool[y_val[pool] != y]].to(device)                               # (n, 3, S, S)
            styles = _diversity_styles(nets_ema, mode, x_val, y_val, y, gen, device, cfg.latent_dim)
            outs = [features(nets_ema.generator(x_src, s.expand(len(x_src), -1))) for s in styles]
            raw = mean_pairwise_distance(torch.stack(outs)).mean()                         # over sources
            ratios.append(float(raw / spread[y].clamp_min(1e-8)))
        scores[f'diversity_{mode}'] = sum(ratios) / len(ratios)
    scores['diversity'] = (scores['diversity_latent'] + scores['diversity_reference']) / 2
    scores['real_spread'] = float(spread.mean())
    return scores


# ----------------------------------------------------------------------------------------------
# The benchmark
# ----------------------------------------------------------------------------------------------

def _styles(nets, mode, x_val, y_val, y, num, gen, device, latent_dim):
    """num style codes of domain y: F(z, y) (latent) or E(x_ref, y) of random val images x_ref of y (reference)."""
    y_trg = torch.full((num,), y, dtype=torch.long, device=device)
    if mode == 'latent':
        return nets.mapping_network(torch.randn(num, latent_dim, generator=gen).to(device), y_trg)
    members = torch.nonzero(y_val == y).flatten()                                 # val images of domain y
    x_ref = x_val[members[torch.randint(len(members), (num,), generator=gen)]]    # (num, 3, S, S)
    return nets.style_encoder(x_ref.to(device), y_trg)


@torch.no_grad()
def quality_scores(nets_ema, cfg, device, classifier=None, max_sources=MAX_SOURCES_PER_DOMAIN):
    """Domain accuracy, structure preservation and diversity of latent- and reference-guided translations.

    Every val image (up to max_sources per domain) is translated into every
    other domain once per mode. Returns a dict of floats: domain_acc_latent,
    domain_acc_reference, domain_acc (their mean), structure_latent,
    structure_reference, structure (their mean), identity_structure (the
    structure of returning every source unchanged), structure_ground_truth (1.0
    if structure was measured against ground-truth renderings, 0.0 if against
    the sources), diversity_latent, diversity_reference, diversity, real_spread
    (see diversity_scores), the reference points domain_acc_chance and
    classifier_val_acc (the real images' domain accuracy), and num_translations.
    classifier: a Munch from load_or_train_classifier (trained or loaded when None).
    """
    classifier = classifier or load_or_train_classifier(cfg, device)
    names = list_domains(cfg.val_img_dir)
    x_val, y_val, paths = _load_tree(cfg.val_img_dir, cfg.img_size, limit=max_sources)
    params = synthetic_params(cfg.val_img_dir)
    scores, used_gt, total, identity = {}, True, 0, 0.0
    for mode in ('latent', 'reference'):
        gen = step_generator(cfg.seed, 0 if mode == 'latent' else 1, STREAM_QUALITY)
        hits = agreement = total = 0
        identity = 0.0
        for y in range(len(names)):
            src = torch.nonzero(y_val != y).flatten()                    # sources: every other domain
            x_src = x_val[src].to(device)                                # (n, 3, S, S)
            s_trg = _styles(nets_ema, mode, x_val, y_val, y, len(src), gen, device, cfg.latent_dim)
            x_fake = nets_ema.generator(x_src, s_trg)
            target, is_gt = structure_targets(params, [paths[i] for i in src],
                                              [names[k] for k in y_val[src].tolist()], names[y], x_src, cfg.img_size)
            used_gt &= is_gt
            hits += accuracy(classifier.model, x_fake, torch.full((len(src),), y)) * len(src)
            agreement += edge_agreement(x_fake, target).sum().item()
            identity += edge_agreement(x_src, target).sum().item()
            total += len(src)
        scores[f'domain_acc_{mode}'] = hits / total
        scores[f'structure_{mode}'] = agreement / total
    scores['domain_acc'] = (scores['domain_acc_latent'] + scores['domain_acc_reference']) / 2
    scores['structure'] = (scores['structure_latent'] + scores['structure_reference']) / 2
    scores['identity_structure'] = identity / total
    scores['structure_ground_truth'] = float(used_gt)
    scores.update(diversity_scores(nets_ema, cfg, device, x_val, y_val))
    scores['domain_acc_chance'] = 1 / len(names)
    scores['classifier_val_acc'] = classifier.val_acc
    scores['num_translations'] = float(2 * total)
    return scores


# ----------------------------------------------------------------------------------------------
# The same measures as registered metrics of --mode eval / --eval_every
# ----------------------------------------------------------------------------------------------
# Selected with --metrics ...,domain_acc,structure they score eval's own outputs (every val
# image, num_outs_per_domain outputs each, per task), so their numbers differ from
# quality_scores' (at most max_sources per domain, one output per target and mode).

@register_metric('domain_acc')
class DomainAccuracy(Metric):
    """Per task: the fraction of outputs the domain classifier puts in the target domain."""
    series = (Series('domain_acc'),)

    @classmethod
    def build(cls, cfg, device, pretrained=True):
        return cls(load_or_train_classifier(cfg, device), list_domains(cfg.train_img_dir))

    def __init__(self, classifier, names):
        """classifier: a Munch from load_or_train_classifier; names: its domains, in label order."""
        self.classifier, self.label = classifier, {name: y for y, name in enumerate(names)}

    def update(self, task, batch):
        y = self.label[task.trg]
        return {'hit': torch.cat([predict(self.classifier.model, x_fake) == y for x_fake in batch.x_fake]).long()}

    def end_task(self, task, rows):
        return {'domain_acc': int(rows['hit'].sum()) / rows['hit'].numel()}

    def fields(self, series):
        return {'classifier': os.path.basename(self.classifier.path), 'classifier_val_acc': self.classifier.val_acc}


@register_metric('structure')
class Structure(Metric):
    """Per task: the mean edge agreement of the outputs with the ground truth (core.data.synthetic data) or the sources."""
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
