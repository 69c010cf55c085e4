"""The two image resizes the FID protocols rely on, for batches of tensors.

pil_bilinear_resize gives Pillow's 8-bit BILINEAR resize bit for bit. StarGAN
v2 resizes every image to 299x299 with Pillow; on a GPU the same arithmetic
(Resample.c: per-axis triangle filter widened by the downscale factor,
coefficients normalised in double precision and rounded to 22-bit fixed
point, int32 accumulation, a horizontal then a vertical pass, each rounded
and clipped to uint8) runs on the device, so generated images never leave it.

tf1_bilinear_resize is TensorFlow 1.x's resize_bilinear (align_corners=False,
no half-pixel centres), the resize in front of the TF-Inception FID network.
"""
import functools
import math

import numpy as np
import torch
from PIL import Image

PRECISION_BITS = 32 - 8 - 2   # Pillow's fixed-point precision for 8-bit images
_SCALE = float(1 << PRECISION_BITS)


def _triangle(x):
    """Pillow's bilinear filter (support 1)."""
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _c_int(x):
    """C's (int) cast: truncation toward zero."""
    return int(math.trunc(x))


@functools.lru_cache(maxsize=32)
def pillow_taps(in_size, out_size):
    """Fixed-point taps of Pillow's bilinear resize along one axis.

    Returns (index, weight), int64 arrays of shape (out_size, K): output pixel
    o is sum_t weight[o, t] * input[index[o, t]] / 2**22, rounded (padding
    taps have weight 0).
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    ss = 1.0 / filterscale   # Pillow multiplies by the reciprocal; keep its rounding
    ksize = math.ceil(support) * 2 + 1
    index = np.zeros((out_size, ksize), dtype=np.int64)
    weight = np.zeros((out_size, ksize), dtype=np.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(_c_int(center - support + 0.5), 0)
        xmax = min(_c_int(center + support + 0.5), in_size) - xmin
        k = [_triangle((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        total = sum(k)
        for x, w in enumerate(k):
            w = w / total if total != 0.0 else w
            # normalize_coeffs_8bpc: round half away from zero, then truncate
            index[xx, x] = xmin + x
            weight[xx, x] = _c_int(w * _SCALE + (0.5 if w >= 0 else -0.5))
    return index, weight


def _pillow_rows_pass(x, out_size):
    """One Pillow pass along the rows (dim -2) of int32 uint8 values, in Pillow's int32 arithmetic.

    (..., in, W) -> (..., out_size, W). Gathering whole rows keeps memory access contiguous.
    """
    index, weight = pillow_taps(x.shape[-2], out_size)
    index = torch.from_numpy(index).to(x.device)
    weight = torch.from_numpy(weight).to(x.device, torch.int32)
    acc = torch.full((), 1 << (PRECISION_BITS - 1), dtype=torch.int32, device=x.device)
    for t in range(index.shape[1]):
        acc = acc + x.index_select(-2, index[:, t]) * weight[:, t, None]   # (..., out_size, W)
    return (acc >> PRECISION_BITS).clamp_(0, 255)


def _pil_per_image(x, size):
    """Pillow itself, image by image on the CPU: (N, C, h, w) uint8 -> (N, C, H, W) uint8."""
    out_h, out_w = size
    arrays = [np.asarray(Image.fromarray(img.permute(1, 2, 0).cpu().numpy()).resize(
        (out_w, out_h), Image.Resampling.BILINEAR)) for img in x]   # (H, W, C) each
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(x.device)


def pillow_resize_on_device(x, size):
    """Pillow's bilinear resize as tensor arithmetic on x's device (same scale factor on both axes).

    (N, C, h, w) uint8 -> (N, C, H, W) uint8, bit-exact with Pillow.
    """
    out_h, out_w = size
    in_h, in_w = x.shape[-2:]
    if in_h * out_w != in_w * out_h:
        raise ValueError('pillow_resize_on_device needs the same scale factor on both axes')
    x_t = x.to(torch.int32).transpose(-1, -2).contiguous()                       # (N, C, w, h)
    y = _pillow_rows_pass(x_t, out_w).transpose(-1, -2).contiguous()            # (N, C, h, W): horizontal first
    return _pillow_rows_pass(y, out_h).to(torch.uint8)                         # (N, C, H, W)


def pil_bilinear_resize(x, size):
    """Pillow Image.resize((W, H), BILINEAR) of a uint8 RGB batch: (N, 3, h, w) -> (N, 3, H, W), bit-exact.

    On a GPU, resizes that scale both axes by the same factor (every
    square-to-square resize of the FID pipeline) stay on the device as exact
    integer arithmetic. On the CPU Pillow itself is faster; Pillow 13 also
    picks the order of its two passes by a rule of its own when the factors
    differ, so those rare resizes are always handed to Pillow.
    """
    if x.dtype != torch.uint8:
        raise TypeError(f'pil_bilinear_resize expects uint8 images, got {x.dtype}')
    in_h, in_w = x.shape[-2:]
    out_h, out_w = size
    if (in_h, in_w) == (out_h, out_w):
        return x.clone()   # Pillow returns an unchanged copy
    if x.device.type == 'cpu' or in_h * out_w != in_w * out_h:
        return _pil_per_image(x, size)
    return pillow_resize_on_device(x, size)


def tf1_bilinear_resize(x, size):
    """TensorFlow 1.x resize_bilinear(align_corners=False): float (N, C, h, w) -> (N, C, H, W).

    Output pixel o samples the input at o * in / out (no half-pixel offset),
    interpolating along x, then along y, as TF does.
    """
    out_h, out_w = size
    in_h, in_w = x.shape[-2:]

    def grid(in_size, out_size):
        pos = torch.arange(out_size, dtype=x.dtype, device=x.device) * torch.tensor(
            in_size / out_size, dtype=torch.float32, device=x.device)
        lo = pos.long()
        hi = (lo + 1).clamp_max(in_size - 1)
        return lo, hi, pos - lo.to(x.dtype)

    y_lo, y_hi, dy = grid(in_h, out_h)
    x_lo, x_hi, dx = grid(in_w, out_w)
    top, bottom = x[..., y_lo, :], x[..., y_hi, :]                        # (N, C, H, w) each
    top = top[..., x_lo] + (top[..., x_hi] - top[..., x_lo]) * dx         # (N, C, H, W)
    bottom = bottom[..., x_lo] + (bottom[..., x_hi] - bottom[..., x_lo]) * dx
    return top + (bottom - top) * dy.view(-1, 1)
