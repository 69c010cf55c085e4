"""CUT's unaligned data (CUT data/unaligned_dataset.py): A and B images, each with its own random crop and flip.

Layouts: CUT's dataroot/<phase>A and <phase>B (the test phase falls back to
valA/valB when testA is missing, as released), or a folder of ours whose
<phase>/ (train, val) holds one sub-folder per domain, of which --domains
names A and B. --direction BtoA swaps them. Listing and checking images is
core.data's (recursive, sorted, every file decoded once before training).

Per step, as released but drawn from (seed, step): an epoch is
max(|A|, |B|) // batch_size steps; its A order is a permutation drawn from
(seed, epoch) (A[i mod |A|]), each B image is uniform at random (with
--serial_batches both go in order). In the decay epochs (> --n_epochs)
images are resized straight to crop_size, as the release does. A resumed run
therefore sees exactly the batches of an uninterrupted one.
"""
import os
import random

import torch
from munch import Munch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from core.data.images import DataError, check_images, list_domains, list_images
from core.data.loader import pil_to_tensor, read_or_substitute
from core.utils.distributed import process_slice
from core.utils.seeding import STREAM_REFERENCE, STREAM_SOURCE, step_generator

POWER_BASE = 4   # images are resized to multiples of 4 (the generator halves them twice), as released


# ----------------------------------------------------------------------------------------------
# Folders
# ----------------------------------------------------------------------------------------------

def _cut_layout(root, phase):
    """(dir_A, dir_B) of CUT's layout for `phase`, or None."""
    for name in ([phase, 'val'] if phase == 'test' else [phase]):
        a, b = os.path.join(root, name + 'A'), os.path.join(root, name + 'B')
        if os.path.isdir(a) and os.path.isdir(b):
            return a, b
    return None


def _domain_layout(root, phase, domains):
    """(dir_A, dir_B, names) of a folder of ours: root/<phase>/<domain> (or root/<domain>)."""
    tree = next((os.path.join(root, p) for p in ([phase, 'val'] if phase == 'test' else [phase])
                 if os.path.isdir(os.path.join(root, p))), root)
    found = list_domains(tree, 'dataroot')
    names = tuple(domains.split(',')) if domains else tuple(found)
    if len(names) != 2:
        raise DataError(f'--dataroot {root}: {tree} has the domain folders {", ".join(found)}; name the two '
                        f'used as A and B with --domains A,B (e.g. --domains {",".join(found[:2])})')
    missing = [n for n in names if n not in found]
    if missing:
        raise DataError(f'--domains: {tree} has no folder {", ".join(missing)} (it has {", ".join(found)})')
    return os.path.join(tree, names[0]), os.path.join(tree, names[1]), names


def domain_folders(cfg, phase):
    """(dir_A, dir_B, (name_A, name_B)) of `phase` after --direction; DataError naming --dataroot if absent."""
    root = cfg.dataroot
    if not root or not os.path.isdir(root):
        raise DataError(f'--dataroot {root!r} is not a folder; expected {phase}A and {phase}B inside '
                        f'(or {phase}/<domain>)')
    cut = _cut_layout(root, phase)
    if cut is not None:
        a, b = cut
        names = (os.path.basename(a), os.path.basename(b))
    else:
        a, b, names = _domain_layout(root, phase, cfg.domains)
    if cfg.direction == 'BtoA':
        return b, a, names[::-1]
    return a, b, names


def domain_images(cfg, folder, skip_bad):
    """The usable images of one domain folder, sorted, at most --max_dataset_size."""
    paths = list_images(folder)
    if not paths:
        raise DataError(f'{folder} contains no images; --dataroot needs images in both domains')
    return check_images(paths[:cfg.max_dataset_size], skip_bad)


# ----------------------------------------------------------------------------------------------
# Transforms
# ----------------------------------------------------------------------------------------------

def _power_of_base(img, base=POWER_BASE):
    w, h = (max(base, int(round(side / base) * base)) for side in img.size)
    return img if (w, h) == img.size else img.resize((w, h), Image.Resampling.BICUBIC)


def _scale_width(img, width, crop_size):
    """Width `width`, height keeping the aspect ratio but at least crop_size (as released)."""
    if img.width == width and img.height >= crop_size:
        return img
    height = int(max(width * img.height / img.width, crop_size))
    return img.resize((width, height), Image.Resampling.BICUBIC)


def cut_transform(img, rng, load_size, crop_size, preprocess, flip):
    """CUT's get_transform on one PIL image with the random.Random `rng`: (3, H, W) in [-1, 1]."""
    if 'resize' in preprocess:
        img = img.resize((load_size, load_size), Image.Resampling.BICUBIC)
    elif 'scale_width' in preprocess:
        img = _scale_width(img, load_size, crop_size)
    if 'crop' in preprocess:
        if img.width < crop_size or img.height < crop_size:
            raise DataError(f'an image of {img.width}x{img.height} pixels is smaller than --crop_size {crop_size}; '
                            f'use --preprocess resize_and_crop or a smaller --crop_size')
        top, left = rng.randint(0, img.height - crop_size), rng.randint(0, img.width - crop_size)
        img = img.crop((left, top, left + crop_size, top + crop_size))
    img = _power_of_base(img)
    if flip and rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return pil_to_tensor(img)


def eval_transform(img, crop_size, preprocess):
    """Test-time transform: load_size = crop_size, no flip (CUT test.py); the crop is then a no-op."""
    return cut_transform(img, random.Random(0), crop_size, crop_size, preprocess, flip=False)


# ----------------------------------------------------------------------------------------------
# Training data
# ----------------------------------------------------------------------------------------------

class UnalignedSampler:
    """Endless batch sampler: the items of step s depend only on (seed, s).

    Item = (index_A, index_B, aug_seed_A, aug_seed_B, epoch), epoch 1-based.
    Under several processes each keeps its part of the global batch.
    """

    def __init__(self, num_a, num_b, batch_size, seed, serial, start_step=0, part=slice(None)):
        self.num_a, self.num_b, self.batch_size = num_a, num_b, batch_size
        self.seed, self.serial, self.start_step, self.part = seed, serial, start_step, part
        self.length = max(num_a, num_b)
        self.steps_per_epoch = self.length // batch_size   # drop_last, as released
        self._order = (None, None)

    def order(self, epoch):
        """Positions 0..length-1 of epoch `epoch` (0-based) in visiting order: (length,)."""
        if self.serial:
            return torch.arange(self.length)
        if self._order[0] != epoch:
            self._order = (epoch, torch.randperm(self.length, generator=step_generator(self.seed, epoch, STREAM_SOURCE)))
        return self._order[1]

    def batch(self, step):
        """The items of training step `step`."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        rows = self.order(epoch)[pos * self.batch_size:(pos + 1) * self.batch_size]   # (B,)
        gen = step_generator(self.seed, step, STREAM_REFERENCE)
        index_b = rows % self.num_b if self.serial else torch.randint(self.num_b, (self.batch_size,), generator=gen)
        seeds = torch.randint(0, 2 ** 63 - 1, (self.batch_size, 2), generator=gen)   # (B, 2)
        items = zip((rows % self.num_a).tolist(), index_b.tolist(), seeds.tolist())
        return [(a, b, s[0], s[1], epoch + 1) for a, b, s in items][self.part]

    def __iter__(self):
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


class UnalignedDataset(Dataset):
    """dataset[(index_A, index_B, seed_A, seed_B, epoch)] -> (x_A, x_B), each (3, crop, crop) in [-1, 1]."""

    def __init__(self, paths_a, paths_b, cfg):
        self.paths = (list(paths_a), list(paths_b))
        self.load_size, self.crop_size, self.n_epochs = cfg.load_size, cfg.crop_size, cfg.n_epochs
        self.preprocess, self.flip, self.skip_bad = cfg.preprocess, not cfg.no_flip, cfg.skip_bad_images

    def __len__(self):
        return max(len(p) for p in self.paths)

    def __getitem__(self, item):
        index_a, index_b, seed_a, seed_b, epoch = item
        # The decay epochs see no scale jitter: images resized straight to crop_size (released).
        load = self.crop_size if epoch > self.n_epochs else self.load_size
        out = []
        for paths, index, seed in zip(self.paths, (index_a, index_b), (seed_a, seed_b)):
            img, _ = read_or_substitute(paths, [0] * len(paths), index, self.skip_bad)
            out.append(cut_transform(img, random.Random(seed), load, self.crop_size, self.preprocess, self.flip))
        return tuple(out)


class TrainData:
    """The CUT training batches from one step on: Munch(real_A, real_B) of (b, 3, S, S) on `device`."""

    def __init__(self, cfg, start_step, device, rank=0, world_size=1):
        dir_a, dir_b, self.names = domain_folders(cfg, 'train')
        paths_a, paths_b = (domain_images(cfg, d, cfg.skip_bad_images) for d in (dir_a, dir_b))
        if max(len(paths_a), len(paths_b)) < cfg.batch_size:
            raise DataError(f'--batch_size {cfg.batch_size} is larger than the training set '
                            f'({len(paths_a)} A and {len(paths_b)} B images)')
        self.sampler = UnalignedSampler(len(paths_a), len(paths_b), cfg.batch_size, cfg.seed, cfg.serial_batches,
                                        start_step, process_slice(cfg.batch_size, 1, rank, world_size))
        self.steps_per_epoch = self.sampler.steps_per_epoch
        loader = DataLoader(UnalignedDataset(paths_a, paths_b, cfg), batch_sampler=self.sampler,
                            num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0,
                            pin_memory=torch.device(device).type == 'cuda')
        self._batches = iter(loader)
        self.device = device

    def __next__(self):
        x_a, x_b = next(self._batches)
        return Munch(real_A=x_a.to(self.device, non_blocking=True), real_B=x_b.to(self.device, non_blocking=True))

    def close(self):
        """Stop the worker processes."""
        self._batches = None


def phase_images(cfg, phase='test', limit=None):
    """(x (n, 3, S, S), paths) of the first `limit` A images of `phase` at the test transform."""
    dir_a, _, _ = domain_folders(cfg, phase)
    paths = domain_images(cfg, dir_a, cfg.skip_bad_images)[:limit]
    images = [eval_transform(read_or_substitute(paths, [0] * len(paths), i, cfg.skip_bad_images)[0],
                             cfg.crop_size, cfg.preprocess) for i in range(len(paths))]
    return torch.stack(images), paths
