"""Helpers shared by the tests of the LSeSim, PatchGCL and PUT plug-ins."""
import dataclasses

import torch

import core.contrastive as contrastive
from conftest import assert_close_scaled, scaled_gap
from core.config import parse_config
from core.contrastive.base import PatchInputs

BASE_FLAGS = ['--mode', 'train', '--img_size', '32', '--n_patch', '16', '--patch_dim', '16']


def plugin_config(name, *extra, weight=1.0):
    """The validated config of a run with the single patch loss `name` (no folders needed)."""
    return parse_config(BASE_FLAGS + ['--patch_loss', f'{name}={weight}', *extra])


def build_plugin(name, *extra, channels=(4, 6), weight=1.0):
    """Plug-in `name` built from command-line flags, on layers with the given channel counts."""
    torch.manual_seed(0)
    return contrastive.get(name).from_config(plugin_config(name, *extra, weight=weight), list(channels))


def feature_inputs(B=2, channels=(4, 6), sizes=((8, 8), (4, 6)), seed=0, same=False, key_grad=False, step=0,
                   patch_dim=16, n_patch=16):
    """PatchInputs with random feature maps (and shared patches) on layers of the given shapes.

    same: query maps equal to the key maps. key_grad: the key side requires
    grad, as the objective may receive it (a plug-in always gets it detached).
    """
    g = torch.Generator().manual_seed(seed)
    feat_k = [torch.randn(B, c, h, w, generator=g) for c, (h, w) in zip(channels, sizes)]
    feat_q = [f.clone() if same else torch.randn(f.shape, generator=g) for f in feat_k]
    patch_k = [_unit(B, min(n_patch, h * w), patch_dim, g) for h, w in sizes]
    patch_q = [p.clone() if same else _unit(*p.shape, g) for p in patch_k]
    return PatchInputs(feat_q=[f.requires_grad_() for f in feat_q], feat_k=[f.requires_grad_(key_grad) for f in feat_k],
                       patch_q=[p.requires_grad_() for p in patch_q],
                       patch_k=[p.requires_grad_(key_grad) for p in patch_k],
                       x_q=torch.rand(B, 3, 32, 32, generator=g) * 2 - 1,
                       x_k=torch.rand(B, 3, 32, 32, generator=g) * 2 - 1, step=step,
                       generator=torch.Generator().manual_seed(seed + 100))


def _unit(*shape_and_gen):
    *shape, g = shape_and_gen
    v = torch.randn(*shape, generator=g)
    return v / v.norm(dim=-1, keepdim=True)


def with_generator(inp, seed):
    """The same inputs with a freshly seeded generator (to replay a plug-in's sampling)."""
    return dataclasses.replace(inp, generator=torch.Generator().manual_seed(seed))


def image_slice(inp, b):
    """The inputs of image b alone (batch of one)."""
    def one(items):
        return None if items is None else [t[b:b + 1].detach().requires_grad_(t.requires_grad) for t in items]
    return PatchInputs(feat_q=one(inp.feat_q), feat_k=one(inp.feat_k), patch_q=one(inp.patch_q),
                       patch_k=one(inp.patch_k), x_q=inp.x_q[b:b + 1], x_k=inp.x_k[b:b + 1], step=inp.step,
                       generator=inp.generator)


def replace_image(inp, b, other):
    """The inputs with image b of every tensor (features, patches, images) taken from `other`."""
    def swap(mine, theirs):
        if mine is None:
            return None
        out = []
        for m, t in zip(mine, theirs):
            m = m.detach().clone()
            m[b] = t[b]
            out.append(m.requires_grad_(t.requires_grad))
        return out
    return dataclasses.replace(inp, feat_q=swap(inp.feat_q, other.feat_q), feat_k=swap(inp.feat_k, other.feat_k),
                               patch_q=swap(inp.patch_q, other.patch_q), patch_k=swap(inp.patch_k, other.patch_k),
                               x_q=swap([inp.x_q], [other.x_q])[0], x_k=swap([inp.x_k], [other.x_k])[0])


def assert_images_are_independent(loss_fn, inp, other, reduce=torch.mean, seed=100, scale=None):
    """The batch loss is reduce(per-image losses), and changing image 0 changes only its own term.

    Patch positions are replayed from `seed`, so every call sees the same ones.
    A plug-in that mixes the images of a batch fails the first check (or the
    last); one whose value ignores its input, e.g. a constant, fails the second.
    scale: that of the loss's rounding (conftest.scaled_gap), e.g. 1 / tau for logits; the change
    of image 0 must move its loss by 1e-3 of the loss itself.
    """
    def value(x):
        return loss_fn(with_generator(x, seed))[0].detach()

    alone = torch.stack([value(image_slice(inp, b)) for b in range(inp.x_q.shape[0])])
    assert_close_scaled(value(inp), reduce(alone), scale=scale)
    changed = replace_image(inp, 0, other)
    changed_0 = value(image_slice(changed, 0))
    assert scaled_gap(changed_0, alone[0]) > 1e-3, 'the loss of image 0 does not depend on image 0'
    expected = reduce(torch.cat([changed_0[None], alone[1:]]))
    assert_close_scaled(value(changed), expected, scale=scale)
