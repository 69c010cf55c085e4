"""A CPU-sized quality benchmark for comparing loss plug-ins on the synthetic datasets.

FID needs thousands of images and an ImageNet network to mean much; on a
laptop, with the synthetic seasons/weather data, two direct measures are
cheaper and easier to read:

domain_acc  Does the translation land in the target domain? The domain
            classifier of metrics/classifier.py labels every latent- and
            reference-guided translation of the val images into every other
            domain; the score is its accuracy (chance = 1 / num_domains).
structure   Is the scene kept? The edge agreement of metrics/structure.py
            with the ground-truth rendering, or with the source where there
            is none (the key 'structure_ground_truth' says which).
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
bench/quality.py is the command line; bench/ablation.py and --mode demo call it too.
The classifier (metrics/classifier.py) is cached per training-folder content.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.data.images import list_domains
from core.utils.seeding import STREAM_QUALITY, step_generator
from metrics.classifier import CLASSIFIER_SIZE, accuracy, load_or_train_classifier, load_tree
from metrics.structure import edge_agreement, structure_targets, synthetic_params

MAX_SOURCES_PER_DOMAIN = 32
DIVERSITY_STYLES = 4        # styles per (source, target domain) for the diversity figure
DIVERSITY_SOURCES = 8       # sources per source domain for the diversity figure
FEATURE_SEED = 1234         # the random feature net of the diversity figure is fixed by this seed


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
    x_val, y_val, paths = load_tree(cfg.val_img_dir, cfg.img_size, limit=max_sources)
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
