"""Data loading: seeded augmentation, balanced per-step sampling, the fixed
validation batch and the evaluation datasets. Listing, decoding and checking
image files and domain trees is core.data.images' job.

Determinism: a training batch is a pure function of (seed, step, stream). The
batch sampler runs in the main process and draws, for step i, the image
indices and one augmentation seed per image from
`core.utils.seeding.step_generator(seed, i, stream)`; the workers only decode and
augment with those seeds. A run resumed at step k therefore sees exactly the
batches of an uninterrupted run, whatever the number of workers.

Everything given to a DataLoader is a module-level class without lambdas, so it
pickles under the 'spawn' start method (Windows, macOS).
"""
import math
import os
import random
import warnings

import numpy as np
import torch
from munch import Munch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from core.data.images import (IMG_EXTENSIONS, BadImageError, DataError, check_images, domain_tree, list_images,
                         load_rgb)
from core.data.manifest import verify_manifest
from core.utils.distributed import process_slice
from core.utils.seeding import STREAM_REFERENCE, STREAM_SOURCE, STREAM_VAL, step_generator

RANDCROP_SCALE = (0.8, 1.0)   # upstream RandomResizedCrop(scale=...)
RANDCROP_RATIO = (0.9, 1.1)   # upstream RandomResizedCrop(ratio=...)
RANDCROP_ATTEMPTS = 10        # as torchvision, before the centre-crop fallback
FLIP_PROB = 0.5


def _load_checked_tree(root, num_domains, skip_bad, flag=None, names=None, named_by='the model'):
    """Image paths and domain ids of a domain tree, after the manifest, domain-tree and image checks."""
    verify_manifest(root)
    tree = domain_tree(root, flag, num_domains, names, named_by=named_by)
    domains, paths, labels = tree.names, tree.paths, tree.labels
    good = set(check_images(paths, skip_bad))
    kept = [(p, y) for p, y in zip(paths, labels) if p in good]
    emptied = sorted(set(range(len(domains))) - {y for _, y in kept})
    if emptied:
        names = ', '.join(os.path.join(root, domains[y]) for y in emptied)
        raise DataError(f'No usable images are left in {names} after skipping the bad ones. '
                        'Add images to these folders.')
    return [p for p, _ in kept], [y for _, y in kept]


# ---------------------------------------------------------------------------
# Reading images during a run
# ---------------------------------------------------------------------------

class UnreadableImageError(DataError):
    """An image that passed the check at the start of the run but cannot be read when it is needed.

    DataLoader workers send exceptions to the main process as their type and
    formatted traceback, and torch re-creates the exception from that text;
    __init__ keeps only the original message, so the user sees one line.
    """

    def __init__(self, message):
        marker = f'{type(self).__name__}: '
        if message.startswith('Caught ') and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)


def _unreadable(err):
    return UnreadableImageError(
        f'{err.path} cannot be read any more ({err.reason}), although it passed the check at the start of '
        f'the run; restore or remove it, or pass --skip_bad_images to use another image of its domain '
        f'in its place')


def read_image(path):
    """load_rgb(path), or UnreadableImageError naming the file and what to do."""
    try:
        return load_rgb(path)
    except BadImageError as err:
        raise _unreadable(err) from None


def read_or_substitute(paths, labels, index, skip_bad):
    """(image, path) of paths[index]; under skip_bad an unreadable one is replaced by the next readable
    image of the same domain in list order (wrapping around), so a given set of files always gives
    the same batches. Raises UnreadableImageError when that is not allowed or possible."""
    try:
        return load_rgb(paths[index]), paths[index]
    except BadImageError as err:
        if not skip_bad:
            raise _unreadable(err) from None
        reason = err.reason
    for k in range(1, len(paths)):
        other = (index + k) % len(paths)
        if labels[other] != labels[index]:
            continue
        try:
            img = load_rgb(paths[other])
        except BadImageError:
            continue
        warnings.warn(f'{paths[index]} cannot be read any more ({reason}); using {paths[other]} of the same '
                      f'domain in its place (--skip_bad_images)', stacklevel=2)
        return img, paths[other]
    raise UnreadableImageError(f'{paths[index]} cannot be read any more ({reason}) and no other image of its '
                               f'domain can be read either; restore the image folder')


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

    Under several processes every one draws the same global batch of
    batch_size items and keeps its own contiguous part (`part`, a slice), so
    the processes together see exactly the batch of a single-process run.
    """

    def __init__(self, labels, batch_size, seed, stream, start_step=0, pairs=False, part=slice(None)):
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
        self.part = part

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
        items = list(zip(y.tolist(), first.tolist(), second.tolist(), aug_seeds.tolist()))[self.part]
        return [self._item(d, i, j, s) for d, i, j, s in items]

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
    An image that became unreadable stops the run with one message, or under
    skip_bad is replaced (see read_or_substitute).
    """

    def __init__(self, paths, labels, img_size, randcrop_prob, skip_bad=False):
        self.paths = list(paths)
        self.labels = list(labels)
        self.transform = TrainTransform(img_size, randcrop_prob)
        self.skip_bad = skip_bad

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, item):
        images = [self.transform(read_or_substitute(self.paths, self.labels, index, self.skip_bad)[0], seed)
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


def make_train_iterator(cfg, start_step, device, rank=0, world_size=1):
    """Endless TrainIterator over cfg.train_img_dir: the batches of steps start_step, start_step + 1, ...

    Checks the domain count against cfg.num_domains and decodes every
    training image first (see check_images, cfg.skip_bad_images). With
    world_size processes, each gets its part of the global --batch_size batch.
    """
    paths, labels = _load_checked_tree(cfg.train_img_dir, cfg.num_domains, cfg.skip_bad_images,
                                       'train_img_dir', cfg.facts.domain_names)
    dataset = TrainDataset(paths, labels, cfg.img_size, cfg.randcrop_prob, cfg.skip_bad_images)
    loaders = [_step_loader(dataset,
                            StepBatchSampler(labels, cfg.batch_size, cfg.seed, stream, start_step, pairs,
                                             process_slice(cfg.batch_size, rank=rank, world_size=world_size)),
                            cfg.num_workers, device)
               for stream, pairs in ((STREAM_SOURCE, False), (STREAM_REFERENCE, True))]
    return TrainIterator(*loaders, device, start_step)


# ---------------------------------------------------------------------------
# Validation, evaluation and single images
# ---------------------------------------------------------------------------

def stack_images(paths, img_size):
    """Decoded, resized images as one batch (N, 3, S, S) in [-1, 1] (for small sets of images)."""
    transform = EvalTransform(img_size)
    return torch.stack([transform(read_image(p)) for p in paths])   # (N, 3, S, S)


def load_val_batch(cfg, device):
    """The fixed validation batch for debug images: Munch(x_src, y_src, x_ref, y_ref).

    N = min(cfg.val_batch_size, number of val images) sources and N references,
    chosen by one permutation from step_generator(cfg.seed, 0, STREAM_VAL):
    sources are its first N entries, references the next N (wrapping around
    when there are fewer than 2N images). Its domain folders must be named as
    the training set's (cfg.facts.domain_names).
    """
    paths, labels = _load_checked_tree(cfg.val_img_dir, cfg.num_domains, cfg.skip_bad_images,
                                       'val_img_dir', cfg.facts.domain_names, named_by='--train_img_dir')
    num = min(cfg.val_batch_size, len(paths))
    order = torch.randperm(len(paths), generator=step_generator(cfg.seed, 0, STREAM_VAL))   # (n,)
    picks = {'src': order[:num], 'ref': order[(torch.arange(num) + num) % len(paths)]}      # (N,) each
    batch = Munch()
    for role, ids in picks.items():
        batch['x_' + role] = stack_images([paths[i] for i in ids], cfg.img_size)
        batch['y_' + role] = torch.tensor([labels[i] for i in ids], dtype=torch.long)
    return Munch({k: v.to(device) for k, v in batch.items()})


class EvalDataset(Dataset):
    """Images with the eval transform: dataset[k] -> (x (3, S, S), domain id, path).

    An image that became unreadable stops the run with one message, or under
    skip_bad is replaced by another of its domain, whose path is returned (so
    no output is named after a file that was not used).
    """

    def __init__(self, paths, labels, img_size, skip_bad=False):
        self.paths = list(paths)
        self.labels = list(labels)
        self.transform = EvalTransform(img_size)
        self.skip_bad = skip_bad

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        img, path = read_or_substitute(self.paths, self.labels, index, self.skip_bad)
        return self.transform(img), self.labels[index], path


def folder_dataset(folder, img_size, domain=-1, skip_bad=False):
    """EvalDataset of all images under one folder (recursive), all labelled `domain`."""
    paths = list_images(folder)
    if not paths:
        raise DataError(f'{folder} contains no images '
                        f'(searched recursively for {", ".join(IMG_EXTENSIONS)}).')
    paths = check_images(paths, skip_bad)
    if not paths:
        raise DataError(f'{folder} contains no usable images.')
    return EvalDataset(paths, [domain] * len(paths), img_size, skip_bad)


def domain_tree_dataset(root, img_size, num_domains=None, skip_bad=False):
    """EvalDataset of a `root/<domain>/**/<image>` tree, labelled with domain ids.

    The domain count is checked against num_domains unless it is None.
    """
    paths, labels = _load_checked_tree(root, num_domains, skip_bad)
    return EvalDataset(paths, labels, img_size, skip_bad)


def load_image_tensor(path, img_size):
    """One image file as a (1, 3, S, S) tensor in [-1, 1]; DataError if it cannot be used."""
    if not os.path.isfile(path):
        raise DataError(f'Image file {path} does not exist.')
    try:
        img = load_rgb(path)
    except BadImageError as err:
        raise DataError(f'Cannot use image {path}: {err.reason}.') from err
    return EvalTransform(img_size)(img).unsqueeze(0)   # (1, 3, S, S)
