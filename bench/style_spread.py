"""How far apart the styles of one season are: the model's outputs next to the synthetic renderer's own styles.

    python bench/style_spread.py                          # the demo model (--preset demo --resume_iter latest)
    python bench/style_spread.py --resume_iter 600        # the demo run's step 600
    python bench/style_spread.py [main.py flags] [--styles K] [--max_sources N] [--style_seed S]

Every figure is a mean absolute difference in grey levels (0-255, over pixels and RGB channels)
between two images of the same layout:

  model     The val images (up to --max_sources per season) are translated into each other season
            with K latent styles (Translator.latent: the first K styles of --style_seed).
              within psi 1.0   two of the K styles of one season, every pair, at psi 1.0
              within psi 0.5   the same at psi 0.5 (styles pulled halfway to the season's average)
              psi 0.5 vs 1.0   one style at psi 0.5 against itself at psi 1.0
              between seasons  style k in one target season against style k in another
  renderer  The same layouts rendered by core.data.synthetic.render_scene in the same target
            seasons with K renderer styles (style seeds), at the model's size.
              within           two of the K renderer styles of one season, every pair
              between seasons  renderer style k in one season against style k in another

The model's within-season spread is read against the renderer's: a model whose styles of one
season differ by a small fraction of what the renderer's do has collapsed them. The last line is
    model_within=<float> model_within_psi05=<float> model_psi05_vs_1=<float> renderer_within=<float>
    model_between=<float> renderer_between=<float> ratio=<float>
(on one line; ratio = model_within / renderer_within).
"""
import argparse
import itertools
import os
import re
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.config import parse_config  # noqa: E402
from core.data.images import domain_tree  # noqa: E402
from core.data.synthetic import layout_seed, render_scene  # noqa: E402
from core.demo import demo_model_flags  # noqa: E402
from core.translator import Translator  # noqa: E402
from core.utils.device import host_settings  # noqa: E402
from core.utils.errors import UserError, run_cli  # noqa: E402
from metrics.structure import synthetic_params  # noqa: E402

STYLES = 4            # styles per (source, target season): 6 pairs
MAX_SOURCES = 8       # val images per season used as sources
# The renderer's style seeds: fixed, and none of them a layout's own seed (layout seeds carry a 32-bit
# hash in their high bits), so the renderer's styles are new ones, as the model's are.
RENDER_STYLE_BASE = 10 ** 6
LAST_LINE = ('model_within', 'model_within_psi05', 'model_psi05_vs_1', 'renderer_within',
             'model_between', 'renderer_between', 'ratio')


def mean_abs(a, b):
    """Mean absolute difference of two uint8 images in grey levels (0-255)."""
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def pairwise(images):
    """Mean of mean_abs over the unordered pairs of a list of images."""
    return float(np.mean([mean_abs(a, b) for a, b in itertools.combinations(images, 2)]))


def sources(val_dir, params, limit):
    """[(path, season, layout seed)] of the first `limit` val images of every season."""
    tree = domain_tree(val_dir)
    picked = []
    for season, paths in zip(tree.names, tree.paths_by_domain):
        for path in paths[:limit]:
            match = re.fullmatch(r'(\d+)\.png', os.path.basename(path))
            if match is None:
                raise UserError(f'{path} is not a file the synthetic renderer wrote (NNNN.png)')
            seed = layout_seed(params['dataset'], season, 'val', int(match.group(1)), params['seed'])
            picked.append((path, season, seed))
    return picked


def model_figures(model, picked, seasons, num_styles, seed):
    """The model's four figures, each a mean over (source, target season) or (source, season pair)."""
    outs = {}   # (source index, target season) -> (K outputs at psi 1.0, K at psi 0.5), uint8 arrays
    for season in seasons:
        # Every source of the other seasons in one batch per psi: one forward pass per style.
        ids = [i for i, (_, own, _) in enumerate(picked) if own != season]
        paths = [picked[i][0] for i in ids]
        full, half = (model.latent(paths, season, seed=seed, psi=psi, num=num_styles) for psi in (1.0, 0.5))
        for n, i in enumerate(ids):
            outs[i, season] = ([np.asarray(images[n]) for images in full], [np.asarray(images[n]) for images in half])
    within = [pairwise(full) for full, _ in outs.values()]
    within_half = [pairwise(half) for _, half in outs.values()]
    psi_gap = [np.mean([mean_abs(a, b) for a, b in zip(full, half)]) for full, half in outs.values()]
    between = []
    for i, (_, own, _) in enumerate(picked):
        for a, b in itertools.combinations([s for s in seasons if s != own], 2):
            between.append(np.mean([mean_abs(x, y) for x, y in zip(outs[i, a][0], outs[i, b][0])]))
    return {'model_within': float(np.mean(within)), 'model_within_psi05': float(np.mean(within_half)),
            'model_psi05_vs_1': float(np.mean(psi_gap)), 'model_between': float(np.mean(between))}


def renderer_figures(picked, seasons, dataset, num_styles, size):
    """The renderer's within- and between-season figures on the same (layout, target season) pairs."""
    style_seeds = [RENDER_STYLE_BASE + k for k in range(num_styles)]
    within, between = [], []
    for _, own, seed in picked:
        renders = {season: [render_scene(seed, dataset, season, size, style_seed=s) for s in style_seeds]
                   for season in seasons if season != own}
        within += [pairwise(images) for images in renders.values()]
        for a, b in itertools.combinations(sorted(renders), 2):
            between.append(np.mean([mean_abs(x, y) for x, y in zip(renders[a], renders[b])]))
    return {'renderer_within': float(np.mean(within)), 'renderer_between': float(np.mean(between))}


def report(f):
    rows = [('within a season, psi 1.0', f['model_within'], f['renderer_within']),
            ('within a season, psi 0.5', f['model_within_psi05'], None),
            ('psi 0.5 vs psi 1.0 (one style)', f['model_psi05_vs_1'], None),
            ('between seasons', f['model_between'], f['renderer_between'])]
    lines = [f'{"mean abs difference (grey levels)":34s} {"model":>8s} {"renderer":>9s}']
    for name, model, renderer in rows:
        lines.append(f'{name:34s} {model:8.2f} {"" if renderer is None else f"{renderer:9.2f}":>9s}')
    lines.append(f'model / renderer within a season: {f["ratio"]:.2f} (1 = the renderer\'s own spread)')
    return '\n'.join(lines)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0], add_help=True,
                                     epilog='Other flags are main.py\'s checkpoint and data flags.')
    parser.add_argument('--styles', type=int, default=STYLES, help='styles per source and target season (>= 2)')
    parser.add_argument('--max_sources', type=int, default=MAX_SOURCES, help='val images per season to translate')
    # Not --seed: that is main.py's flag (the seed of the truncation centres), passed on to the model.
    parser.add_argument('--style_seed', type=int, default=0, help='seed of the model\'s latent styles')
    args, rest = parser.parse_known_args(argv)
    if args.styles < 2 or args.max_sources < 1:
        parser.error('--styles must be at least 2 and --max_sources at least 1')
    cfg = parse_config(['--mode', 'sample'] + demo_model_flags(rest))   # inference flags only
    params = synthetic_params(cfg.val_img_dir)
    if params is None:
        raise UserError(f'--val_img_dir {cfg.val_img_dir} is not a synthetic dataset (core.data.synthetic); for '
                        f'the demo model run python main.py --mode demo first')
    return args, cfg, params


def main(argv=None):
    def run():
        args, cfg, params = parse(sys.argv[1:] if argv is None else argv)
        cfg = host_settings(cfg, verbose=False)   # torch's CPU threads as every mode sets them
        start = time.perf_counter()
        model = Translator.from_config(cfg, verbose=False)
        picked = sources(cfg.val_img_dir, params, args.max_sources)
        seasons = list(params['domains'])
        if model.domains != seasons:
            raise UserError(f'the model\'s domains {model.domains} are not the dataset\'s {seasons}')
        figures = model_figures(model, picked, seasons, args.styles, args.style_seed)
        figures.update(renderer_figures(picked, seasons, params['dataset'], args.styles, model.img_size))
        figures['ratio'] = figures['model_within'] / max(figures['renderer_within'], 1e-8)
        print(f'{model!r}: {len(picked)} sources x {len(seasons) - 1} target seasons x {args.styles} styles '
              f'({time.perf_counter() - start:.1f} s)')
        print(report(figures))
        print(' '.join(f'{key}={figures[key]:.4f}' for key in LAST_LINE))
    return run_cli(run)


if __name__ == '__main__':
    sys.exit(main())
