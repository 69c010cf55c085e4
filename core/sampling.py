"""--mode sample and --mode translate: using a trained model.

Both load the EMA networks of --checkpoint FILE, or of --checkpoint_dir at
--resume_iter (a step or 'latest'). A checkpoint written here carries its
architecture and domain names; for an official StarGAN v2 or Hneg_SRC
checkpoint the architecture flags (--arch, --img_size, --num_domains, ...)
describe it.

A checkpoint written here also carries its run's config, and its sampling
settings are used unless given on the command line (RUN_SETTINGS): sources
and references per grid (--val_batch_size), styles per domain
(--num_outs_per_domain), and --src_dir/--ref_dir when those folders exist.
The first line printed says which values came from where.

sample writes into --result_dir:
  reference.jpg                 a blank corner and the sources on top; then per reference a row:
                                the reference, then every source translated with its style
  latent_psi_{0.5,0.7,1.0}.jpg  sources on top; then per target domain and random z a row: every
                                source translated with F(z, y) pulled toward the domain's
                                average style by 1 - psi (truncation trick)
  video_ref.mp4                 the sources' style slides from reference to reference
  video_latent.mp4              the style slides through the latent grids' styles (at --psi),
                                domain after domain
Sources and references are up to --val_batch_size images of --src_dir and
--ref_dir (one sub-folder per domain, as for training). When a folder holds
more, the first images of each domain are taken in turn, so every domain is
shown (upstream takes the first images in folder order, often one domain only).

translate writes into --result_dir, keeping the input's sub-folders, one PNG
per input image and style:
  <name>_to_<domain>_z<KK>.png         random style KK of --num_styles (--trg_domain, --psi)
  <name>_to_<domain>_ref_<ref>.png     the style of reference image <ref> (--ref)
or with --video one MP4 per input image, the image above its translation while
the style walks through those styles in order (at least two: --num_styles 2 or
more, or a folder of references):
  <name>_to_<domain>_latent.mp4 (_latent_psi<psi>.mp4 with --psi), <name>_to_<domain>_ref.mp4
Style zKK is the style of the latent grids' row KK of that domain at psi 1
(same --seed), so a style chosen from the grid can be applied to a folder.
--keep_size runs the generator at each input's own size, rounded to a multiple
of its down-sampling factor (references are still encoded at the training
size); quality away from the training scale is not guaranteed.

Both modes use the model through core.translator.Translator, the Python API.
Everything random is drawn from --seed: equal seeds give equal files.
"""
import collections
import os

import torch
from munch import Munch
from tqdm import tqdm

from core.data.loader import folder_dataset, stack_images
from core.utils.errors import UserError
from core.data.images import DataError, check_images, domain_tree
from core.translator import Translator
from core.video import max_video_sources, max_video_styles, num_video_frames, slide_margin, strip_frames, write_video
from core.visualize import (PSIS, domain_names, label_grid, latent_grid, latent_labels, reference_grid,
                            reference_labels, save_grid, save_image)

# Settings of sample/translate taken from the run stored in the checkpoint unless given as flags.
RUN_SETTINGS = ('val_batch_size', 'num_outs_per_domain')
RUN_FOLDERS = ('src_dir', 'ref_dir')   # taken only if the folder exists here


# ----------------------------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------------------------

def domain_label(cfg, y):
    """The name of domain y, or 'domain<y>' for checkpoints without names."""
    return cfg.domain_names[y] if cfg.domain_names else f'domain{y}'


def follow_run(cfg, stored, mode):
    """cfg with the run's sampling settings (RUN_SETTINGS, RUN_FOLDERS) where no flag gave them.

    stored: the config saved in the checkpoint, or None (official files: the
    flags and their defaults stand). Prints which values were used and where
    they came from; returns the new config.
    """
    if stored is None:
        print(f'{mode}: the checkpoint stores no run config; settings from the flags and defaults')
        return cfg
    given = set(cfg.get('explicit_flags', ()))
    changes, kept = {}, []
    for key in RUN_SETTINGS + RUN_FOLDERS:
        value = stored.get(key)
        if key in given:
            kept.append(key)
        elif value is not None and (key not in RUN_FOLDERS or os.path.isdir(value)):
            changes[key] = value
    cfg = cfg.replace(**changes)
    used = ', '.join(f'{k}={cfg[k]}' for k in RUN_SETTINGS + RUN_FOLDERS)
    source = (('from the run: ' + ', '.join(changes)) if changes else 'none from the run') + \
        ('; from flags: ' + ', '.join(kept) if kept else '')
    print(f'{mode}: {used} ({source})')
    return cfg


# ----------------------------------------------------------------------------------------------
# --mode sample
# ----------------------------------------------------------------------------------------------

def first_per_domain(paths_by_domain, limit):
    """Up to `limit` (path, domain id) pairs: all of them if they fit, else the first images of
    each domain taken in turn. Returned domain by domain, in folder order."""
    if sum(len(paths) for paths in paths_by_domain) > limit:
        take = [0] * len(paths_by_domain)
        picked = 0
        while picked < limit:
            for y, paths in enumerate(paths_by_domain):
                if picked < limit and take[y] < len(paths):
                    take[y] += 1
                    picked += 1
        paths_by_domain = [paths[:n] for paths, n in zip(paths_by_domain, take)]
    return [(path, y) for y, paths in enumerate(paths_by_domain) for path in paths]


def load_domain_batch(cfg, flag, device):
    """Munch(x (N, 3, S, S), y (N,)) of up to --val_batch_size images of --src_dir or --ref_dir."""
    root = getattr(cfg, flag)
    tree = domain_tree(root, flag, cfg.num_domains, cfg.domain_names, counted_by='the model')
    picked = first_per_domain(tree.paths_by_domain, cfg.val_batch_size)
    usable = set(check_images([path for path, _ in picked], cfg.skip_bad_images))
    picked = [(path, y) for path, y in picked if path in usable]
    if not picked:
        raise DataError(f'--{flag} {root}: none of the selected images can be used')
    x = stack_images([p for p, _ in picked], cfg.img_size).to(device)   # (N, 3, S, S)
    return Munch(x=x, y=torch.tensor([y for _, y in picked], dtype=torch.long, device=device))


def latent_walk_styles(translator, seed, psi, num):
    """Styles of the latent video: `num` styles of domain 0, then of domain 1, ...: (D * num, style_dim)."""
    return torch.cat([translator.styles(y, seed, psi, num) for y in range(translator.cfg.num_domains)])


def walk_frames(translator, x_src, styles, num_frames, x_ref=None, margin=0):
    """Video frames (core.video.strip_frames) of x_src while the style walks through `styles` (K, style_dim)."""
    fakes = translator.frames(x_src, styles, num_frames, as_tensor=True)
    return strip_frames(x_src, fakes, styles.size(0), num_frames, x_ref, margin)


def video_styles(styles, num_frames, what):
    """The first styles (K, style_dim) that fit in a video of at most MAX_VIDEO_FRAMES frames (a note when cut)."""
    num = max_video_styles(num_frames)
    if styles.size(0) > num:
        print(f'note: the {what} video walks through the first {num} of {styles.size(0)} styles '
              f'(longer videos take too long to render; lower --video_frames for more)')
    return styles[:num]


def video_sources(x_src, img_size, ref_column):
    """The sources that fit in a browser-playable frame width (a note when some are left out)."""
    num = max_video_sources(img_size, ref_column)
    if x_src.size(0) > num:
        print(f'note: the videos show the first {num} of {x_src.size(0)} sources (frames wider than '
              f'{num * img_size} px do not play in common browsers)')
    return x_src[:num]


def write_grids(translator, cfg, src, ref):
    """latent_psi_*.jpg and reference.jpg (labelled unless --no-labels), with one progress bar over all rows."""
    num_z, num_domains = cfg.num_outs_per_domain, cfg.num_domains
    rows = len(PSIS) * num_domains * num_z + ref.x.size(0)
    cell, src_names = cfg.img_size, domain_names(cfg, src.y)
    paths = []
    with tqdm(total=rows, desc='grids', unit='row', disable=None, leave=False) as bar:
        for psi in PSIS:
            path = os.path.join(cfg.result_dir, f'latent_psi_{psi}.jpg')
            x_fakes = []
            for y in range(num_domains):
                x_fakes += translator.latent(src.x, y, cfg.seed, psi, num_z, as_tensor=True)
                bar.update(num_z)
            grid = latent_grid(src.x, x_fakes)
            if cfg.labels:
                labels = latent_labels(src_names, domain_names(cfg, range(num_domains)), num_z, psi)
                grid = label_grid(grid, cell, *labels)
            save_grid(grid, path)
            paths.append(path)
        path = os.path.join(cfg.result_dir, 'reference.jpg')
        x_fakes = translator.apply(src.x, translator.style_of(ref.x, ref.y), as_tensor=True)
        bar.update(ref.x.size(0))
        grid = reference_grid(src.x, ref.x, x_fakes)
        if cfg.labels:
            grid = label_grid(grid, cell, *reference_labels(src_names, domain_names(cfg, ref.y)))
        save_grid(grid, path)
        paths.append(path)
    return paths


def write_videos(translator, cfg, src, ref):
    """video_ref.mp4 and video_latent.mp4, streamed."""
    T = cfg.video_frames
    path_ref = os.path.join(cfg.result_dir, 'video_ref.mp4')
    s_ref = video_styles(translator.style_of(ref.x, ref.y), T, 'reference')   # (R, style_dim)
    frames = walk_frames(translator, video_sources(src.x, cfg.img_size, True), s_ref, T, x_ref=ref.x,
                         margin=slide_margin(cfg.img_size))
    write_video(path_ref, frames, num_video_frames(s_ref.size(0), T), cfg.fps)

    path_latent = os.path.join(cfg.result_dir, 'video_latent.mp4')
    styles = video_styles(latent_walk_styles(translator, cfg.seed, cfg.psi, cfg.num_outs_per_domain), T, 'latent')
    frames = walk_frames(translator, video_sources(src.x, cfg.img_size, False), styles, T)
    write_video(path_latent, frames, num_video_frames(styles.size(0), T), cfg.fps)
    return [path_ref, path_latent]


def sample(cfg):
    """--mode sample: reference.jpg, latent_psi_*.jpg, video_ref.mp4 and video_latent.mp4."""
    translator = Translator.from_config(cfg)
    cfg = follow_run(translator.cfg, translator.model.stored, 'sample')
    src = load_domain_batch(cfg, 'src_dir', translator.device)
    ref = load_domain_batch(cfg, 'ref_dir', translator.device)
    paths = write_grids(translator, cfg, src, ref)
    paths += write_videos(translator, cfg, src, ref)
    print(f'sample: {len(src.x)} sources, {len(ref.x)} references -> ' + ', '.join(paths))
    return paths


# ----------------------------------------------------------------------------------------------
# --mode translate
# ----------------------------------------------------------------------------------------------

def image_paths(path, img_size, skip_bad):
    """The usable image files of --src or --ref: one file, or every image under a folder (recursive)."""
    if os.path.isdir(path):
        return folder_dataset(path, img_size, skip_bad=skip_bad).paths
    paths = check_images([path], skip_bad)
    if not paths:
        raise DataError(f'{path} cannot be used as an image')
    return paths


def output_stems(paths, root):
    """Output names of `paths` relative to root (a folder, or the file itself), without extension.

    The extension is kept (as _ext) for inputs that would otherwise share a name (a.jpg, a.png).
    """
    base = root if os.path.isdir(root) else os.path.dirname(os.path.abspath(root))
    stems = [os.path.splitext(os.path.relpath(os.path.abspath(p), os.path.abspath(base))) for p in paths]
    counts = collections.Counter(stem for stem, _ in stems)
    return {p: stem + ('_' + ext.lstrip('.') if counts[stem] > 1 else '')
            for p, (stem, ext) in zip(paths, stems)}


def chunks(items, size):
    """Consecutive slices of at most `size` items."""
    return [items[i:i + size] for i in range(0, len(items), size)]


def latent_styles(translator, cfg, y):
    """--num_styles random styles of domain y, truncated by --psi: ((K, style_dim), tags)."""
    psi = '' if cfg.psi == 1 else f'_psi{cfg.psi:g}'
    styles = translator.styles(y, cfg.seed, cfg.psi, cfg.num_styles)
    return styles, [f'z{k:02d}{psi}' for k in range(cfg.num_styles)]


def reference_styles(translator, cfg, y):
    """Styles of the --ref image(s) as domain y: ((R, style_dim), tags)."""
    paths = image_paths(cfg.ref, cfg.img_size, cfg.skip_bad_images)
    styles = torch.cat([translator.style_of(part, [y] * len(part)) for part in chunks(paths, cfg.val_batch_size)])
    stems = output_stems(paths, cfg.ref)
    return styles, ['ref_' + stems[p].replace(os.sep, '-') for p in paths]


def translate_images(translator, cfg, sources, styles, name):
    """One PNG per source and style, named name(source path, style index); returns the paths written."""
    written = []
    with tqdm(total=len(sources) * styles.size(0), desc='translate', unit='img', disable=None, leave=False) as bar:
        for part in chunks(sources, cfg.val_batch_size):
            for k, x_fakes in enumerate(translator.apply(part, styles, as_tensor=True)):
                for path, x_fake in zip(part, x_fakes):
                    out = os.path.join(cfg.result_dir, name(path, k))
                    save_image(x_fake.unsqueeze(0), 1, out)
                    written.append(out)
                bar.update(len(part))
    return written


def translate_videos(translator, cfg, sources, styles, name):
    """One MP4 per source: the source above its translation while the style walks through `styles`."""
    if styles.size(0) < 2:
        raise UserError('--video walks from style to style and needs two or more: pass --num_styles 2 or more '
                        '(random styles), or a folder of reference images as --ref')
    styles = video_styles(styles, cfg.video_frames, 'translate')
    written = []
    for path in tqdm(sources, desc='videos', unit='video', disable=None, leave=False):
        written.append(translator.write_video(os.path.join(cfg.result_dir, name(path)), path, styles,
                                              cfg.video_frames, cfg.fps))
    return written


def target_domain(translator, cfg):
    """The domain id of --trg_domain, else of the folder holding --ref."""
    if cfg.trg_domain is not None:
        return translator.domain_id(cfg.trg_domain, '--trg_domain')
    return translator.domain_of(cfg.ref, '--ref', 'pass --trg_domain NAME_OR_ID, the domain of the reference images')


def translate(cfg):
    """--mode translate: every --src image to the target domain, once per style (or as one video with --video)."""
    translator = Translator.from_config(cfg, keep_size=cfg.keep_size)
    cfg = follow_run(translator.cfg, translator.model.stored, 'translate')
    y = target_domain(translator, cfg)
    sources = image_paths(cfg.src, cfg.img_size, cfg.skip_bad_images)
    styles, tags = (reference_styles if cfg.ref else latent_styles)(translator, cfg, y)
    stems = output_stems(sources, cfg.src)
    prefix = f'_to_{domain_label(cfg, y)}_'
    if cfg.video:
        kind = 'ref' if cfg.ref else 'latent' + ('' if cfg.psi == 1 else f'_psi{cfg.psi:g}')
        written = translate_videos(translator, cfg, sources, styles, lambda p: stems[p] + prefix + kind + '.mp4')
        print(f'translate: {len(written)} videos ({len(sources)} inputs, {len(tags)} styles) -> {cfg.result_dir}')
    else:
        written = translate_images(translator, cfg, sources, styles, lambda p, k: stems[p] + prefix + tags[k] + '.png')
        print(f'translate: {len(written)} images ({len(sources)} inputs x {len(tags)} styles) -> {cfg.result_dir}')
    return written
