"""FSeSim / LSeSim (reference-losses.md 6.6): values against float64 loops, invariants, gradient routing."""
import dataclasses
import math

import pytest
import torch

import core.contrastive as contrastive
from core.contrastive.objective import PatchObjective
from core.contrastive.lsesim import (head_nce, keep_mask, kept_count, self_similarity, structure_loss,
                                     window_index)
from conftest import assert_close_scaled, scaled_gap
from plugin_helpers import build_plugin, feature_inputs, image_slice, plugin_config, with_generator

# Self-similarity maps hold cosines or tanh values: their rounding is relative to 1. The head's
# InfoNCE divides by tau = 0.07: its logits reach 1 / tau.
SIM = 1.0
LOGITS = 1 / 0.07


# ----------------------------------------------------------------------------- float64 references

def ref_self_similarity(feat, ids, size, use_norm):
    """Loop over images and queries; keys sliced as the release does: feat[:, :, top:top+p, left:left+p]."""
    feat = feat.detach().double()
    B, C, H, W = feat.shape
    feat = feat - feat.mean(dim=(2, 3), keepdim=True)
    feat = feat / feat.norm(dim=1, keepdim=True) if use_norm else feat / math.sqrt(C)
    out = []
    for b in range(B):
        rows = []
        for pos in ids.tolist():
            r, c = divmod(pos, W)
            query = feat[b, :, r, c]
            if size < H and size < W:
                top, left = min(max(r - size // 2, 0), H - size), min(max(c - size // 2, 0), W - size)
                keys = feat[b, :, top:top + size, left:left + size].reshape(C, -1)
            else:
                keys = feat[b].reshape(C, -1)
            sim = query @ keys
            rows.append(sim if use_norm else torch.tanh(sim / 10))
        out.append(torch.stack(rows))
    return torch.stack(out)


def ref_structure(sim_real, sim_fake, keep, mode, use_norm):
    """Loop over rows: zero below the (floor(N*keep)+1)-th largest of the fake row, then the criterion."""
    sim_real, sim_fake = sim_real.detach().double(), sim_fake.detach().double()
    B, K, N = sim_fake.shape
    floor = int(N * keep)
    out = torch.zeros(B, K, dtype=torch.float64)
    for b in range(B):
        for i in range(K):
            t = sorted(sim_fake[b, i].tolist(), reverse=True)[min(floor, N - 1)]
            m = (sim_fake[b, i] >= t).double()
            real, fake = sim_real[b, i] * m, sim_fake[b, i] * m
            if mode == 'cos':
                d = abs(1 - float(real @ fake / (real.norm() * fake.norm())))
                out[b, i] = d if use_norm else (0.5 * d * d if d < 1 else d - 0.5)
            else:
                s = N / max(floor, 1)
                diff = (s * real - s * fake).abs()
                per = diff if use_norm else torch.where(diff < 1, 0.5 * diff ** 2, diff - 0.5)
                out[b, i] = per.mean()
    return out


# ----------------------------------------------------------------------------- tensor functions

@pytest.mark.parametrize('size', [3, 64])
@pytest.mark.parametrize('use_norm', [False, True])
def test_self_similarity_matches_release_slicing(size, use_norm):
    feat = torch.randn(2, 5, 7, 9, generator=torch.Generator().manual_seed(1))   # non-square map
    ids = torch.tensor([0, 8, 31, 62, 40, 17])
    sim = self_similarity(feat, ids, size, use_norm)
    expected_n = size * size if size < 7 else 63
    assert sim.shape == (2, 6, expected_n) and sim.dtype == torch.float32
    assert_close_scaled(sim, ref_self_similarity(feat, ids, size, use_norm), scale=SIM)


def test_windows_stay_inside_the_map_and_contain_their_query():
    H, W, p = 6, 9, 4
    ids = torch.arange(H * W)
    win = window_index(ids, H, W, p)
    assert win.shape == (H * W, p * p)
    assert (win >= 0).all() and (win < H * W).all()
    rows, cols = win // W, win % W
    for i in range(H * W):
        assert int(ids[i]) in win[i].tolist()
        assert rows[i].max() - rows[i].min() == p - 1 and cols[i].max() - cols[i].min() == p - 1
        assert len(set(win[i].tolist())) == p * p


def test_self_similarity_is_invariant_to_channel_offsets_and_scale():
    g = torch.Generator().manual_seed(2)
    feat = torch.randn(2, 6, 8, 8, generator=g)
    ids = torch.randperm(64, generator=g)[:10]
    offset = torch.randn(1, 6, 1, 1, generator=g) * 5
    for use_norm in (False, True):
        base = self_similarity(feat, ids, 64, use_norm)
        assert_close_scaled(self_similarity(feat + offset, ids, 64, use_norm), base, scale=SIM)
    scaled = self_similarity(7.5 * feat, ids, 64, use_norm=True)
    assert_close_scaled(scaled, self_similarity(feat, ids, 64, use_norm=True), scale=SIM)
    assert scaled_gap(self_similarity(7.5 * feat, ids, 64, False), self_similarity(feat, ids, 64, False)) > 1e-2


@pytest.mark.parametrize('keep', [0.25, 0.1, 1.0])
def test_mask_keeps_the_top_fraction_of_the_fake_map(keep):
    sim = torch.randn(3, 5, 37, generator=torch.Generator().manual_seed(3))
    mask = keep_mask(sim, keep)
    assert (mask.sum(-1) == kept_count(37, keep)).all()          # no ties in random data
    assert kept_count(37, 0.25) == 37 // 4 + 1 and kept_count(37, 1.0) == 37
    smallest_kept = sim.masked_fill(~mask, float('inf')).amin(-1)
    largest_dropped = sim.masked_fill(mask, float('-inf')).amax(-1)
    assert (smallest_kept > largest_dropped).all()
    ties = torch.zeros(1, 1, 8)
    assert keep_mask(ties, 0.25).all()                            # ties keep more, as released


@pytest.mark.parametrize('mode', ['cos', 'l1'])
@pytest.mark.parametrize('use_norm', [False, True])
def test_structure_loss_matches_hand_loop(mode, use_norm):
    g = torch.Generator().manual_seed(4)
    sim_real, sim_fake = torch.randn(2, 4, 20, generator=g).tanh(), torch.randn(2, 4, 20, generator=g).tanh()
    rows = structure_loss(sim_real, sim_fake, 0.25, mode, use_norm)
    assert rows.shape == (2, 4)
    assert_close_scaled(rows, ref_structure(sim_real, sim_fake, 0.25, mode, use_norm), scale=SIM)
    assert_close_scaled(structure_loss(sim_fake, sim_fake, 0.25, mode, use_norm), 0.0, scale=SIM)
    if mode == 'cos':
        assert (rows >= 0).all() and (rows <= 2).all()


def test_head_nce_of_identical_maps_is_log_3k():
    K = 12
    maps = torch.randn(1, 1, 30).expand(2, K, 30)
    assert_close_scaled(head_nce(maps, maps, maps, 0.07), math.log(3 * K), scale=LOGITS)


def test_head_nce_matches_cross_entropy_of_the_release_logits():
    g = torch.Generator().manual_seed(5)
    src, tgt, oth = (torch.randn(2, 6, 10, generator=g) for _ in range(3))
    n = [v.double() / v.double().norm(dim=-1, keepdim=True) for v in (src, tgt, oth)]
    logits = torch.cat([n[0] @ n[1].mT, n[0] @ n[2].mT, n[1] @ n[2].mT], dim=-1) / 0.07   # (B, K, 3K)
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.arange(6).repeat(2),
                                                 reduction='none').view(2, 6)
    assert_close_scaled(head_nce(src, tgt, oth, 0.07), expected, scale=LOGITS)


# ----------------------------------------------------------------------------- plug-ins

@pytest.mark.parametrize('name', ['fsesim', 'lsesim'])
def test_identical_features_give_zero(name):
    loss = build_plugin(name)(feature_inputs(same=True))[0]
    assert_close_scaled(loss, 0.0, scale=SIM)


@pytest.mark.parametrize('extra', [[], ['--sesim_use_norm', '--sesim_loss', 'l1'], ['--sesim_patch_size', '3']])
def test_fsesim_plugin_averages_layers_of_the_reference(extra):
    loss_fn = build_plugin('fsesim', *extra)
    inp = feature_inputs()
    loss, stats = loss_fn(inp)
    # The sampler draws layer after layer from one generator: replay it.
    replay = torch.Generator().manual_seed(100)
    ids = [torch.randperm(f.shape[2] * f.shape[3], generator=replay)[:16] for f in inp.feat_k]
    per_layer = [ref_structure(ref_self_similarity(fk, idx, loss_fn.patch_size, loss_fn.use_norm),
                               ref_self_similarity(fq, idx, loss_fn.patch_size, loss_fn.use_norm),
                               0.25, loss_fn.mode, loss_fn.use_norm).mean()
                 for fq, fk, idx in zip(inp.feat_q, inp.feat_k, ids)]
    assert stats == {}
    assert_close_scaled(loss, sum(per_layer) / 2, scale=SIM)


@pytest.mark.parametrize('name', ['fsesim', 'lsesim'])
@pytest.mark.parametrize('B', [1, 3])
def test_gradient_reaches_the_fake_side(name, B):
    # The key (real) side arrives detached: the objective owns that (test_contrastive.py).
    inp = feature_inputs(B=B)
    loss = build_plugin(name)(inp)[0]
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in inp.feat_q)


def swap_sides(inp):
    """The inputs with query and key exchanged (features, patches, images), sampling replayed."""
    return dataclasses.replace(inp, feat_q=inp.feat_k, feat_k=inp.feat_q, patch_q=inp.patch_k, patch_k=inp.patch_q,
                               x_q=inp.x_k, x_k=inp.x_q, generator=torch.Generator().manual_seed(100))


@pytest.mark.parametrize('name', ['fsesim', 'lsesim'])
def test_query_side_real_still_masks_by_the_fake_map(name):
    """With --query_side real the query is the real image and the key the fake one; the mask is still
    taken from the fake image's maps. Without the mask the loss would be symmetric in the two images."""
    inp = feature_inputs()
    fake_query = build_plugin(name)(inp)[0]
    real_query = build_plugin(name, '--query_side', 'real', '--cyc_mode', 'identity')
    # The same real and fake images in the other roles: the same computation, bit for bit.
    assert torch.equal(real_query(swap_sides(inp))[0], fake_query)
    # The same query and key in the other roles: the mask comes from the other image.
    assert scaled_gap(real_query(with_generator(inp, 100))[0], fake_query, scale=SIM) > 1e-3


def test_fsesim_rows_of_one_image_do_not_depend_on_the_others():
    loss_fn = build_plugin('fsesim')
    inp = feature_inputs(B=3)
    together, _ = loss_fn(inp)
    alone = [loss_fn(with_generator(image_slice(inp, b), 100))[0] for b in range(3)]
    assert_close_scaled(together, torch.stack(alone).mean(), scale=SIM)


def test_lsesim_head_learns_only_from_its_own_infonce():
    loss_fn = build_plugin('lsesim')
    heads = list(loss_fn.heads.parameters())
    inp = feature_inputs()
    loss, stats, aux = loss_fn(inp)
    structure, maps_real, maps_fake, ids = loss_fn.structure(with_generator(inp, 100))
    head_nce = loss_fn.head_loss(maps_real, maps_fake, ids)
    assert torch.equal(loss, structure) and torch.equal(aux, head_nce)
    assert torch.equal(stats['head_nce'], head_nce.detach())
    # The auxiliary loss reaches the heads only; the structure loss reaches the features through the
    # frozen heads but never the heads themselves.
    assert all(g.abs().sum() > 0 for g in torch.autograd.grad(aux, heads, retain_graph=True))
    assert all(g is None for g in torch.autograd.grad(aux, inp.feat_q, allow_unused=True))
    assert all(g is None for g in torch.autograd.grad(loss, heads, allow_unused=True))


@pytest.mark.parametrize('weight', [1.0, 4.0, 10.0])
def test_lsesim_gradients_equal_those_of_the_former_zero_valued_trick(weight):
    """W * loss + aux gives the gradients of the former W * (loss + (nce - nce.detach()) / W)."""
    loss_fn = build_plugin('lsesim', weight=weight)
    inp = feature_inputs()
    params = list(loss_fn.heads.parameters()) + list(inp.feat_q)
    loss, _, aux = loss_fn(inp)
    now = torch.autograd.grad(weight * loss + aux, params)
    structure, maps_real, maps_fake, ids = loss_fn.structure(with_generator(inp, 100))
    nce = loss_fn.head_loss(maps_real, maps_fake, ids)
    before = torch.autograd.grad(weight * (structure + (1.0 / weight) * (nce - nce.detach())), params)
    # Bitwise when 1/W is exact in binary; otherwise W * (1/W) rounds in the last bit.
    same = torch.equal if weight in (1.0, 4.0) else (lambda a, b: torch.allclose(a, b, rtol=1e-6, atol=0))
    assert all(same(a, b) for a, b in zip(now, before))


def test_the_objective_adds_the_head_loss_without_the_weight():
    """Head gradients do not depend on --patch_loss lsesim=W; feature gradients scale with W."""
    grads = {}
    for weight in (1.0, 4.0):
        cfg = plugin_config('lsesim', weight=weight)
        torch.manual_seed(0)
        objective = PatchObjective(cfg.patch_losses, cfg, [4, 6])
        inp = feature_inputs()
        total, _ = objective(inp.feat_q, inp.feat_k, inp.x_q, inp.x_k, 0, torch.Generator().manual_seed(1))
        heads = list(objective.losses['lsesim'].heads.parameters())
        grads[weight] = torch.autograd.grad(total, heads + list(inp.feat_q))
    n_heads = len(heads)
    assert all(torch.equal(a, b) for a, b in zip(grads[1.0][:n_heads], grads[4.0][:n_heads]))
    for a, b in zip(grads[1.0][n_heads:], grads[4.0][n_heads:]):
        assert_close_scaled(4 * a, b)


def test_lsesim_heads_are_checkpointed_fsesim_has_no_parameters():
    lsesim, fsesim = build_plugin('lsesim', channels=(256, 8)), build_plugin('fsesim')
    assert [h[0].out_channels for h in lsesim.heads] == [64, 32]   # max(32, C/4)
    assert all(key.startswith('heads.') for key in lsesim.state_dict())
    assert not list(fsesim.parameters()) and not fsesim.state_dict()
    assert abs(float(lsesim.heads[0][0].weight.detach().std()) - 0.02) < 0.005


def test_validation_names_the_flags():
    cls = contrastive.get('lsesim')
    good = plugin_config('lsesim')
    assert cls.validate(good) == []
    for field, value, flag in (('sesim_keep', 0.0, '--sesim_keep'), ('sesim_keep', 1.5, '--sesim_keep'),
                               ('sesim_patch_size', 0, '--sesim_patch_size'), ('lsesim_T', 0.0, '--lsesim_T')):
        assert any(flag in e for e in cls.validate(good.replace(**{field: value}))), flag
