"""--mode sample and --mode translate: using a trained model.

Both load the EMA networks of --checkpoint FILE, or of --checkpoint_dir at
--resume_iter (a step or 'latest'). A checkpoint written here carries its
architecture and domain names; for an official StarGAN v2 or Hneg_SRC
checkpoint the architecture flags (--arch, --img_size, --num_domains, ...)
describe it.

A checkpoint written here also carries its run's config, and sample uses its
sampling settings unless given on the command line (RUN_SETTINGS): sources
and references per grid (--val_batch_size), styles per domain
(--num_outs_per_domain), and --src_dir/--ref_dir when those folders exist.
The first line printed says which values came from where.

Every generated batch is checked (core.inference.check_generated) before it is
written: a model whose weights blew up stops the mode with one line instead of
writing black or NaN images.

sample writes the reference-guided grid, the latent-guided grids (one per
psi) and the two videos into --result_dir; docs/sampling.md lists the files.
Sources and references are up to --val_batch_size images of --src_dir and
--ref_dir (one sub-folder per domain, as for training). When a folder holds
more, the first images of each domain are taken in turn, so every domain is
shown (upstream takes the first images in folder order, often one domain only).

translate writes one PNG per input image and style into --result_dir,
keeping the input's sub-folders (the names are in docs/sampling.md). Style
zKK is the style of the latent grids' row KK of that domain at psi 1 (same
--seed), so a style chosen from the grid can be applied to a folder.

Everything random is drawn from --seed: equal seeds give equal files.
"""
import collections
import os

import torch
from munch import Munch
from torch.utils.data import DataLoader
from tqdm import tqdm

from core.data.loader import EvalDataset, folder_dataset, stack_images
from core.utils.device import resolve_device
from core.utils.errors import UserError
from core.data.images import DataError, check_images, domain_tree
from core.inference import (all_domain_styles, average_styles, check_generated, load_model, style_codes,
                            translate_styles, truncate)
from core.utils.seeding import STREAM_SAMPLE, step_generator
from core.video import (max_video_sources, max_video_styles, num_video_frames, slide_margin, style_path_frames,
                        write_video)
from core.visualize import (PSIS, domain_names, label_grid, latent_grid, latent_labels, reference_grid,
                            reference_labels, save_grid, save_image)

# Purposes within STREAM_SAMPLE: each draws from its own generator.
PURPOSE_Z = 0           # z of the latent grids, video_latent and translate (style k = k-th draw)
PURPOSE_AVERAGE = 1     # z averaged into the truncation centres


# Settings of sample/translate taken from the run stored in the checkpoint unless given as flags.
RUN_SETTINGS = ('val_batch_size', 'num_outs_per_domain')
RUN_FOLDERS = ('src_dir', 'ref_dir')   # taken only if the folder exists here


class DomainError(UserError):
    """A domain name or id that the model does not have."""


# ----------------------------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------------------------

def domain_label(cfg, y):
    """The name of domain y, or 'domain<y>' for checkpoints without names."""
    return cfg.facts.domain_names[y] if cfg.facts.domain_names else f'domain{y}'


def draw_z(cfg, num, device):
    """The first `num` latent codes of --seed: (num, 1, latent_dim).

    One draw per code, so the k-th code does not depend on how many are drawn.
    """
    gen = step_generator(cfg.seed, PURPOSE_Z, STREAM_SAMPLE)
    return torch.stack([torch.randn(1, cfg.latent_dim, generator=gen) for _ in range(num)]).to(device)


def domain_averages(nets, cfg, device):
    """Truncation centres: the mean style of every domain, (num_domains, style_dim)."""
    gen = step_generator(cfg.seed, PURPOSE_AVERAGE, STREAM_SAMPLE)
    return average_styles(nets.mapping_network, cfg.latent_dim, generator=gen, device=device)


def follow_run(cfg, stored, mode):
    """cfg with the run's sampling settings (RUN_SETTINGS, RUN_FOLDERS) where no flag gave them.

    stored: the config saved in the checkpoint, or None (official files: the
    flags and their defaults stand). Prints which values were used and where
    they came from; returns the new config.
    """
    if stored is None:
        print(f'{mode}: the checkpoint stores no run config; settings from the flags and defaults')
        return cfg
    given = set(cfg.facts.explicit_flags)
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
    tree = domain_tree(root, flag, cfg.num_domains, cfg.facts.domain_names, counted_by='the model')
    picked = first_per_domain(tree.paths_by_domain, cfg.val_batch_size)
    usable = set(check_images([path for path, _ in picked], cfg.skip_bad_images))
    picked = [(path, y) for path, y in picked if path in usable]
    if not picked:
        raise DataError(f'--{flag} {root}: none of the selected images can be used')
    x = stack_images([p for p, _ in picked], cfg.img_size).to(device)   # (N, 3, S, S)
    return Munch(x=x, y=torch.tensor([y for _, y in picked], dtype=torch.long, device=device))


def latent_path_styles(nets, z_list, s_avg, psi):
    """Styles of the latent video: every z for domain 0, then domain 1, ...: (D * num_z, style_dim)."""
    s_all = all_domain_styles(nets.mapping_network, z_list[:, 0]).transpose(0, 1)   # (D, num_z, style_dim)
    s_all = truncate(s_all, s_avg.unsqueeze(1), psi)
    return s_all.reshape(-1, s_all.size(-1))                                        # (D * num_z, style_dim)


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


def checked_rows(bar, source):
    """on_row of the grids: check each generated row (one host sync), then advance the progress bar."""
    def on_row(x_fake):
        check_generated(x_fake, source)
        bar.update()
    return on_row


def checked_frames(frames, source):
    """Pass video frames through, checking each (one host sync per frame, which one decoder call made)."""
    for frame in frames:
        check_generated(frame, source)
        yield frame


def write_grids(nets, cfg, src, ref, z_list, s_avg, source):
    """latent_psi_*.jpg and reference.jpg (labelled unless --no-labels), with one progress bar over all rows.

    source names the checkpoint in the message of a model that generates NaN or absurd values.
    """
    rows = len(PSIS) * cfg.num_domains * z_list.size(0) + ref.x.size(0)
    cell, src_names = cfg.img_size, domain_names(cfg, src.y)
    paths = []
    with tqdm(total=rows, desc='grids', unit='row', disable=None, leave=False) as bar:
        on_row = checked_rows(bar, source)
        for psi in PSIS:
            path = os.path.join(cfg.result_dir, f'latent_psi_{psi}.jpg')
            grid = latent_grid(nets, src.x, z_list, s_avg, psi, cfg.num_domains, on_row)
            if cfg.labels:
                labels = latent_labels(src_names, domain_names(cfg, range(cfg.num_domains)), z_list.size(0), psi)
                grid = label_grid(grid, cell, *labels)
            save_grid(grid, path)
            paths.append(path)
        path = os.path.join(cfg.result_dir, 'reference.jpg')
        grid = reference_grid(nets, src.x, ref.x, ref.y, on_row)
        if cfg.labels:
            grid = label_grid(grid, cell, *reference_labels(src_names, domain_names(cfg, ref.y)))
        save_grid(grid, path)
        paths.append(path)
    return paths


def write_videos(nets, cfg, src, ref, z_list, s_avg, source):
    """video_ref.mp4 and video_latent.mp4, streamed; every frame checked (source as write_grids)."""
    G, T = nets.generator, cfg.video_frames
    path_ref = os.path.join(cfg.result_dir, 'video_ref.mp4')
    s_ref = video_styles(nets.style_encoder(ref.x, ref.y), T, 'reference')   # (R, style_dim)
    frames = style_path_frames(G, video_sources(src.x, cfg.img_size, True), s_ref, T, x_ref=ref.x,
                               margin=slide_margin(cfg.img_size))
    write_video(path_ref, checked_frames(frames, source), num_video_frames(s_ref.size(0), T), cfg.fps)

    path_latent = os.path.join(cfg.result_dir, 'video_latent.mp4')
    styles = video_styles(latent_path_styles(nets, z_list, s_avg, cfg.psi), T, 'latent')
    frames = style_path_frames(G, video_sources(src.x, cfg.img_size, False), styles, T)
    write_video(path_latent, checked_frames(frames, source), num_video_frames(styles.size(0), T), cfg.fps)
    return [path_ref, path_latent]


@torch.no_grad()
def sample(cfg):
    """--mode sample: reference.jpg, latent_psi_*.jpg, video_ref.mp4 and video_latent.mp4."""
    device = resolve_device(cfg.device)
    model = load_model(cfg, device)
    nets, cfg = model.nets, follow_run(model.cfg, model.stored, 'sample')
    src = load_domain_batch(cfg, 'src_dir', device)
    ref = load_domain_batch(cfg, 'ref_dir', device)
    z_list = draw_z(cfg, cfg.num_outs_per_domain, device)   # (num_outs, 1, latent_dim)
    s_avg = domain_averages(nets, cfg, device)
    paths = write_grids(nets, cfg, src, ref, z_list, s_avg, model.path)
    paths += write_videos(nets, cfg, src, ref, z_list, s_avg, model.path)
    print(f'sample: {len(src.x)} sources, {len(ref.x)} references -> ' + ', '.join(paths))
    return paths


# ----------------------------------------------------------------------------------------------
# --mode translate
# ----------------------------------------------------------------------------------------------

def _count(num, noun):
    """'1 image', '2 images'."""
    return f'{num} {noun}' + ('' if num == 1 else 's')


def _domain_of_refs(cfg):
    """The domain named by the folder holding --ref (a folder of references is itself that folder)."""
    folder = cfg.ref if os.path.isdir(cfg.ref) else os.path.dirname(os.path.abspath(cfg.ref))
    name = os.path.basename(os.path.normpath(os.path.abspath(folder)))
    names = cfg.facts.domain_names
    if not names or name not in names:
        known = f'the model\'s domains are {", ".join(names)}' if names else 'this checkpoint stores no domain names'
        raise DomainError(f'--ref: the folder name {name!r} is not a domain ({known}); pass --trg_domain '
                          f'NAME_OR_ID, the domain of the reference images')
    return name


def resolve_domain(cfg, value):
    """Domain id of --trg_domain given as a name (from the checkpoint) or a 0-based id."""
    names = cfg.facts.domain_names
    if names and value in names:
        return list(names).index(value)
    try:
        y = int(value)
    except ValueError:
        if names:
            raise DomainError(f'--trg_domain {value!r} is not a domain of this model; its domains are '
                              + ', '.join(f'{n} ({i})' for i, n in enumerate(names))) from None
        raise DomainError(f'--trg_domain {value!r}: this checkpoint stores no domain names (official layout); '
                          f'give the domain id, 0 to {cfg.num_domains - 1} (sorted folder order)') from None
    if not 0 <= y < cfg.num_domains:
        raise DomainError(f'--trg_domain {y} is out of range: the model has domains 0 to {cfg.num_domains - 1}')
    return y


def image_dataset(path, img_size, skip_bad):
    """EvalDataset of one image file or of every image under a folder (recursive)."""
    if os.path.isdir(path):
        return folder_dataset(path, img_size, skip_bad=skip_bad)
    paths = check_images([path], skip_bad)
    if not paths:
        raise DataError(f'{path} cannot be used as an image')
    return EvalDataset(paths, [-1], img_size)


def output_stems(paths, root):
    """Output names of `paths` relative to root (a folder, or the file itself), without extension.

    The extension is kept (as _ext) for inputs that would otherwise share a name (a.jpg, a.png).
    """
    base = root if os.path.isdir(root) else os.path.dirname(os.path.abspath(root))
    stems = [os.path.splitext(os.path.relpath(os.path.abspath(p), os.path.abspath(base))) for p in paths]
    counts = collections.Counter(stem for stem, _ in stems)
    return {p: stem + ('_' + ext.lstrip('.') if counts[stem] > 1 else '')
            for p, (stem, ext) in zip(paths, stems)}


@torch.no_grad()
def latent_styles(nets, cfg, y, device):
    """--num_styles random styles of domain y, truncated by --psi: ((K, style_dim), tags)."""
    z = draw_z(cfg, cfg.num_styles, device)[:, 0]   # (K, latent_dim)
    s = nets.mapping_network(z, torch.full((z.size(0),), y, dtype=torch.long, device=device))
    if cfg.psi != 1:
        s = truncate(s, domain_averages(nets, cfg, device)[y:y + 1], cfg.psi)
    psi = '' if cfg.psi == 1 else f'_psi{cfg.psi:g}'
    return s, [f'z{k:02d}{psi}' for k in range(z.size(0))]


@torch.no_grad()
def reference_styles(nets, cfg, y, device):
    """Styles of the --ref image(s) as domain y: ((R, style_dim), tags)."""
    refs = image_dataset(cfg.ref, cfg.img_size, cfg.skip_bad_images)
    styles = style_codes(nets.style_encoder, refs, y, cfg.val_batch_size, device)
    stems = output_stems(refs.paths, cfg.ref)
    return styles, ['ref_' + stems[p].replace(os.sep, '-') for p in refs.paths]


@torch.no_grad()
def translate(cfg):
    """--mode translate: every --src image to the target domain, once per style."""
    device = resolve_device(cfg.device)
    model = load_model(cfg, device)
    nets, cfg = model.nets, model.cfg   # translate uses none of the run's sampling settings (follow_run)
    y = resolve_domain(cfg, cfg.trg_domain if cfg.trg_domain is not None else _domain_of_refs(cfg))
    sources = image_dataset(cfg.src, cfg.img_size, cfg.skip_bad_images)
    styles, tags = (reference_styles if cfg.ref else latent_styles)(nets, cfg, y, device)
    stems = output_stems(sources.paths, cfg.src)
    prefix = f'_to_{domain_label(cfg, y)}_'
    loader = DataLoader(sources, batch_size=cfg.val_batch_size, num_workers=cfg.num_workers,
                        pin_memory=device.type == 'cuda')
    written = []
    with tqdm(total=len(sources) * len(tags), desc='translate', unit='img', disable=None, leave=False) as bar:
        for x_src, _, paths in loader:
            x_fakes = translate_styles(nets.generator, x_src.to(device), (styles[k:k + 1] for k in range(len(tags))))
            for tag, x_fake in zip(tags, x_fakes):
                check_generated(x_fake, model.path)
                x_fake = x_fake.cpu()
                for i, path in enumerate(paths):
                    out = os.path.join(cfg.result_dir, stems[path] + prefix + tag + '.png')
                    save_image(x_fake[i:i + 1], 1, out)
                    written.append(out)
                bar.update(len(paths))
    print(f'translate: {_count(len(written), "image")} ({_count(len(sources), "input")} x '
          f'{_count(len(tags), "style")}) -> {cfg.result_dir}')
    return written
