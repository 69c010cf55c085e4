"""PUT negative pruning (reference-losses.md 8.5): per-query top-N, the released column sort, guards."""
import math

import pytest
import torch

import core.contrastive as contrastive
from core.contrastive import functional as LF
from conftest import assert_close_scaled, scaled_gap
from plugin_helpers import assert_images_are_independent, build_plugin, feature_inputs, plugin_config
from test_contrastive import LOGITS, ref_dce, ref_patch_nce, unit

TAU = 0.07


def ref_put(q, k, tau, n, decoupled=False):
    """Float64 loop: for each query keep the n largest s_ij (j != i) as its only negatives."""
    q, k = q.detach().double(), k.detach().double()
    B, K, _ = q.shape
    out = torch.zeros(B, K, dtype=torch.float64)
    for b in range(B):
        for i in range(K):
            pos = float(q[b, i] @ k[b, i])
            negs = sorted((float(q[b, i] @ k[b, j]) for j in range(K) if j != i), reverse=True)[:n]
            terms = [math.exp(s / tau) for s in negs] + ([] if decoupled else [math.exp(pos / tau)])
            out[b, i] = -pos / tau + math.log(sum(terms))
    return out


def ref_put_released(q, k, tau, n):
    """Float64 loop over the released code: sort each column of the (B*K, K) negatives over all rows."""
    q, k = q.detach().double(), k.detach().double()
    B, K, _ = q.shape
    rows = [[(-10.0 if j == i else float(q[b, i] @ k[b, j])) for j in range(K)] for b in range(B) for i in range(K)]
    columns = [sorted((row[j] for row in rows), reverse=True) for j in range(K)]
    ranked = [[columns[j][r] for j in range(min(n, K))] for r in range(B * K)]
    out = []
    for r in range(B * K):
        b, i = divmod(r, K)
        pos = float(q[b, i] @ k[b, i])
        logits = [pos / tau] + [s / tau for s in ranked[r]]
        top = max(logits)
        out.append(-logits[0] + top + math.log(sum(math.exp(x - top) for x in logits)))
    return torch.tensor(out, dtype=torch.float64).view(B, K), ranked


@pytest.mark.parametrize('n', [1, 3, 7])
@pytest.mark.parametrize('decoupled', [False, True])
def test_per_query_top_n_matches_hand_loop(n, decoupled):
    q, k = unit(2, 8, 16, seed=1), unit(2, 8, 16, seed=2)
    rows = LF.put_nce(q, k, TAU, n, decoupled)
    assert rows.shape == (2, 8) and rows.dtype == torch.float32
    assert_close_scaled(rows, ref_put(q, k, TAU, n, decoupled), scale=LOGITS)


def test_all_negatives_kept_is_patchnce_or_dce():
    q, k = unit(3, 10, 16, seed=3), unit(3, 10, 16, seed=4)
    assert_close_scaled(LF.put_nce(q, k, TAU, 9), LF.patch_nce(q, k, TAU), scale=LOGITS)
    assert_close_scaled(LF.put_nce(q, k, TAU, 9, decoupled=True), LF.dce(q, k, TAU), scale=LOGITS)
    assert_close_scaled(LF.put_nce(q, k, TAU, 9), ref_patch_nce(q, k, TAU), scale=LOGITS)
    assert_close_scaled(LF.put_nce(q, k, TAU, 9, True), ref_dce(q, k, TAU), scale=LOGITS)


def test_more_negatives_than_exist_are_clipped():
    q, k = unit(2, 6, 8, seed=5), unit(2, 6, 8, seed=6)
    assert torch.equal(LF.put_nce(q, k, TAU, 100), LF.put_nce(q, k, TAU, 5))


def test_keeping_more_negatives_never_lowers_the_loss():
    q, k = unit(2, 12, 16, seed=7), unit(2, 12, 16, seed=8)
    values = [LF.put_nce(q, k, TAU, n) for n in (1, 3, 6, 11)]
    assert all((a <= b + 1e-7 * LOGITS).all() for a, b in zip(values, values[1:]))   # up to an ulp of the logits
    assert (values[0] > 0).all() and (values[-1] > values[0]).all()


def test_released_variant_reproduces_the_column_sort():
    B, K, n = 2, 6, 4
    q, k = unit(B, K, 8, seed=9), unit(B, K, 8, seed=10)
    rows = LF.put_nce_released(q, k, TAU, n)
    expected, ranked = ref_put_released(q, k, TAU, n)
    assert rows.shape == (B, K)
    assert_close_scaled(rows, expected, scale=LOGITS)
    # Each column holds B entries of -10 (the self pairs): after the sort the last B rows hold only those,
    # so those queries see no real negative and contribute about 0.
    assert all(all(v == -10.0 for v in ranked[r]) for r in range(B * K - B, B * K))
    assert rows.flatten()[-B:].max() < 1e-30
    # It is not the per-query ranking.
    assert scaled_gap(rows, LF.put_nce(q, k, TAU, n), scale=LOGITS) > 1e-2


@pytest.mark.parametrize('variant', ['per_query', 'released_column_sort'])
def test_the_query_side_gets_gradient(variant):
    # The key side arrives detached: the objective owns that (test_contrastive.py).
    inp = feature_inputs()
    loss_fn = build_plugin('put', '--put_variant', variant)
    loss, _ = loss_fn(inp)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in inp.patch_q)


def test_plugin_with_all_negatives_equals_the_patchnce_plugin():
    inp = feature_inputs(B=3)
    put, _ = build_plugin('put', '--put_negatives', '1000')(inp)
    nce, _ = build_plugin('patchnce')(inp)
    assert_close_scaled(put, nce, scale=LOGITS)
    put_dce, _ = build_plugin('put', '--put_negatives', '1000', '--put_loss', 'dce')(inp)
    dce, _ = build_plugin('dce')(inp)
    assert_close_scaled(put_dce, dce, scale=LOGITS)


@pytest.mark.parametrize('B', [1, 3, 8])
def test_any_batch_size_keeps_the_images_independent(B):
    loss_fn = build_plugin('put')
    assert loss_fn.uses_patches and not list(loss_fn.parameters())
    loss, _ = loss_fn(feature_inputs(B=B))
    assert torch.isfinite(loss) and loss > 0
    # Negatives are the other patches of the same image: the batch loss is the mean over images.
    assert_images_are_independent(loss_fn, feature_inputs(B=B), feature_inputs(B=B, seed=1), scale=LOGITS)


def test_validation_guards_zero_negatives_and_names_the_flags():
    cls = contrastive.get('put')
    good = plugin_config('put')
    assert cls.validate(good) == []
    assert any('--put_negatives' in e for e in cls.validate(good.replace(put_negatives=0)))
    assert any('--put_loss' in e for e in cls.validate(good.replace(put_variant='released_column_sort',
                                                                    put_loss='dce')))
