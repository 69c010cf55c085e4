"""Image grids: the debug images written during training, and the image writer.

File names follow upstream: {step:06d}_cycle_consistency.jpg,
{step:06d}_latent_psi_{0.5,0.7,1.0}.jpg and {step:06d}_reference.jpg.
"""
import io
import os

import torch
import torchvision.utils as vutils

from PIL import Image

from core.fileio import atomic_write_bytes
from core.inference import average_styles, translate_styles, truncate
from core.seeding import STREAM_VAL, step_generator

PSIS = (0.5, 0.7, 1.0)


def denormalize(x):
    """[-1, 1] -> [0, 1], clamped (the generator output is unbounded)."""
    return ((x + 1) / 2).clamp_(0, 1)


def to_uint8(x):
    """(..., 3, H, W) in [-1, 1] -> uint8 with rounding (upstream truncates)."""
    return (denormalize(x.detach().float()) * 255).round_().to(torch.uint8)


def make_grid(x, ncol):
    """Rows of `ncol` images, no padding, values in [0, 1]: (3, H_grid, W_grid)."""
    return vutils.make_grid(denormalize(x.detach().float().cpu()), nrow=ncol, padding=0)


def save_grid(grid, path):
    """Write a [0, 1] grid atomically; the format follows the extension (.jpg/.png)."""
    array = (grid.mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())
    buffer = io.BytesIO()
    fmt = 'JPEG' if path.lower().endswith(('.jpg', '.jpeg')) else 'PNG'
    Image.fromarray(array).save(buffer, format=fmt, **({'quality': 95} if fmt == 'JPEG' else {}))
    atomic_write_bytes(path, buffer.getvalue())


def save_image(x, ncol, path):
    """Save a batch (N, 3, H, W) in [-1, 1] as one grid image with `ncol` columns."""
    save_grid(make_grid(x, ncol), path)


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


def _counted(rows, on_row):
    """Pass rows through, calling on_row() after each one (progress bars)."""
    for row in rows:
        yield row
        if on_row is not None:
            on_row()


@torch.no_grad()
def latent_grid(nets, x_src, z_list, s_avg, psi, num_domains, on_row=None):
    """Row 0: sources; then one row per (domain, z): sources translated with the truncated style.

    on_row, if given, is called after each translated row.
    """
    G, F = nets.generator, nets.mapping_network
    styles = []
    for y in range(num_domains):
        y_trg = torch.full((z_list.size(1),), y, dtype=torch.long, device=x_src.device)
        for z in z_list:   # z: (1, latent_dim), shared by every source of the row
            styles.append(truncate(F(z, y_trg[:1]), s_avg[y:y + 1], psi))
    rows = [x_src] + list(_counted(translate_styles(G, x_src, styles), on_row))
    return make_grid(torch.cat(rows), x_src.size(0))


@torch.no_grad()
def reference_grid(nets, x_src, x_ref, y_ref, on_row=None):
    """Upstream's reference grid: a blank corner and the sources on top, then per reference
    the reference followed by every source translated with its style (on_row as latent_grid)."""
    G, E = nets.generator, nets.style_encoder
    s_ref = E(x_ref, y_ref)   # (R, style_dim)
    blank = torch.ones_like(x_src[:1])
    rows = [torch.cat([blank, x_src])]
    x_fakes = translate_styles(G, x_src, (s_ref[r:r + 1] for r in range(x_ref.size(0))))
    for r, x_fake in enumerate(_counted(x_fakes, on_row)):
        rows.append(torch.cat([x_ref[r:r + 1], x_fake]))
    return make_grid(torch.cat(rows), x_src.size(0) + 1)


@torch.no_grad()
def debug_image(nets_ema, cfg, val, step, device):
    """Write the five upstream debug images for `step`; returns {name: grid} for TensorBoard."""
    gen = step_generator(cfg.seed, 0, STREAM_VAL)   # the same z every time: grids comparable over steps
    num_domains = min(cfg.num_domains, 5)
    z_list = torch.randn(cfg.num_outs_per_domain, 1, cfg.latent_dim, generator=gen).to(device)
    s_avg = average_styles(nets_ema.mapping_network, cfg.latent_dim, generator=gen, device=device)
    grids = {'cycle_consistency': cycle_grid(nets_ema, val.x_src, val.y_src, val.x_ref, val.y_ref)}
    for psi in PSIS:
        grids[f'latent_psi_{psi}'] = latent_grid(nets_ema, val.x_src, z_list, s_avg, psi, num_domains)
    grids['reference'] = reference_grid(nets_ema, val.x_src, val.x_ref, val.y_ref)
    for name, grid in grids.items():
        save_grid(grid, os.path.join(cfg.sample_dir, f'{step:06d}_{name}.jpg'))
    return grids
