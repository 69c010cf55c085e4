"""Pure tensor functions of the patch-wise relation losses (no modules, no config).

Shared conventions. q and k are (B, K, D) with unit-norm rows: B images and
K patches per image, patch i of q and of k taken at the same position. q is
the query side (receives gradients), k the key side (stop-gradient). The
negatives of anchor i are the other K-1 patches of the SAME image, so images
never interact and any B works. B and K are read from the tensors. Every
function computes in fp32 whatever the input dtype (autocast-safe).
"""
import math

import torch


def _similarity(a, b):
    """Cosine similarities s_ij = a_i . b_j per image: (B, K, D) x (B, K, D) -> (B, K, K)."""
    return torch.bmm(a.float(), b.float().transpose(1, 2))


def _self_mask(sim):
    """Boolean (K, K) identity matching the last two dims of `sim`: True on the pair j = i."""
    return torch.eye(sim.shape[-1], dtype=torch.bool, device=sim.device)


def _positive(sim):
    """The diagonal s_ii of (B, K, K) similarities -> (B, K)."""
    return sim.diagonal(dim1=-2, dim2=-1)


def _negatives_lse(logits):
    """logsumexp_{j != i} of (B, K, K) logits -> (B, K); the self pair is excluded exactly."""
    return logits.masked_fill(_self_mask(logits), float('-inf')).logsumexp(dim=-1)


def patch_nce(q, k, tau):
    """PatchNCE (InfoNCE) per anchor, Park et al. ECCV 2020 (CUT), Eq. 2.

    L_i = -log( e^{s_ii/tau} / (e^{s_ii/tau} + sum_{j != i} e^{s_ij/tau}) ), s_ij = q_i . k_j.
    The logits [s_ii, s_ij (j != i)] are exactly the row i of s, so the
    cross-entropy with the positive at index 0 is -s_ii/tau + logsumexp_j s_ij/tau,
    with K-1 negatives and no self pair counted twice.

    Args: q, k (B, K, D) unit rows; tau > 0 temperature.
    Returns: (B, K) fp32 loss per anchor, >= 0.
    """
    logits = _similarity(q, k) / tau                  # (B, K, K)
    return logits.logsumexp(dim=-1) - _positive(logits)


def dce(q, k, tau, neg_weights=None):
    """Decoupled InfoNCE per anchor, Jung et al. CVPR 2022 Eq. 6-9 (after Yeh et al.).

    L_i = -s_ii/tau + logsumexp_{j != i} (w_ij s_ij / tau): the positive is left
    out of the denominator, so the gradient does not vanish on easy negatives.
    With neg_weights, the raw similarity of each negative is multiplied by w_ij
    before the division by tau, as the released Hneg_SRC code does (this is a
    shrinkage of logits, not importance sampling; see hdce_paper). The positive
    is never weighted. Needs K >= 2.

    Args: q, k (B, K, D) unit rows; tau > 0; neg_weights None or (B, K, K),
        its diagonal ignored.
    Returns: (B, K) fp32 loss per anchor (can be negative).
    """
    sim = _similarity(q, k)                            # (B, K, K)
    neg_sim = sim if neg_weights is None else sim * neg_weights.float()
    return _negatives_lse(neg_sim / tau) - _positive(sim) / tau


def release_hard_weights(k, g):
    """Hard-negative weights of the released Hneg_SRC code (Jung et al. 2022, Sec. 3.3).

    c = k k^T per image with the self pair excluded; w_ij = softmax_j(c_ij / g)
    divided by its row maximum, i.e. exp((c_ij - max_{j' != i} c_ij') / g).
    g is a temperature (g ~ 1/gamma of the paper): large g gives nearly uniform
    weights, small g keeps only the negatives most similar to the anchor.

    Args: k (B, K, D) unit rows (key side); g > 0 temperature (may be inf).
    Returns: (B, K, K) fp32, detached: in (0, 1] off the diagonal (fp32 can
        underflow to 0 only for g << 1), row max exactly 1, 0 on the diagonal.
        Needs K >= 2.
    """
    c = _similarity(k.detach(), k.detach())            # (B, K, K)
    mask = _self_mask(c)
    c = c.masked_fill(mask, float('-inf'))
    row_max = c.amax(dim=-1, keepdim=True)             # (B, K, 1), hardest negative
    # The diagonal may become nan for g = inf (-inf / inf); it is overwritten.
    return torch.exp((c - row_max) / g).masked_fill(mask, 0.0)


def _log_mean_exp_negatives(log_w):
    """ln( (1/N) sum_{j != i} e^{log_w_ij} ) for (B, K, K) -> (B, K), N = K-1.

    ln N is computed by the same logsumexp on zeros, so that uniform weights
    (log_w == 0, i.e. g = inf) cancel bitwise and hdce_paper equals dce exactly.
    """
    return _negatives_lse(log_w) - _negatives_lse(torch.zeros_like(log_w))


def hdce_paper(q, k, g, tau):
    """Hard-negative DCE as in the paper, Jung et al. CVPR 2022 Eq. 4-5.

    Negatives are drawn from the tilted law exp(gamma k_i . k_j) p(k_j), with
    gamma = 1/g, estimated by self-normalised importance sampling over the
    N = K-1 negatives (as Robinson et al. 2021):
      omega_ij = exp(c_ij / g), c = k k^T (key side, detached), j != i,
      L_i = -s_ii/tau + ln N + ln sum_{j != i} omega_ij e^{s_ij/tau} - ln sum_{j != i} omega_ij.
    g = inf gives exactly dce(q, k, tau).

    Args: q, k (B, K, D) unit rows; g > 0 temperature (may be inf); tau > 0.
    Returns: (B, K) fp32 loss per anchor. Needs K >= 2.
    """
    log_w = _similarity(k.detach(), k.detach()) / g    # (B, K, K), log omega
    sim = _similarity(q, k)                            # (B, K, K)
    weighted = _negatives_lse(log_w + sim / tau)       # (B, K)
    return weighted - _log_mean_exp_negatives(log_w) - _positive(sim) / tau


def relation_jsd(q, k):
    """Per-anchor JSD between the key and query relation distributions (SRC, Eq. 1-3).

    P_i = softmax_j(k_i . k_j) (key side, detached) and Q_i = softmax_j(q_i . q_j),
    no temperature, the self term j = i included. Computed in log space, with
    ln M = logaddexp(ln P, ln Q) - ln 2, so that it is finite even when some
    probabilities underflow.

    Args: q, k (B, K, D) unit rows.
    Returns: (B, K) fp32 JSD(P_i || Q_i) in [0, ln 2].
    """
    log_p = _similarity(k.detach(), k.detach()).log_softmax(dim=-1)   # (B, K, K)
    log_q = _similarity(q, q).log_softmax(dim=-1)                     # (B, K, K)
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    kl_p = (log_p.exp() * (log_p - log_m)).sum(dim=-1)                # (B, K)
    kl_q = (log_q.exp() * (log_q - log_m)).sum(dim=-1)                # (B, K)
    return 0.5 * (kl_p + kl_q)


def src_jsd(q, k, reduction='sum'):
    """SRC loss, Jung et al. CVPR 2022 Eq. 1-3: relation_jsd reduced to a scalar.

    reduction 'sum' sums over images and anchors (the released code's scale,
    paired with lambda_src = 0.1); 'mean' averages (about B*K times smaller).

    Args: q, k (B, K, D) unit rows; reduction in {'sum', 'mean'}.
    Returns: fp32 scalar.
    """
    jsd = relation_jsd(q, k)                           # (B, K)
    if reduction == 'sum':
        return jsd.sum()
    if reduction == 'mean':
        return jsd.mean()
    raise ValueError(f'unknown SRC reduction {reduction!r}')


def put_nce(q, k, tau, num_neg, decoupled=False):
    """Negative pruning, PUT (Lin et al. ACM MM 2022): each query keeps only its hardest negatives.

    For anchor i the negatives j != i are ranked by s_ij = q_i . k_j and only
    the n = min(num_neg, K-1) largest are kept:
      InfoNCE: L_i = -s_ii/tau + log( e^{s_ii/tau} + sum_{j in top_n(i)} e^{s_ij/tau} ),
      decoupled (DCE): the positive left out of the denominator.
    n = K-1 gives exactly patch_nce (or dce). Gradient flows through the kept
    similarities only (the ranking itself is not differentiated).

    Args: q, k (B, K, D) unit rows; tau > 0; num_neg >= 1; decoupled bool.
    Returns: (B, K) fp32 loss per anchor. Needs K >= 2.
    """
    sim = _similarity(q, k)                                       # (B, K, K)
    negatives = sim.masked_fill(_self_mask(sim), float('-inf'))
    hardest = negatives.topk(min(num_neg, sim.shape[-1] - 1), dim=-1).values   # (B, K, n)
    positive = _positive(sim)                                     # (B, K)
    if decoupled:
        return (hardest / tau).logsumexp(dim=-1) - positive / tau
    logits = torch.cat([positive[..., None], hardest], dim=-1) / tau          # (B, K, n+1)
    return logits.logsumexp(dim=-1) - positive / tau


def put_nce_released(q, k, tau, num_neg):
    """PUT exactly as its released code computes it (kept only to reproduce published numbers).

    The (B*K, K) matrix of negatives (self pair set to -10, as CUT) is sorted
    along dim 0, i.e. each key patch's column over ALL B*K queries, and its
    first num_neg columns are kept. Row r then pairs query r's positive with
    the r-th largest similarities of num_neg arbitrary key patches, not with
    its own hardest negatives; the last B rows hold only -10 entries, and
    images are mixed when B > 1.

    Args: q, k (B, K, D) unit rows; tau > 0; num_neg >= 1 (at most K columns).
    Returns: (B, K) fp32 loss per row r = b*K + i (rows are not per-query losses).
    """
    batch, num, _ = q.shape
    sim = _similarity(q, k)                                       # (B, K, K)
    positive = _positive(sim).reshape(batch * num, 1)             # (B*K, 1)
    negatives = sim.masked_fill(_self_mask(sim), -10.0).reshape(batch * num, num)   # (B*K, K)
    ranked = negatives.sort(dim=0, descending=True).values[:, :num_neg]     # (B*K, n)
    logits = torch.cat([positive, ranked], dim=1) / tau           # (B*K, n+1)
    return (logits.logsumexp(dim=1) - logits[:, 0]).reshape(batch, num)   # (B*K,) -> (B, K)


def layer_mean(per_layer):
    """Average over layers of the per-layer means; per_layer is a list of (B, K_l) tensors."""
    return torch.stack([t.mean() for t in per_layer]).mean()
