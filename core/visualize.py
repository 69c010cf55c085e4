"""Image grids: the debug images written during training, and the image writer.

File names follow upstream: {step:06d}_cycle_consistency.jpg,
{step:06d}_latent_psi_{0.5,0.7,1.0}.jpg and {step:06d}_reference.jpg.

Pixels are written as torchvision's save_image writes them (x * 255 + 0.5,
clamped, then truncated: half up), so an unlabelled grid is byte-identical to
upstream's. With labels (--labels, the default) the grid gets a white margin
on the left (row labels) and on top (column labels, and the grid's title such
as the psi), drawn with PIL's built-in font; the images themselves are the
same pixels.
"""
import io
import os

import numpy as np
import torch

from PIL import Image, ImageDraw, ImageFont

from core.utils.fileio import atomic_write_bytes
from core.inference import average_styles, translate_styles, truncate
from core.utils.seeding import STREAM_VAL, step_generator

PSIS = (0.5, 0.7, 1.0)


def denormalize(x):
    """[-1, 1] -> [0, 1], clamped (the generator output is unbounded)."""
    return ((x + 1) / 2).clamp_(0, 1)


def unit_to_uint8(x):
    """[0, 1] -> uint8 as torchvision.utils.save_image does: x * 255 + 0.5, clamped, truncated (half up)."""
    return x.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def to_uint8(x):
    """(..., 3, H, W) generator output in [-1, 1] -> uint8 exactly as StarGAN v2 writes its PNGs: denormalised
    (clamped), then rounded half up as save_image (video frames, the evaluation's images)."""
    return unit_to_uint8(denormalize(x.detach().float()))


def make_grid(x, ncol):
    """Rows of `ncol` images, no padding, values in [0, 1]: (3, H_grid, W_grid)."""
    import torchvision.utils as vutils   # here, not at import: the metrics read this module, --help must stay light
    return vutils.make_grid(denormalize(x.detach().float().cpu()), nrow=ncol, padding=0)


def save_grid(grid, path):
    """Write a [0, 1] grid atomically; the format follows the extension (.jpg/.png)."""
    array = unit_to_uint8(grid.detach().float().cpu()).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    fmt = 'JPEG' if path.lower().endswith(('.jpg', '.jpeg')) else 'PNG'
    Image.fromarray(array).save(buffer, format=fmt, **({'quality': 95} if fmt == 'JPEG' else {}))
    atomic_write_bytes(path, buffer.getvalue())


def save_image(x, ncol, path):
    """Save a batch (N, 3, H, W) in [-1, 1] as one grid image with `ncol` columns."""
    save_grid(make_grid(x, ncol), path)


# ----------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------

LABEL_PAD = 3       # pixels around a label
LABEL_INK = (0, 0, 0)
LABEL_ALIGN = 16    # margins are multiples of JPEG's 16-pixel blocks, so the images compress as unlabelled


def _align(pixels):
    """pixels rounded up to a multiple of LABEL_ALIGN."""
    return -(-pixels // LABEL_ALIGN) * LABEL_ALIGN


def _fit(draw, font, text, width):
    """text, shortened with '..' until it fits in `width` pixels."""
    while text and draw.textlength(text, font=font) > width:
        text = text[:-3] + '..' if len(text) > 3 else text[:-1]
    return text


def label_grid(grid, cell, row_labels=(), col_labels=(), corner=''):
    """A [0, 1] grid (3, H, W) of `cell`-pixel tiles with labels in white margins: (3, H + top, W + left).

    row_labels name the tile rows (drawn left of them, vertically centred),
    col_labels the tile columns (drawn above them), corner goes top left
    (e.g. the grid's title). Empty labels draw nothing.
    """
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new('RGB', (1, 1)))
    line = probe.textbbox((0, 0), 'Ag', font=font)[3] + 2 * LABEL_PAD
    left = max([probe.textlength(t, font=font) for t in (*row_labels, corner)] + [0])
    left = _align(int(min(left, 2 * cell)) + 2 * LABEL_PAD)
    # Column names wider than a small tile ('winter' over 32 px) go on two staggered lines, so each
    # has two tiles of room instead of being cut to 'wi..'.
    stagger = any(probe.textlength(t, font=font) > cell - 2 * LABEL_PAD for t in col_labels)
    top = _align((2 if stagger else 1) * line) if (col_labels or corner) else 0
    height, width = grid.shape[1:]
    canvas = Image.new('RGB', (width + left, height + top), (255, 255, 255))
    canvas.paste(Image.fromarray(unit_to_uint8(grid.detach().float().cpu()).permute(1, 2, 0).numpy()), (left, top))
    draw = ImageDraw.Draw(canvas)
    if corner:
        draw.text((LABEL_PAD, LABEL_PAD), _fit(draw, font, corner, left + cell - LABEL_PAD), fill=LABEL_INK, font=font)
    ends = [left, left]   # where the last label drawn on each line ends (none left of the tiles)
    for c, text in enumerate(col_labels):
        if text:
            row = c % 2 if stagger else 0
            x = left + c * cell + LABEL_PAD
            # a label that would run off the right edge moves left, up to its neighbour on that line
            room = left + width - LABEL_PAD - ends[row] - LABEL_PAD
            text = _fit(draw, font, text, min((2 if stagger else 1) * cell - 2 * LABEL_PAD, room))
            text_width = int(draw.textlength(text, font=font))
            x = max(ends[row] + LABEL_PAD, min(x, left + width - LABEL_PAD - text_width))
            draw.text((x, LABEL_PAD + row * line), text, fill=LABEL_INK, font=font)
            ends[row] = x + text_width + LABEL_PAD
    for r, text in enumerate(row_labels):
        if text:
            y = top + r * cell + (cell - line) // 2 + LABEL_PAD
            draw.text((LABEL_PAD, y), _fit(draw, font, text, left - 2 * LABEL_PAD), fill=LABEL_INK, font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float() / 255


def latent_labels(src_names, domain_names, num_z, psi):
    """(row labels, column labels, corner) of a latent grid: the sources' domains on top, one row per (domain, z)."""
    rows = ['input'] + [f'{name} z{k}' for name in domain_names for k in range(num_z)]
    return rows, list(src_names), f'psi {psi}'


def reference_labels(src_names, ref_names):
    """(row labels, column labels, corner) of a reference grid: the references' domains down the side."""
    return ['input'] + [f'ref: {name}' for name in ref_names], [''] + list(src_names), 'reference'


# ----------------------------------------------------------------------------------------------
# Grids
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def cycle_grid(nets, x_src, y_src, x_ref, y_ref):
    """4 rows: sources, references, G(x_src, E(x_ref)), and its reconstruction G(., E(x_src))."""
    G, E = nets.generator, nets.style_encoder
    x_fake = G(x_src, E(x_ref, y_ref))
    x_rec = G(x_fake, E(x_src, y_src))
    return make_grid(torch.cat([x_src, x_ref, x_fake, x_rec]), x_src.size(0))


def latent_grid(x_src, x_fakes):
    """Row 0: the sources (N, 3, H, W); then one row per translated batch of x_fakes (each (N, 3, H, W))."""
    return make_grid(torch.cat([x_src] + list(x_fakes)), x_src.size(0))


def reference_grid(x_src, x_ref, x_fakes):
    """Upstream's reference grid: a blank corner and the sources on top, then per reference
    x_ref[r] the reference followed by x_fakes[r], every source translated with its style."""
    blank = torch.ones_like(x_src[:1])
    rows = [torch.cat([blank, x_src])] + [torch.cat([x_ref[r:r + 1], x_fake]) for r, x_fake in enumerate(x_fakes)]
    return make_grid(torch.cat(rows), x_src.size(0) + 1)


@torch.no_grad()
def debug_latent_fakes(nets, x_src, z_list, s_avg, psi, num_domains):
    """Training's latent rows: x_src translated with F(z, y) truncated by psi, per domain, per z."""
    G, F = nets.generator, nets.mapping_network
    styles = []
    for y in range(num_domains):
        y_trg = torch.full((1,), y, dtype=torch.long, device=x_src.device)
        for z in z_list:   # z: (1, latent_dim), shared by every source of the row
            styles.append(truncate(F(z, y_trg), s_avg[y:y + 1], psi))
    return list(translate_styles(G, x_src, styles))


@torch.no_grad()
def debug_reference_fakes(nets, x_src, x_ref, y_ref):
    """Training's reference rows: x_src translated with the style of every reference."""
    s_ref = nets.style_encoder(x_ref, y_ref)   # (R, style_dim)
    return list(translate_styles(nets.generator, x_src, (s_ref[r:r + 1] for r in range(x_ref.size(0)))))


def domain_names(cfg, ys):
    """Names of the domain ids ys (a tensor or list), 'domain<y>' when the config stores none."""
    names = cfg.facts.domain_names or [f'domain{y}' for y in range(cfg.num_domains)]
    return [names[y] for y in (ys.tolist() if torch.is_tensor(ys) else ys)]


def debug_labels(grids, cfg, val, num_domains):
    """The debug grids with their labels (see label_grid)."""
    cell = val.x_src.size(-1)
    src, ref = domain_names(cfg, val.y_src), domain_names(cfg, val.y_ref)
    out = {'cycle_consistency': label_grid(grids['cycle_consistency'], cell,
                                           ['input', 'reference', 'output', 'cycle'], src, 'cycle')}
    for psi in PSIS:
        key = f'latent_psi_{psi}'
        out[key] = label_grid(grids[key], cell, *latent_labels(src, domain_names(cfg, range(num_domains)),
                                                               cfg.num_outs_per_domain, psi))
    out['reference'] = label_grid(grids['reference'], cell, *reference_labels(src, ref))
    return out


@torch.no_grad()
def debug_image(nets_ema, cfg, val, step, device):
    """Write the five upstream debug images for `step`; returns {name: grid} for TensorBoard."""
    gen = step_generator(cfg.seed, 0, STREAM_VAL)   # the same z every time: grids comparable over steps
    num_domains = min(cfg.num_domains, 5)
    z_list = torch.randn(cfg.num_outs_per_domain, 1, cfg.latent_dim, generator=gen).to(device)
    s_avg = average_styles(nets_ema.mapping_network, cfg.latent_dim, generator=gen, device=device)
    grids = {'cycle_consistency': cycle_grid(nets_ema, val.x_src, val.y_src, val.x_ref, val.y_ref)}
    for psi in PSIS:
        x_fakes = debug_latent_fakes(nets_ema, val.x_src, z_list, s_avg, psi, num_domains)
        grids[f'latent_psi_{psi}'] = latent_grid(val.x_src, x_fakes)
    grids['reference'] = reference_grid(val.x_src, val.x_ref,
                                        debug_reference_fakes(nets_ema, val.x_src, val.x_ref, val.y_ref))
    if cfg.get('labels', True):
        grids = debug_labels(grids, cfg, val, num_domains)
    for name, grid in grids.items():
        save_grid(grid, os.path.join(cfg.sample_dir, f'{step:06d}_{name}.jpg'))
    return grids
