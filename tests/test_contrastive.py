"""Unit tests of the patch-wise relation losses (reference-losses.md 2.7, 3.7, 4.7, 5.7).

Every value is checked against an independent float64 computation written
with plain loops over images and anchors, never against the function itself.
"""
import math
import types

import pytest
import torch
import torch.nn.functional as F

import core.contrastive as contrastive
from core.contrastive import functional as LF
from core.config import ConfigError, parse_config
from core.contrastive.base import PatchInputs
from core.contrastive.objective import PatchObjective
from core.utils.weights import ENV_VAR
from conftest import assert_close_scaled, scaled_gap
from main import main
from plugin_helpers import assert_images_are_independent, feature_inputs, plugin_config

TAU = 0.07
# The fp32 rounding of a loss built from logits s / tau is that of the logits, which reach 1 / tau.
LOGITS = 1 / TAU
OUR_LOSSES = ['patchnce', 'dce', 'hdce', 'src']


# ----------------------------------------------------------------------------- helpers

def unit(*shape, seed=0, dtype=torch.float32):
    """Random unit rows of the given shape (last dim normalised)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(*shape, generator=g, dtype=torch.float64)
    return (v / v.norm(dim=-1, keepdim=True)).to(dtype)


def orthonormal(n, d, seed=0):
    """(n, d) orthonormal rows, n <= d."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return basis[:n]


def random_rotation(d, seed=0):
    """(d, d) orthogonal matrix."""
    return orthonormal(d, d, seed)


def ref_patch_nce(q, k, tau):
    """Float64 loop: -log softmax of [s_ii, s_ij (j != i)] / tau at index 0."""
    q, k = q.detach().double(), k.detach().double()
    out = torch.zeros(q.shape[:2], dtype=torch.float64)
    for b in range(q.shape[0]):
        for i in range(q.shape[1]):
            pos = math.exp(float(q[b, i] @ k[b, i]) / tau)
            neg = sum(math.exp(float(q[b, i] @ k[b, j]) / tau)
                      for j in range(q.shape[1]) if j != i)
            out[b, i] = -math.log(pos / (pos + neg))
    return out


def ref_dce(q, k, tau, weights=None):
    """Float64 loop: -s_ii/tau + log sum_{j != i} exp(w_ij s_ij / tau)."""
    q, k = q.detach().double(), k.detach().double()
    out = torch.zeros(q.shape[:2], dtype=torch.float64)
    for b in range(q.shape[0]):
        for i in range(q.shape[1]):
            neg = 0.0
            for j in range(q.shape[1]):
                if j != i:
                    w = 1.0 if weights is None else float(weights[b, i, j])
                    neg += math.exp(w * float(q[b, i] @ k[b, j]) / tau)
            out[b, i] = -float(q[b, i] @ k[b, i]) / tau + math.log(neg)
    return out


def ref_release_weights(k, g):
    """Float64 loop: softmax_j(c_ij / g) over j != i divided by its row maximum."""
    k = k.detach().double()
    B, K, _ = k.shape
    out = torch.zeros(B, K, K, dtype=torch.float64)
    for b in range(B):
        for i in range(K):
            others = [j for j in range(K) if j != i]
            e = {j: math.exp(float(k[b, i] @ k[b, j]) / g) for j in others}
            total = sum(e.values())
            top = max(e.values()) / total
            for j in others:
                out[b, i, j] = (e[j] / total) / top
    return out


def ref_hdce_paper(q, k, g, tau):
    """Float64 loop of the paper's self-normalised estimator, N = K-1."""
    q, k = q.detach().double(), k.detach().double()
    B, K, _ = q.shape
    out = torch.zeros(B, K, dtype=torch.float64)
    for b in range(B):
        for i in range(K):
            others = [j for j in range(K) if j != i]
            w = [math.exp(float(k[b, i] @ k[b, j]) / g) for j in others]
            e = [math.exp(float(q[b, i] @ k[b, j]) / tau) for j in others]
            estimate = sum(wj * ej for wj, ej in zip(w, e)) / (sum(w) / len(others))
            out[b, i] = -float(q[b, i] @ k[b, i]) / tau + math.log(estimate)
    return out


def ref_relation_jsd(q, k, column_softmax=False):
    """Float64 naive JSD(P_i || Q_i) per anchor, P from k k^T, Q from q q^T, self term included.

    column_softmax reproduces the released code's softmax over dim 1.
    """
    q, k = q.detach().double(), k.detach().double()
    B, K, _ = q.shape
    out = torch.zeros(B, K, dtype=torch.float64)
    for b in range(B):
        sk, sq = k[b] @ k[b].T, q[b] @ q[b].T
        if column_softmax:
            sk, sq = sk.T, sq.T
        for i in range(K):
            p = [math.exp(float(x)) for x in sk[i]]
            r = [math.exp(float(x)) for x in sq[i]]
            p = [x / sum(p) for x in p]
            r = [x / sum(r) for x in r]
            m = [(x + y) / 2 for x, y in zip(p, r)]
            out[b, i] = 0.5 * sum(x * math.log(x / z) for x, z in zip(p, m)) \
                + 0.5 * sum(y * math.log(y / z) for y, z in zip(r, m))
    return out


def make_cfg(**overrides):
    cfg = dict(nce_T=TAU, n_patch=16, gamma_start=50.0, gamma_end=1.0, total_iters=100,
               use_curriculum=True, hdce_mode='release', src_reduction='sum', use_hard=True)
    cfg.update(overrides)
    return types.SimpleNamespace(**cfg)


def make_inputs(B=3, Ks=(16, 8), D=32, step=0, seed=0, key_requires_grad=False):
    """PatchInputs with random unit patches on two layers of different K."""
    patch_q = [unit(B, K, D, seed=seed + 10 * l).requires_grad_() for l, K in enumerate(Ks)]
    patch_k = [unit(B, K, D, seed=seed + 10 * l + 1).requires_grad_(key_requires_grad)
               for l, K in enumerate(Ks)]
    feat_q = [torch.randn(B, 4, 8, 8, requires_grad=True) for _ in Ks]
    feat_k = [torch.randn(B, 4, 8, 8) for _ in Ks]
    return PatchInputs(feat_q=feat_q, feat_k=feat_k, patch_q=patch_q, patch_k=patch_k,
                       x_q=torch.rand(B, 3, 16, 16) * 2 - 1, x_k=torch.rand(B, 3, 16, 16) * 2 - 1,
                       step=step)


def build(name, **overrides):
    return contrastive.get(name).from_config(make_cfg(**overrides), feat_channels=[4, 4])


# Every per-anchor function, with its fixed non-tensor arguments, for the generic tests.
ROW_FUNCTIONS = {
    'patch_nce': lambda q, k: LF.patch_nce(q, k, TAU),
    'dce': lambda q, k: LF.dce(q, k, TAU),
    'dce_release_weights': lambda q, k: LF.dce(q, k, TAU, LF.release_hard_weights(k, 2.0)),
    'hdce_paper': lambda q, k: LF.hdce_paper(q, k, 2.0, TAU),
    'relation_jsd': LF.relation_jsd,
}
# The scale of each function's rounding: logits up to 1 / tau, or JSD rows of unit-mass distributions.
ROW_SCALES = {name: 1.0 if name == 'relation_jsd' else LOGITS for name in ROW_FUNCTIONS}


def jsd_scale(q):
    """The scale of a sum of SRC rows: one per anchor of q (B, K, D), each of unit-mass distributions."""
    return q.shape[0] * q.shape[1]


# ----------------------------------------------------------------------------- PatchNCE (2.7)

def test_patch_nce_matches_hand_log_softmax():
    q, k = unit(2, 6, 8, seed=1), unit(2, 6, 8, seed=2)
    loss = LF.patch_nce(q, k, TAU)
    assert loss.shape == (2, 6) and loss.dtype == torch.float32
    assert_close_scaled(loss, ref_patch_nce(q, k, TAU), scale=LOGITS)
    assert (loss >= 0).all()


def test_patch_nce_identical_embeddings_give_log_k():
    K = 10
    v = unit(1, 1, 8).expand(2, K, 8)
    assert_close_scaled(LF.patch_nce(v, v, TAU), math.log(K), scale=LOGITS)


def test_patch_nce_orthonormal_is_nearly_zero():
    K = 16
    v = orthonormal(K, 32).float().unsqueeze(0)                     # (1, K, 32)
    expected = math.log1p((K - 1) * math.exp(-1 / TAU))
    loss = LF.patch_nce(v, v, TAU)
    # The fp32 loss (about 1e-5) is a difference of two numbers near 1/tau = 14.3: a few units in
    # the last place of 14.3 (1e-6 each), not a fraction of the loss, is what it may be off by.
    assert_close_scaled(loss, expected, rel=3e-7, scale=LOGITS)
    assert loss.max() < 2e-5


# ----------------------------------------------------------------------------- DCE (3.7)

def test_dce_matches_hand_loop():
    q, k = unit(2, 6, 8, seed=3), unit(2, 6, 8, seed=4)
    assert_close_scaled(LF.dce(q, k, TAU), ref_dce(q, k, TAU), scale=LOGITS)


def test_softplus_of_dce_is_infonce_and_dce_is_smaller():
    q, k = unit(3, 12, 16, seed=5), unit(3, 12, 16, seed=6)
    dce, nce = LF.dce(q, k, TAU), LF.patch_nce(q, k, TAU)
    assert_close_scaled(F.softplus(dce), nce, scale=LOGITS)
    assert (dce < nce).all()


def test_dce_bounds_and_can_be_negative():
    K = 32
    q = unit(4, K, 16, seed=7)
    dce = LF.dce(q, q, TAU)                                        # strong positives
    low, high = math.log(K - 1) - 2 / TAU, math.log(K - 1) + 2 / TAU
    assert (dce >= low).all() and (dce <= high).all()
    assert (dce < 0).any()


def test_dce_identical_embeddings_give_log_k_minus_one():
    K = 10
    v = unit(1, 1, 8).expand(3, K, 8)
    assert_close_scaled(LF.dce(v, v, TAU), math.log(K - 1), scale=LOGITS)


def test_infonce_gradient_is_sigmoid_dce_times_dce_gradient():
    q, k = unit(1, 8, 16, seed=8).requires_grad_(), unit(1, 8, 16, seed=9)
    (grad_nce,) = torch.autograd.grad(LF.patch_nce(q, k, TAU)[0, 3], q)
    dce_row = LF.dce(q, k, TAU)[0, 3]
    (grad_dce,) = torch.autograd.grad(dce_row, q)
    assert_close_scaled(grad_nce, torch.sigmoid(dce_row.detach()) * grad_dce)


# ----------------------------------------------------------------------------- hDCE (4.7)

def test_release_weights_match_hand_loop_and_range():
    k = unit(2, 7, 8, seed=10).requires_grad_()
    w = LF.release_hard_weights(k, 1.0)
    assert not w.requires_grad and w.grad_fn is None
    assert_close_scaled(w, ref_release_weights(k.detach(), 1.0))
    off_diagonal = w[:, ~torch.eye(7, dtype=torch.bool)]
    assert (off_diagonal > 0).all() and (off_diagonal <= 1).all()
    assert torch.equal(w.amax(dim=-1), torch.ones(2, 7))
    assert torch.equal(w.diagonal(dim1=1, dim2=2), torch.zeros(2, 7))


def test_release_weights_sharpen_as_g_decreases():
    k = unit(2, 16, 8, seed=11)
    off_diagonal = ~torch.eye(16, dtype=torch.bool)
    smooth = LF.release_hard_weights(k, 50.0)[:, off_diagonal]
    sharp = LF.release_hard_weights(k, 1.0)[:, off_diagonal]
    assert smooth.min() >= math.exp(-2 / 50.0) - 1e-6              # theoretical floor e^{-2/g}
    assert sharp.min() >= math.exp(-2 / 1.0) - 1e-6
    assert sharp.min() < smooth.min()


def test_weighted_dce_matches_hand_loop():
    q, k = unit(2, 6, 8, seed=12), unit(2, 6, 8, seed=13)
    w = LF.release_hard_weights(k, 1.0)
    assert_close_scaled(LF.dce(q, k, TAU, w), ref_dce(q, k, TAU, w), scale=LOGITS)


def test_release_hdce_with_huge_g_is_dce():
    q, k = unit(3, 16, 8, seed=14), unit(3, 16, 8, seed=15)
    hdce = LF.dce(q, k, TAU, LF.release_hard_weights(k, 1e6))
    assert_close_scaled(hdce, LF.dce(q, k, TAU), scale=LOGITS)


def test_all_ones_weights_are_bitwise_dce():
    q, k = unit(3, 16, 8, seed=16), unit(3, 16, 8, seed=17)
    assert torch.equal(LF.dce(q, k, TAU, torch.ones(3, 16, 16)), LF.dce(q, k, TAU))


def test_paper_hdce_matches_hand_loop():
    q, k = unit(2, 6, 8, seed=18), unit(2, 6, 8, seed=19)
    for g in (0.5, 2.0, 50.0):
        assert_close_scaled(LF.hdce_paper(q, k, g, TAU), ref_hdce_paper(q, k, g, TAU), scale=LOGITS)


def test_paper_hdce_with_infinite_g_is_dce():
    q, k = unit(3, 16, 8, seed=20), unit(3, 16, 8, seed=21)
    assert torch.equal(LF.hdce_paper(q, k, math.inf, TAU), LF.dce(q, k, TAU))
    assert_close_scaled(LF.hdce_paper(q, k, 1e8, TAU), LF.dce(q, k, TAU), scale=LOGITS)


def test_paper_hdce_is_non_decreasing_in_gamma_when_q_equals_k():
    q = unit(2, 32, 16, seed=22)
    gammas = [0.0, 0.5, 1.0, 2.0, 5.0]                             # gamma = 1/g of the paper
    losses = [LF.hdce_paper(q, q, math.inf if gm == 0 else 1 / gm, TAU).mean() for gm in gammas]
    assert all(a <= b + 1e-7 * LOGITS for a, b in zip(losses, losses[1:]))   # up to an ulp of the logits
    assert losses[-1] > losses[0] + 0.1


def hdce_paper_fixed_weights(q, k, g, tau):
    """Float64 hDCE (paper) whose weights omega are computed from a copy of k outside the graph."""
    omega_k = k.detach().double()
    log_w = omega_k @ omega_k.mT / g                                # (B, K, K), constant
    sim = q.double() @ k.double().mT                                # (B, K, K), k in the graph
    off = ~torch.eye(k.shape[1], dtype=torch.bool)
    lse = lambda x: x.masked_fill(~off, float('-inf')).logsumexp(-1)  # noqa: E731, over j != i
    n = math.log(k.shape[1] - 1)
    return lse(log_w + sim / tau) - lse(log_w) + n - sim.diagonal(dim1=1, dim2=2) / tau


def test_hdce_weights_send_no_gradient_to_the_key():
    """Handed a key that requires grad, the weight paths add nothing to its gradient."""
    q, k = unit(2, 8, 8, seed=23), unit(2, 8, 8, seed=24).requires_grad_()
    # Paper: the key keeps the gradient of its similarities to the queries, none through omega.
    (grad,) = torch.autograd.grad(LF.hdce_paper(q, k, 1.0, TAU).sum(), k)
    (expected,) = torch.autograd.grad(hdce_paper_fixed_weights(q, k, 1.0, TAU).sum(), k)
    assert_close_scaled(grad, expected)
    # Release: the weights of a key with grad are constants.
    w = LF.release_hard_weights(k, 1.0)
    assert not w.requires_grad
    (grad,) = torch.autograd.grad(LF.dce(q, k, TAU, w).sum(), k)
    (expected,) = torch.autograd.grad(LF.dce(q, k, TAU, LF.release_hard_weights(k.detach(), 1.0)).sum(), k)
    assert torch.equal(grad, expected)


# ----------------------------------------------------------------------------- SRC (5.7)

def test_src_zero_for_identical_inputs():
    q = unit(3, 16, 8, seed=25)
    assert_close_scaled(LF.src_jsd(q, q, 'sum'), 0.0, scale=jsd_scale(q))


def test_src_invariant_to_rotation_of_one_side():
    q = unit(3, 16, 8, seed=26)
    rotated = (q.double() @ random_rotation(8, seed=27)).float()
    assert_close_scaled(LF.src_jsd(rotated, q, 'sum'), 0.0, scale=jsd_scale(q))
    k = unit(3, 16, 8, seed=28)
    assert_close_scaled(LF.src_jsd(rotated, k, 'sum'), LF.src_jsd(q, k, 'sum'), scale=jsd_scale(q))


def test_src_symmetric_and_bounded():
    B, K = 3, 16
    q, k = unit(B, K, 8, seed=29), unit(B, K, 8, seed=30)
    value = LF.src_jsd(q, k, 'sum')
    assert_close_scaled(value, LF.src_jsd(k, q, 'sum'), scale=jsd_scale(q))
    assert 0 < value <= B * K * math.log(2)
    rows = LF.relation_jsd(q, k)
    assert (rows >= -1e-7).all() and (rows <= math.log(2)).all()


def test_src_matches_naive_float64_and_release_column_softmax():
    q, k = unit(2, 6, 8, seed=31), unit(2, 6, 8, seed=32)
    rows = LF.relation_jsd(q, k).double()
    assert_close_scaled(rows, ref_relation_jsd(q, k), scale=1.0)
    total = ref_relation_jsd(q, k, column_softmax=True).sum()
    assert_close_scaled(LF.src_jsd(q, k, 'sum'), total, scale=jsd_scale(q))
    assert_close_scaled(LF.src_jsd(q, k, 'mean'), total / 12, scale=1.0)


def test_src_is_finite_where_the_naive_fp32_form_is_not():
    # Scaled rows make the relation distributions sharp enough to underflow in fp32.
    q = 15 * unit(2, 8, 4, seed=33, dtype=torch.float64)                 # (B, K, D), norm 15
    k = 15 * unit(2, 8, 4, seed=34, dtype=torch.float64)
    p, r = (k @ k.mT).float().softmax(-1), (q @ q.mT).float().softmax(-1)
    m = (p + r) / 2
    naive = 0.5 * (p * (p.log() - m.log())).sum() + 0.5 * (r * (r.log() - m.log())).sum()
    assert torch.isnan(naive)
    stable = LF.src_jsd(q, k, 'sum')
    assert torch.isfinite(stable)
    # Its own scale, not the rows' unit mass: the value is about 1e-4. Logits reach 15 * 15 = 225, whose
    # fp32 rounding moves these sharp rows by 1.5e-4 of the value (measured); a NaN or a lost term fails.
    assert_close_scaled(stable, ref_relation_jsd(q, k).sum(), rel=1e-3)


def test_src_two_patch_example_by_hand():
    # Key patches orthogonal: P_i = softmax([1, 0]); query patches identical: Q_i = [1/2, 1/2].
    k = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    q = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    p = [math.e / (math.e + 1), 1 / (math.e + 1)]
    r = [0.5, 0.5]
    m = [(a + b) / 2 for a, b in zip(p, r)]
    jsd = 0.5 * sum(a * math.log(a / c) for a, c in zip(p, m)) \
        + 0.5 * sum(b * math.log(b / c) for b, c in zip(r, m))
    assert_close_scaled(LF.src_jsd(q, k, 'sum'), 2 * jsd, scale=jsd_scale(q))


def test_src_gradient_reaches_only_the_query():
    q, k = unit(2, 8, 8, seed=35).requires_grad_(), unit(2, 8, 8, seed=36).requires_grad_()
    LF.src_jsd(q, k, 'sum').backward()
    assert k.grad is None
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_src_rejects_unknown_reduction():
    q = unit(1, 4, 4)
    with pytest.raises(ValueError):
        LF.src_jsd(q, q, 'max')


# ----------------------------------------------------------------------------- shared invariants

@pytest.mark.parametrize('name', ROW_FUNCTIONS)
def test_same_permutation_of_patches_permutes_rows(name):
    fn = ROW_FUNCTIONS[name]
    q, k = unit(2, 10, 8, seed=37), unit(2, 10, 8, seed=38)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    assert_close_scaled(fn(q[:, perm], k[:, perm]), fn(q, k)[:, perm], scale=ROW_SCALES[name])


@pytest.mark.parametrize('name', ROW_FUNCTIONS)
@pytest.mark.parametrize('B', [1, 3, 8])
def test_any_batch_size_and_images_are_independent(name, B):
    fn = ROW_FUNCTIONS[name]
    q, k = unit(B, 12, 8, seed=39), unit(B, 12, 8, seed=40)
    rows = fn(q, k)
    assert rows.shape == (B, 12) and torch.isfinite(rows).all()
    alone = torch.cat([fn(q[b:b + 1], k[b:b + 1]) for b in range(B)])
    assert_close_scaled(rows, alone, scale=ROW_SCALES[name])
    q2, k2 = q.clone(), k.clone()
    q2[0], k2[0] = unit(12, 8, seed=41), unit(12, 8, seed=42)   # perturb image 0 only
    perturbed = fn(q2, k2)
    assert torch.equal(perturbed[1:], rows[1:])
    assert scaled_gap(perturbed[0], rows[0], scale=ROW_SCALES[name]) > 1e-3


# The float64 loop of every ROW_FUNCTIONS entry.
ROW_REFERENCES = {
    'patch_nce': lambda q, k: ref_patch_nce(q, k, TAU),
    'dce': lambda q, k: ref_dce(q, k, TAU),
    'dce_release_weights': lambda q, k: ref_dce(q, k, TAU, ref_release_weights(k, 2.0)),
    'hdce_paper': lambda q, k: ref_hdce_paper(q, k, 2.0, TAU),
    'relation_jsd': ref_relation_jsd,
}


@pytest.mark.parametrize('name', sorted(ROW_FUNCTIONS))
def test_low_precision_inputs_are_computed_in_fp32(name):
    q, k = unit(2, 8, 8, seed=43).bfloat16(), unit(2, 8, 8, seed=44).bfloat16()
    low = ROW_FUNCTIONS[name](q, k)
    assert low.dtype == torch.float32
    # Against float64 on the same bf16 values: computed in bf16, logits near 1/tau = 14 would be off
    # by a bf16 step (0.06, 4e-3 of the scale) and JSD rows by 1e-4; fp32 is far inside both.
    assert_close_scaled(low, ROW_REFERENCES[name](q, k), scale=ROW_SCALES[name])


# ----------------------------------------------------------------------------- plug-ins

def test_our_plugins_are_registered():
    assert set(OUR_LOSSES) <= set(contrastive.registered())


# Every plug-in of this file once, and hDCE in both of its modes (the only flag here that changes the code path).
PLUGIN_CASES = {'patchnce': {}, 'dce': {}, 'hdce-release': {'hdce_mode': 'release'},
                'hdce-paper': {'hdce_mode': 'paper'}, 'src': {}}


@pytest.mark.parametrize('case', PLUGIN_CASES)
def test_plugin_contract(case):
    loss_fn = build(case.split('-')[0], **PLUGIN_CASES[case])
    assert loss_fn.uses_patches
    inp = make_inputs()   # key side detached, as the objective hands it over
    loss, stats = loss_fn(inp)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert isinstance(stats, dict) and all(
        isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad for v in stats.values())
    loss.backward()
    assert all(q.grad is not None and q.grad.abs().sum() > 0 for q in inp.patch_q)


@pytest.mark.parametrize('name', contrastive.registered())
def test_the_objective_sends_no_gradient_to_the_key_side(name):
    """The objective is the one owner of the stop-gradient: keys handed over with grad get none."""
    cfg = plugin_config(name)
    torch.manual_seed(0)
    objective = PatchObjective(cfg.patch_losses, cfg, [4, 6])
    inp = feature_inputs(key_grad=True)
    x_q, x_k = inp.x_q.requires_grad_(), inp.x_k.requires_grad_()
    total, _ = objective(inp.feat_q, inp.feat_k, x_q, x_k, 0, torch.Generator().manual_seed(1))
    total.backward()
    assert all(f.grad is None for f in inp.feat_k) and x_k.grad is None
    assert any(f.grad is not None and f.grad.abs().sum() > 0 for f in inp.feat_q)


@pytest.mark.parametrize('B', [1, 3, 8])
@pytest.mark.parametrize('case', PLUGIN_CASES)
def test_plugin_images_are_independent_at_any_batch_size(case, B):
    # Negatives are the other patches of the same image (reference-losses.md 1.5): the batch value is
    # the mean of the per-image values, or their sum for SRC's released 'sum' reduction.
    loss_fn = build(case.split('-')[0], **PLUGIN_CASES[case])
    inp = make_inputs(B=B)
    reduce, scale = (torch.sum, jsd_scale(inp.patch_q[0])) if case == 'src' else (torch.mean, LOGITS)
    assert_images_are_independent(loss_fn, inp, make_inputs(B=B, seed=5), reduce, scale=scale)


def test_plugins_average_layers_of_the_functional_values():
    inp = make_inputs(B=2)
    pairs = list(zip(inp.patch_q, inp.patch_k))
    expected = {
        'patchnce': [ref_patch_nce(q, k, TAU).mean() for q, k in pairs],
        'dce': [ref_dce(q, k, TAU).mean() for q, k in pairs],
        'src': [ref_relation_jsd(q, k).sum() for q, k in pairs],
    }
    scales = {'patchnce': LOGITS, 'dce': LOGITS, 'src': jsd_scale(inp.patch_q[0])}
    for name, per_layer in expected.items():
        loss, stats = build(name)(inp)
        assert_close_scaled(loss, sum(per_layer) / len(per_layer), scale=scales[name])
        assert name not in stats   # the objective logs the loss under the plug-in's name


def test_dce_plugin_logs_infonce_alongside_dce():
    inp = make_inputs(B=2)
    loss, stats = build('dce')(inp)
    nce, _ = build('patchnce')(inp)
    assert_close_scaled(stats['infonce'], nce, scale=LOGITS)
    assert loss.detach() < stats['infonce']


def test_src_plugin_mean_reduction_scales_by_b_times_k():
    inp = make_inputs(B=2, Ks=(16,))
    total, _ = build('src', src_reduction='sum')(inp)
    mean, _ = build('src', src_reduction='mean')(inp)
    assert_close_scaled(total, mean * 2 * 16)


@pytest.mark.parametrize('mode', ['release', 'paper'])
def test_hdce_reports_the_gamma_of_its_curriculum(mode):
    hdce = build('hdce', hdce_mode=mode)
    gammas, losses = [], []
    for step in (0, 50, 100):
        loss, stats = hdce(make_inputs(step=step))
        gammas.append(float(stats['gamma']))
        losses.append(float(loss.detach()))
    assert gammas == pytest.approx([50.0, 25.5, 1.0])
    assert losses[0] != losses[2]
    _, flat = build('hdce', hdce_mode=mode, use_curriculum=False)(make_inputs(step=100))
    assert float(flat['gamma']) == 50.0


def test_hdce_plugin_modes_match_functional():
    inp = make_inputs(B=2, step=100)                                # g = gamma_end = 1
    pairs = list(zip(inp.patch_q, inp.patch_k))
    release = [ref_dce(q, k, TAU, ref_release_weights(k, 1.0)).mean() for q, k in pairs]
    paper = [ref_hdce_paper(q, k, 1.0, TAU).mean() for q, k in pairs]
    for mode, per_layer in (('release', release), ('paper', paper)):
        loss, _ = build('hdce', hdce_mode=mode)(inp)
        assert_close_scaled(loss, sum(per_layer) / len(per_layer), scale=LOGITS)


def test_shared_flags_are_checked_by_the_config_not_by_the_plugins():
    """--nce_T, --gamma_*, --hdce_mode, --src_reduction are declared and checked in core/config.py."""
    bad = make_cfg(nce_T=0, gamma_start=-1, gamma_end=0, hdce_mode='x', src_reduction='max')
    for name in OUR_LOSSES:
        assert contrastive.get(name).validate(bad) == []
    with pytest.raises(ConfigError, match='--nce_T must be > 0'):
        parse_config(['--mode', 'train', '--nce_T', '0'])
    with pytest.raises(ConfigError, match='--gamma_start and --gamma_end'):
        parse_config(['--mode', 'train', '--gamma_end', '0'])


# Flags that break several checks at once, and plug-ins that share flags (fsesim, lsesim) or
# the shared temperature (patchnce, dce, hdce, put).
ERROR_FLAGS = {
    'temperature': (['--nce_T', '0', '--lambda_dce', '1', '--use_hard', '--gamma_end', '0',
                     '--patch_loss', 'patchnce=1', '--patch_loss', 'put=1'],
                    ['--nce_T must be > 0', '--gamma_start and --gamma_end must be > 0']),
    'shared_plugin_flags': (['--patch_loss', 'fsesim=1', '--patch_loss', 'lsesim=1', '--sesim_keep', '0',
                             '--sesim_features', 'vgg16', '--query_side', 'real', '--cyc_mode', 'identity'],
                            ['--sesim_keep must be in', '--sesim_features vgg16 needs --query_side fake']),
    # files are checked once the values are right
    'shared_plugin_files': (['--patch_loss', 'fsesim=1', '--patch_loss', 'lsesim=1', '--sesim_features', 'vgg16'],
                            ['--sesim_features vgg16: missing weight file']),
}


@pytest.mark.parametrize('case', sorted(ERROR_FLAGS))
def test_each_error_is_reported_once(case, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / 'no-weights'))
    flags, messages = ERROR_FLAGS[case]
    assert main(['--mode', 'train', '--img_size', '32', '--eval_every', '0', '--train_img_dir', str(tmp_path),
                 '--val_img_dir', str(tmp_path)] + flags) == 1
    lines = capsys.readouterr().err.removeprefix('error: ').strip().splitlines()
    for message in messages:
        assert sum(message in line for line in lines) == 1, message
    assert len(lines) == len(set(lines)), lines
