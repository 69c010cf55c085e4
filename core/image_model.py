"""The image rules every model family's Python API follows (core.translator's docstring lists them):
ImageModel (images in and out, batches of one size in one forward pass, the lock, what was loaded) and
the errors a model object raises. StarGAN v2's Translator (core/translator.py) and the CUT family's
OneSidedTranslator (core/cut/translator.py) build on it; it knows neither.
"""
import os
import threading

import numpy as np
import torch
import torch.nn.functional as F_nn
from PIL import Image

from core.data.images import BadImageError, DataError, load_rgb, to_rgb
from core.data.loader import pil_to_tensor
from core.utils.errors import UserError
from core.visualize import to_uint8


class DomainError(UserError):
    """A domain name or id that the model does not have."""


class FamilyError(UserError):
    """Keywords of one model family given for a model of another (e.g. arch= for a CUT generator)."""


class StyleError(UserError):
    """A style argument of the wrong shape, or too many styles for a video."""


class ImageModel:
    """What every family's model object shares: the images in and out (module docstring), batches of
    one size in one forward pass, the lock, and what was loaded (path, step, device).

    A family's class sets `family`, img_size, size_multiple and _fit (one PIL image at the
    training size), and runs its forward passes through _translate_groups."""

    family = None

    def __init__(self, path, step, device, keep_size):
        self._path, self._step, self._device = path, step, device
        self.keep_size = keep_size
        self._lock = threading.RLock()

    @property
    def step(self):
        """Training step of the weights (None when the file name carries none)."""
        return self._step

    @property
    def path(self):
        """The checkpoint file the weights came from."""
        return self._path

    @property
    def device(self):
        return self._device

    @property
    def img_size(self):
        """The training size: inputs without keep_size are resized to it."""
        raise NotImplementedError

    @property
    def size_multiple(self):
        """Sides a keep_size input is rounded to: the generator's total down-sampling factor."""
        raise NotImplementedError

    def _fit(self, img):
        """One 8-bit RGB PIL image -> (3, H, W) in [-1, 1] as the family resizes its test images
        (img_size x img_size, but for CUT's other --preprocess values)."""
        raise NotImplementedError

    @torch.no_grad()
    def _translate_groups(self, image, as_tensor, run):
        """run(x) gives a list of (n, 3, H, W) outputs of the batch x, one per variant (a style); returns one
        output per variant, shaped like the input, each input size group run in one forward pass."""
        groups, count, single = self._prepare(image, self.keep_size)
        if len(groups) == 1:   # one size: the outputs are the forward pass's batches
            return [self._output(x_fake, single, as_tensor) for x_fake in run(groups[0][1])]
        per_variant = None
        for ids, x in groups:
            outs = run(x)
            per_variant = per_variant or [[None] * count for _ in outs]
            for k, x_fake in enumerate(outs):
                for i, j in enumerate(ids):
                    per_variant[k][j] = x_fake[i]   # (3, H, W)
        return [self._output(outs, single, as_tensor) for outs in per_variant]

    # ------------------------------------------------------------------------------------------
    # Images in and out
    # ------------------------------------------------------------------------------------------

    def generator_size(self, height, width):
        """(H, W) a keep_size input of that size runs at: each side rounded to the nearest multiple
        of size_multiple, at least twice it (the bottleneck needs 2 x 2 pixels for its norms)."""
        m = self.size_multiple
        return tuple(max(2 * m, int(side / m + 0.5) * m) for side in (height, width))

    def _prepare(self, image, keep_size):
        """([(input ids, x (n, 3, H, W) on the device)] one entry per size, input count, single input?)."""
        if torch.is_tensor(image) and image.dim() == 4:
            return [(list(range(image.size(0))), self._tensor_batch(image, keep_size))], image.size(0), False
        single = not isinstance(image, (list, tuple))
        items = [image] if single else list(image)
        if not items:
            raise DataError('no images given')
        xs = [self._one_image(item, keep_size) for item in items]   # (3, H, W) each
        sizes = {}
        for i, x in enumerate(xs):
            sizes.setdefault(tuple(x.shape[-2:]), []).append(i)
        groups = [(ids, torch.stack([xs[i] for i in ids]).to(self.device)) for ids in sizes.values()]
        return groups, len(items), single

    def _target_size(self, height, width, keep_size):
        return self.generator_size(height, width) if keep_size else (self.img_size, self.img_size)

    def _one_image(self, image, keep_size):
        """One input as (3, H, W) in [-1, 1] at the size it runs at."""
        if torch.is_tensor(image):
            if image.dim() != 3:
                raise DataError(f'an image tensor is (3, H, W) or (N, 3, H, W); got shape {tuple(image.shape)}')
            return self._tensor_batch(image.unsqueeze(0), keep_size)[0]
        img = self._pil_image(image)
        if not keep_size:
            return self._fit(img)
        height, width = self.generator_size(img.height, img.width)
        img = img if img.size == (width, height) else img.resize((width, height), Image.Resampling.BILINEAR)
        return pil_to_tensor(img)

    @staticmethod
    def _pil_image(image):
        """An 8-bit RGB PIL image of a path, a PIL image or an HxWx3 uint8 array."""
        if isinstance(image, (str, os.PathLike)):
            try:
                return load_rgb(os.fspath(image))
            except BadImageError as err:
                raise DataError(f'cannot use image {err.path}: {err.reason}') from None
        if isinstance(image, Image.Image):
            return to_rgb(image)
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise DataError(f'an image array is H x W x 3 uint8; got {image.dtype} of shape {image.shape}')
            return Image.fromarray(image)
        raise TypeError(f'an image is a path, a PIL image, an HxWx3 uint8 array or a tensor; '
                        f'got {type(image).__name__}')

    def _tensor_batch(self, x, keep_size):
        """(N, 3, H, W) in [-1, 1] on the device, resized (bilinear, antialiased) to the size it runs at."""
        if x.size(1) != 3 or x.size(0) == 0 or not x.is_floating_point():
            raise DataError(f'an image tensor is float (3, H, W) or (N, 3, H, W) in [-1, 1]; '
                            f'got {x.dtype} of shape {tuple(x.shape)}')
        if not torch.isfinite(x).all():
            raise DataError('the image tensor holds NaN or infinite values')
        x = x.to(self.device, torch.float32)
        size = self._target_size(x.size(2), x.size(3), keep_size)
        if tuple(x.shape[-2:]) != size:
            x = F_nn.interpolate(x, size=size, mode='bilinear', align_corners=False, antialias=True)
        return x

    @staticmethod
    def _output(x_fakes, single, as_tensor):
        """Outputs like the input, from a batch (N, 3, H, W) or a list of (3, H, W): one image, or a
        list (with as_tensor a batch tensor, or a list of tensors when sizes differ)."""
        if as_tensor:
            if single or torch.is_tensor(x_fakes):
                return x_fakes[0] if single else x_fakes
            same = len({tuple(x.shape) for x in x_fakes}) == 1
            return torch.stack(x_fakes) if same else x_fakes
        images = [Image.fromarray(to_uint8(x).permute(1, 2, 0).cpu().numpy()) for x in x_fakes]
        return images[0] if single else images
