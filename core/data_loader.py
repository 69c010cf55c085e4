"""Data loading: domain folders, robust image decoding, seeded augmentation,
balanced per-step sampling, and the fixed validation batch.

Layout: `root/<domain_name>/**/<image>`, one sub-folder per domain. A domain's
id is the position of its folder name in the sorted list of folder names.

Determinism: a training batch is a pure function of (seed, step, stream). The
batch sampler runs in the main process and draws, for step i, the image
indices and one augmentation seed per image from
`core.seeding.step_generator(seed, i, stream)`; the workers only decode and
augment with those seeds. A run resumed at step k therefore sees exactly the
batches of an uninterrupted run, whatever the number of workers.

Image modes: everything is converted to 8-bit RGB. Transparent pixels are
composited onto white (so transparent backgrounds look like the white
backgrounds of typical photo datasets, not like the arbitrary colour stored
under alpha = 0). 16-bit and 32-bit integer images are scaled from the
0..65535 range (not clipped at 255); float images are taken as [0, 1] or
[0, 255] when they fit, otherwise min-max stretched.

Everything given to a DataLoader is a module-level class without lambdas, so it
pickles under the 'spawn' start method (Windows, macOS).
"""
import math
import os
import random
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from munch import Munch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from core.errors import UserError
from core.manifest import verify_manifest
from core.seeding import STREAM_REFERENCE, STREAM_SOURCE, STREAM_VAL, step_generator

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')
RANDCROP_SCALE = (0.8, 1.0)   # upstream RandomResizedCrop(scale=...)
RANDCROP_RATIO = (0.9, 1.1)   # upstream RandomResizedCrop(ratio=...)
RANDCROP_ATTEMPTS = 10        # as torchvision, before the centre-crop fallback
FLIP_PROB = 0.5
MIN_IMAGE_SIDE = 2            # a 1-pixel side cannot be resized or cropped meaningfully
BACKGROUND_RGB = (255, 255, 255)
MAX_LISTED_BAD_FILES = 20
PROGRESS_MIN_IMAGES = 200     # below this a progress bar is only noise
JUNK_FOLDER_NAMES = {'__MACOSX'}   # left behind by zip archives made on macOS
ALPHA_MODES = {'RGBA', 'LA', 'PA'}


class DataError(UserError):
    """A problem with the user's data; str(error) is the whole user-facing message."""


class BadImageError(Exception):
    """An image file that cannot be decoded or used. `path` and `reason` say which and why."""

    def __init__(self, path, reason='cannot be decoded'):
        super().__init__(f'{path}: {reason}')
        self.path = path
        self.reason = reason


# ---------------------------------------------------------------------------
# Finding domains and images
# ---------------------------------------------------------------------------

def _is_hidden(name):
    return name.startswith('.') or name in JUNK_FOLDER_NAMES


def _is_image_name(name):
    # Hidden files include macOS '._x.jpg' resource forks, which are not images.
    return not _is_hidden(name) and name.lower().endswith(IMG_EXTENSIONS)


def _require_folder(folder):
    if not folder:
        raise DataError('No image folder was given.')
    if not os.path.isdir(folder):
        what = 'is not a folder' if os.path.exists(folder) else 'does not exist'
        raise DataError(f'Image folder {folder} {what}. Check the path.')


def list_images(folder):
    """Sorted image files under `folder`: recursive, extensions case-insensitive, hidden entries skipped."""
    _require_folder(folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        # Pruning in place stops os.walk from descending into hidden folders.
        dirnames[:] = [d for d in dirnames if not _is_hidden(d)]
        found += [os.path.join(dirpath, f) for f in filenames if _is_image_name(f)]
    return sorted(found)


def list_domains(root):
    """Sorted names of the domain sub-folders of `root`; stray files and hidden folders are ignored."""
    _require_folder(root)
    names = sorted(n for n in os.listdir(root)
                   if not _is_hidden(n) and os.path.isdir(os.path.join(root, n)))
    if not names:
        raise DataError(f'{root} has no domain sub-folders. Expected one folder per domain: '
                        f'{os.path.join(root, "<domain_name>", "<images>")}.')
    return names


def _domain_images(root, domains):
    """Image paths of all domains, domain by domain, and their domain ids."""
    paths, labels = [], []
    for y, name in enumerate(domains):
        found = list_images(os.path.join(root, name))
        if not found:
            raise DataError(f'Domain folder {os.path.join(root, name)} contains no images '
                            f'(searched recursively for {", ".join(IMG_EXTENSIONS)}). '
                            'Add images or remove the folder.')
        paths += found
        labels += [y] * len(found)
    return paths, labels


def scan_domain_tree(root):
    """(domain names, image paths, domain ids) of a `root/<domain>/**/<image>` tree."""
    domains = list_domains(root)
    return (domains, *_domain_images(root, domains))


def _check_domain_count(root, domains, num_domains):
    if num_domains is not None and len(domains) != num_domains:
        raise DataError(f'--num_domains is {num_domains}, but {root} has {len(domains)} domain '
                        f'folder(s): {", ".join(domains)}. Set --num_domains {len(domains)} or '
                        'arrange the images as one sub-folder per domain.')


# ---------------------------------------------------------------------------
# Decoding images
# ---------------------------------------------------------------------------

def _unit_range(values, mode):
    """Map the pixel values of a single-channel 'I*' or 'F' image to [0, 1]."""
    lo, hi = values.min(), values.max()
    if mode == 'F' and lo >= 0 and hi <= 1:
        return values
    if mode == 'F' and lo >= 0 and hi <= 255:
        return values / 255
    # 'I;16*' and, in older Pillow versions, 16-bit PNGs opened as 'I' use 0..65535.
    if mode != 'F' and lo >= 0 and hi <= 65535:
        return values / 65535
    return (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)


def _high_depth_to_gray(img):
    """8-bit 'L' copy of a 16/32-bit integer or float image, scaled rather than clipped at 255."""
    values = np.nan_to_num(np.asarray(img, dtype=np.float64))   # (H, W)
    gray = np.rint(_unit_range(values, img.mode) * 255)
    return Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8))


def _composite_on_white(img):
    rgba = img.convert('RGBA')
    background = Image.new('RGBA', rgba.size, BACKGROUND_RGB + (255,))
    return Image.alpha_composite(background, rgba).convert('RGB')


def _to_rgb(img):
    """Convert any Pillow mode to 8-bit RGB (transparency composited onto white)."""
    if img.mode.startswith('I') or img.mode == 'F':
        img = _high_depth_to_gray(img)
    # Palette/L/RGB images can carry transparency in img.info instead of an alpha band.
    if img.mode in ALPHA_MODES or 'transparency' in img.info:
        return _composite_on_white(img)
    return img.convert('RGB')


def _apply_exif_orientation(img):
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a malformed EXIF block should not make decodable pixels unusable
        return img


def _describe_failure(path, err):
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return 'empty file (0 bytes)'
    if isinstance(err, UnidentifiedImageError):
        return 'not a recognised image format (corrupt or mislabelled file)'
    return f'{type(err).__name__}: {err}'


def load_rgb(path):
    """Fully decode `path` into an 8-bit RGB PIL image with its EXIF orientation applied.

    Raises BadImageError (with the reason) for unreadable, truncated, empty or
    smaller-than-2x2 images.
    """
    try:
        with Image.open(path) as opened:
            opened.load()   # decode every pixel now, so truncated files fail here
            rgb = _to_rgb(_apply_exif_orientation(opened))
    except Exception as err:  # Pillow's decoders raise many types (OSError, SyntaxError, ValueError, ...)
        raise BadImageError(path, _describe_failure(path, err)) from err
    if min(rgb.size) < MIN_IMAGE_SIDE:
        raise BadImageError(path, f'too small ({rgb.width}x{rgb.height} pixels, '
                                  f'at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} needed)')
    return rgb


def _image_problem(path):
    """None if `path` loads as a usable image, else the reason it does not."""
    try:
        load_rgb(path)
    except BadImageError as err:
        return err.reason
    return None


def _bad_image_report(problems, total):
    shown = list(problems.items())[:MAX_LISTED_BAD_FILES]
    lines = [f'  {path}: {reason}' for path, reason in shown]
    if len(problems) > len(shown):
        lines.append(f'  ... and {len(problems) - len(shown)} more')
    return f'{len(problems)} of {total} image files cannot be used:\n' + '\n'.join(lines)


def check_images(paths, skip_bad=False):
    """Fully decode every image of `paths` and return the usable ones, in order.

    Bad files raise one DataError listing them, or, with skip_bad=True, are
    reported in one warning and dropped.
    """
    paths = list(paths)
    show_bar = len(paths) >= PROGRESS_MIN_IMAGES and sys.stderr.isatty()
    # Threads suffice: Pillow releases the GIL while decoding.
    with ThreadPoolExecutor() as pool:
        results = list(tqdm(pool.map(_image_problem, paths), total=len(paths),
                            desc='Checking images', unit='img', disable=not show_bar))
    problems = {p: r for p, r in zip(paths, results) if r is not None}
    if not problems:
        return paths
    report = _bad_image_report(problems, len(paths))
    if not skip_bad:
        raise DataError(f'{report}\nFix or remove these files, or pass --skip_bad_images to skip them.')
    warnings.warn(f'{report}\nSkipping them (--skip_bad_images).', stacklevel=2)
    return [p for p in paths if p not in problems]


def _load_checked_tree(root, num_domains, skip_bad):
    """Image paths and domain ids of a domain tree, after the manifest, domain-count and image checks."""
    verify_manifest(root)
    domains = list_domains(root)
    _check_domain_count(root, domains, num_domains)
    paths, labels = _domain_images(root, domains)
    good = set(check_images(paths, skip_bad))
    kept = [(p, y) for p, y in zip(paths, labels) if p in good]
    emptied = sorted(set(range(len(domains))) - {y for _, y in kept})
    if emptied:
        names = ', '.join(os.path.join(root, domains[y]) for y in emptied)
        raise DataError(f'No usable images are left in {names} after skipping the bad ones. '
                        'Add images to these folders.')
    return [p for p, _ in kept], [y for _, y in kept]


# ---------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------

def pil_to_tensor(img):
    """8-bit RGB PIL image -> float tensor (3, H, W) in [-1, 1] (upstream ToTensor + Normalize(0.5, 0.5))."""
    pixels = torch.from_numpy(np.array(img, dtype=np.float32))   # (H, W, 3) in [0, 255]
    return pixels.permute(2, 0, 1).contiguous() / 127.5 - 1      # (3, H, W)


def squash(img, img_size):
    """Resize to (img_size, img_size), bilinear, ignoring the aspect ratio (as upstream)."""
    if img.size == (img_size, img_size):
        return img
    return img.resize((img_size, img_size), Image.Resampling.BILINEAR)


def random_resized_crop_params(width, height, rng, scale=RANDCROP_SCALE, ratio=RANDCROP_RATIO):
    """(top, left, crop_h, crop_w) of a random crop, drawn like torchvision's RandomResizedCrop.

    Tries RANDCROP_ATTEMPTS crops of area fraction ~ U(scale) and log aspect
    ratio ~ U(log ratio); if none fits, falls back to the largest centred crop
    whose aspect ratio is within `ratio`. `rng` is a random.Random.
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(RANDCROP_ATTEMPTS):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        crop_w = round(math.sqrt(target_area * aspect))
        crop_h = round(math.sqrt(target_area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            return rng.randint(0, height - crop_h), rng.randint(0, width - crop_w), crop_h, crop_w
    return _centre_crop_params(width, height, ratio)


def _centre_crop_params(width, height, ratio):
    crop_w, crop_h = width, height
    if width / height < ratio[0]:      # too tall: keep the width
        crop_h = round(width / ratio[0])
    elif width / height > ratio[1]:    # too wide: keep the height
        crop_w = round(height * ratio[1])
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


class TrainTransform:
    """Upstream's training augmentation, driven by an explicit per-sample seed.

    With probability randcrop_prob a RandomResizedCrop(img_size, scale=(0.8, 1),
    ratio=(0.9, 1.1)); then Resize((S, S)); horizontal flip with p = 0.5;
    tensor in [-1, 1]. Called as transform(img, seed) -> (3, S, S).
    """

    def __init__(self, img_size, randcrop_prob):
        self.img_size = img_size
        self.randcrop_prob = randcrop_prob

    def __call__(self, img, seed):
        rng = random.Random(seed)
        if rng.random() < self.randcrop_prob:
            top, left, crop_h, crop_w = random_resized_crop_params(img.width, img.height, rng)
            img = img.crop((left, top, left + crop_w, top + crop_h))
        img = squash(img, self.img_size)
        if rng.random() < FLIP_PROB:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return pil_to_tensor(img)


class EvalTransform:
    """Resize((S, S)) and tensor in [-1, 1]: transform(img) -> (3, S, S)."""

    def __init__(self, img_size):
        self.img_size = img_size

    def __call__(self, img):
        return pil_to_tensor(squash(img, self.img_size))


# ---------------------------------------------------------------------------
# Training data: per-step sampler, dataset, iterator
# ---------------------------------------------------------------------------

def _uniform_below(counts, gen):
    """One uniform integer in [0, counts[k]) per entry of `counts` (B,) -> (B,)."""
    u = torch.rand(counts.shape, generator=gen, dtype=torch.float64)
    return torch.minimum((u * counts).long(), counts - 1)


class StepBatchSampler:
    """Endless batch sampler; the batch of step i depends only on (seed, i, stream).

    Each sample picks its domain uniformly and an image uniformly within it
    (upstream's WeightedRandomSampler with weights 1/count(domain)). Items are
    (index, aug_seed), or with pairs=True (index, aug_seed, index2, aug_seed2)
    where index2 is another image of the same domain, different from index
    whenever the domain has at least two images.
    """

    def __init__(self, labels, batch_size, seed, stream, start_step=0, pairs=False):
        labels = torch.as_tensor(labels, dtype=torch.long)
        num_domains = int(labels.max()) + 1
        # Dataset indices of each domain's images: num_domains tensors of shape (count,).
        self.members = [torch.nonzero(labels == y).flatten() for y in range(num_domains)]
        self.counts = torch.tensor([len(m) for m in self.members])   # (num_domains,)
        if not bool((self.counts > 0).all()):
            raise ValueError(f'every domain id in 0..{num_domains - 1} needs at least one image')
        self.batch_size = batch_size
        self.seed = seed
        self.stream = stream
        self.start_step = start_step
        self.pairs = pairs

    def batch(self, step):
        """The list of batch_size items of training step `step`."""
        gen = step_generator(self.seed, step, self.stream)
        y = torch.randint(len(self.members), (self.batch_size,), generator=gen)   # (B,)
        counts = self.counts[y]                                                     # (B,)
        first = _uniform_below(counts, gen)                                         # (B,)
        # Shift by 1 + U[0, n-1) modulo n: uniform over the other images of the domain.
        offset = 1 + _uniform_below((counts - 1).clamp(min=1), gen)                 # (B,)
        second = torch.where(counts > 1, (first + offset) % counts, first)          # (B,)
        aug_seeds = torch.randint(0, 2 ** 63 - 1, (self.batch_size, 2), generator=gen)   # (B, 2)
        return [self._item(int(d), int(i), int(j), s.tolist())
                for d, i, j, s in zip(y, first, second, aug_seeds)]

    def _item(self, domain, local, local2, seeds):
        index = int(self.members[domain][local])
        if not self.pairs:
            return (index, seeds[0])
        return (index, seeds[0], int(self.members[domain][local2]), seeds[1])

    def __iter__(self):
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


class TrainDataset(Dataset):
    """Training images of all domains, indexed by StepBatchSampler items.

    dataset[(index, aug_seed)] -> (x (3, S, S), y);
    dataset[(index, aug_seed, index2, aug_seed2)] -> (x, x2, y).
    """

    def __init__(self, paths, labels, img_size, randcrop_prob):
        self.paths = list(paths)
        self.labels = list(labels)
        self.transform = TrainTransform(img_size, randcrop_prob)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, item):
        images = [self.transform(load_rgb(self.paths[index]), seed)
                  for index, seed in zip(item[0::2], item[1::2])]
        return (*images, self.labels[item[0]])


class TrainIterator:
    """Endless iterator of training batches, one Munch per step from start_step on.

    Each batch has x_src (B, 3, S, S), y_src (B,), x_ref, x_ref2 (B, 3, S, S)
    and y_ref (B,), on `device`. `step` is the step of the next batch.
    """

    def __init__(self, source_loader, reference_loader, device, start_step):
        self.device = torch.device(device)
        self.step = start_step
        self._loaders = [source_loader, reference_loader]
        self._source = iter(source_loader)
        self._reference = iter(reference_loader)

    def __iter__(self):
        return self

    def __next__(self):
        x_src, y_src = next(self._source)
        x_ref, x_ref2, y_ref = next(self._reference)
        self.step += 1
        batch = Munch(x_src=x_src, y_src=y_src, x_ref=x_ref, x_ref2=x_ref2, y_ref=y_ref)
        return Munch({k: v.to(self.device, non_blocking=True) for k, v in batch.items()})

    def close(self):
        """Stop the worker processes (dropping the last references to the loaders' iterators)."""
        self._source = self._reference = None
        self._loaders = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _step_loader(dataset, sampler, num_workers, device):
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                      pin_memory=torch.device(device).type == 'cuda',
                      persistent_workers=num_workers > 0)


def make_train_iterator(cfg, start_step, device):
    """Endless TrainIterator over cfg.train_img_dir: the batches of steps start_step, start_step + 1, ...

    Checks the domain count against cfg.num_domains and decodes every
    training image first (see check_images, cfg.skip_bad_images).
    """
    paths, labels = _load_checked_tree(cfg.train_img_dir, cfg.num_domains, cfg.skip_bad_images)
    dataset = TrainDataset(paths, labels, cfg.img_size, cfg.randcrop_prob)
    loaders = [_step_loader(dataset,
                            StepBatchSampler(labels, cfg.batch_size, cfg.seed, stream, start_step, pairs),
                            cfg.num_workers, device)
               for stream, pairs in ((STREAM_SOURCE, False), (STREAM_REFERENCE, True))]
    return TrainIterator(*loaders, device, start_step)


# ---------------------------------------------------------------------------
# Validation, evaluation and single images
# ---------------------------------------------------------------------------

def _stack_images(paths, transform):
    return torch.stack([transform(load_rgb(p)) for p in paths])   # (N, 3, S, S)


def load_val_batch(cfg, device):
    """The fixed validation batch for debug images: Munch(x_src, y_src, x_ref, y_ref).

    N = min(cfg.val_batch_size, number of val images) sources and N references,
    chosen by one permutation from step_generator(cfg.seed, 0, STREAM_VAL):
    sources are its first N entries, references the next N (wrapping around
    when there are fewer than 2N images).
    """
    paths, labels = _load_checked_tree(cfg.val_img_dir, cfg.num_domains, cfg.skip_bad_images)
    num = min(cfg.val_batch_size, len(paths))
    order = torch.randperm(len(paths), generator=step_generator(cfg.seed, 0, STREAM_VAL))   # (n,)
    picks = {'src': order[:num], 'ref': order[(torch.arange(num) + num) % len(paths)]}      # (N,) each
    transform = EvalTransform(cfg.img_size)
    batch = Munch()
    for role, ids in picks.items():
        batch['x_' + role] = _stack_images([paths[i] for i in ids], transform)
        batch['y_' + role] = torch.tensor([labels[i] for i in ids], dtype=torch.long)
    return Munch({k: v.to(device) for k, v in batch.items()})


class EvalDataset(Dataset):
    """Images with the eval transform: dataset[k] -> (x (3, S, S), domain id, path)."""

    def __init__(self, paths, labels, img_size):
        self.paths = list(paths)
        self.labels = list(labels)
        self.transform = EvalTransform(img_size)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        path = self.paths[index]
        return self.transform(load_rgb(path)), self.labels[index], path


def folder_dataset(folder, img_size, domain=-1, skip_bad=False):
    """EvalDataset of all images under one folder (recursive), all labelled `domain`."""
    paths = list_images(folder)
    if not paths:
        raise DataError(f'{folder} contains no images '
                        f'(searched recursively for {", ".join(IMG_EXTENSIONS)}).')
    paths = check_images(paths, skip_bad)
    if not paths:
        raise DataError(f'{folder} contains no usable images.')
    return EvalDataset(paths, [domain] * len(paths), img_size)


def domain_tree_dataset(root, img_size, num_domains=None, skip_bad=False):
    """EvalDataset of a `root/<domain>/**/<image>` tree, labelled with domain ids.

    The domain count is checked against num_domains unless it is None.
    """
    paths, labels = _load_checked_tree(root, num_domains, skip_bad)
    return EvalDataset(paths, labels, img_size)


def load_image_tensor(path, img_size):
    """One image file as a (1, 3, S, S) tensor in [-1, 1]; DataError if it cannot be used."""
    if not os.path.isfile(path):
        raise DataError(f'Image file {path} does not exist.')
    try:
        img = load_rgb(path)
    except BadImageError as err:
        raise DataError(f'Cannot use image {path}: {err.reason}.') from err
    return EvalTransform(img_size)(img).unsqueeze(0)   # (1, 3, S, S)
