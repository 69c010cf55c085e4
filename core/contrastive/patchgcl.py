"""PatchGCL plug-in: patch-wise graph contrastive learning (Jung, Kwon & Ye, AAAI 2024).

Per layer and image, K sampled patches become the nodes of a graph:
  1. embed: e = l2norm(Linear(feature)), on both images at the same positions;
  2. graph: A = 1[e_real e_real^T > threshold] from the source image (detached),
     shared by the source graph and the translated image's graph;
  3. GNN: an l-hop TAGConv, h = l2norm(W [X, AX, ..., A^l X] + b) with
     A = D^-1/2 A' D^-1/2, the same weights for both graphs; the key side's
     node features V are detached, the query side's Z carry gradients;
  4. InfoNCE between corresponding nodes, both ways:
     L = mean_i NCE(V_i; Z_i vs Z_j) + mean_i NCE(Z_i; V_i vs V_j);
  5. top-k pooling (Graph U-Net): scores p = sigmoid(Linear(node features of
     the source)), the k best nodes of both graphs kept and scaled by p, 2-hop
     reachability as the pooled graph, a 1-hop TAGConv and the same InfoNCE.
     Level losses: (L_0 + sum_i ratio_i L_i) / (levels + 1), then the mean over layers.

As released (jcy132/PatchGCL): embedding, threshold graph, TAGConv with DGL's
normalisation, node InfoNCE in both directions, pooled sizes
max(2, K // (down_scale * 2**(level-1))), normal(0, 0.02) initialisation.
Differences: any batch size (the release only runs at B = 1; here every image
has its own dense (K, K) graph, computed batched), pure torch on any device,
eps in every l2 normalisation, and --gcl_self_loops: 'release' counts a
node's self-loop twice (DGL's add_self_loop on a graph whose diagonal is
already set), 'clean' once. The sources gave no equations beyond the code.
"""
import argparse

import torch
from torch import nn

from core.contrastive import functional as LF
from core.contrastive._features import (add_feature_flag, feature_channels, feature_errors, feature_maps,
                                        feature_requirements, gather_positions, real_is_key)
from core.contrastive.base import PatchLoss, register
from core.contrastive.sampler import PatchSampler, l2_normalize

SELF_LOOPS = ['release', 'clean']
MAX_HOPS = 64      # --gcl_num_hop: far beyond the release's 2
MAX_LEVELS = 16    # --gcl_pooling_num: 2**16 patches would be needed to pool that deep


# ----------------------------------------------------------------------------------------------
# Graph functions (batched dense adjacency: one (K, K) graph per image)
# ----------------------------------------------------------------------------------------------

def patch_graph(e, threshold):
    """Binary symmetric adjacency 1[e_i . e_j > threshold]: (B, K, D) unit rows -> (B, K, K), no grad."""
    e = e.detach().float()
    return (torch.bmm(e, e.transpose(1, 2)) > threshold).float()


def propagation_matrix(adj, self_loops='release'):
    """D^-1/2 A' D^-1/2 of TAGConv for a (B, K, K) binary adjacency.

    A' = A + I ('release': DGL's add_self_loop, a second self-loop where the
    diagonal is already 1) or A with its diagonal set to 1 ('clean'). D is the
    degree of A', clamped at 1 as DGL does.
    """
    eye = torch.eye(adj.shape[-1], device=adj.device, dtype=adj.dtype)
    loops = adj + eye if self_loops == 'release' else torch.maximum(adj, eye)
    inv_sqrt = loops.sum(dim=-1).clamp(min=1).rsqrt()                # (B, K)
    return inv_sqrt[..., :, None] * loops * inv_sqrt[..., None, :]


def two_hop_reach(adj):
    """1[(A A)_ij > 0]: pairs joined by a path of length 2 (A has its self-loops): (B, K, K)."""
    return (torch.bmm(adj, adj) > 0).float()


def select_nodes(x, idx):
    """Rows idx (B, k) of node features (B, K, D) -> (B, k, D)."""
    return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))


def select_subgraph(adj, idx):
    """The (B, k, k) sub-adjacency of the nodes idx (B, k) of a (B, K, K) adjacency."""
    rows = torch.gather(adj, 1, idx[..., None].expand(-1, -1, adj.shape[-1]))   # (B, k, K)
    return torch.gather(rows, 2, idx[:, None, :].expand(-1, idx.shape[1], -1))  # (B, k, k)


def two_way_nce(v, z, tau):
    """Node InfoNCE both ways, each averaged over nodes: (B, K, D) x 2 -> scalar; 2 ln K when all equal."""
    return LF.patch_nce(v, z, tau).mean() + LF.patch_nce(z, v, tau).mean()


def pooled_sizes(num_nodes, levels, down_scale):
    """Nodes kept at pooling levels 1..levels: max(2, K // (down_scale * 2**(level-1))), never growing."""
    sizes, current = [], num_nodes
    for level in range(levels):
        current = min(current, max(2, num_nodes // (down_scale * 2 ** level)))
        sizes.append(current)
    return sizes


# ----------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------

class TAGConv(nn.Module):
    """Topology-adaptive graph convolution (Du et al. 2017), as DGL's: W [X, PX, ..., P^hops X] + b."""

    def __init__(self, dim_in, dim_out, hops):
        super().__init__()
        self.hops = hops
        self.linear = nn.Linear(dim_in * (hops + 1), dim_out)

    def forward(self, x, prop):
        """x (B, K, D_in), prop (B, K, K) propagation matrix -> (B, K, D_out)."""
        powers = [x]
        for _ in range(self.hops):
            powers.append(torch.bmm(prop, powers[-1]))
        return self.linear(torch.cat(powers, dim=-1))               # (B, K, (hops+1) D_in) -> (B, K, D_out)


class GraphEncoder(nn.Module):
    """TAGConv followed by l2 normalisation of every node."""

    def __init__(self, dim, hops):
        super().__init__()
        self.conv = TAGConv(dim, dim, hops)

    def forward(self, x, prop):
        return l2_normalize(self.conv(x, prop))


class GraphLayer(nn.Module):
    """Embedding, GNN and pooling levels of one feature layer."""

    def __init__(self, channels, dim, hops, levels):
        super().__init__()
        self.embed = nn.Linear(channels, dim)
        self.gnn = GraphEncoder(dim, hops)
        self.pools = nn.ModuleList(nn.Linear(dim, 1) for _ in range(levels))
        self.pool_gnns = nn.ModuleList(GraphEncoder(dim, 1) for _ in range(levels))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.02)
                nn.init.zeros_(module.bias)


def encode_pair(gnn, prop, v_in, z_in):
    """Shared GNN on both graphs: key nodes V detached (the teacher), query nodes Z with gradients."""
    return gnn(v_in, prop).detach(), gnn(z_in, prop)


def top_k_pool(proj, score_feats, v, z, adj, k):
    """Graph U-Net pooling: keep the k best-scored nodes of both graphs, scaled by their score.

    score_feats (B, K, D) are the source graph's node features (detached);
    p = sigmoid(proj(score_feats)) learns through the scaling. Returns
    (v', z', 2-hop reachability among the kept nodes (B, k, k), p (B, K)).
    """
    p = torch.sigmoid(proj(score_feats)).squeeze(-1)                 # (B, K)
    top, idx = p.topk(k, dim=-1)                                     # (B, k)
    scale = top[..., None]                                           # (B, k, 1)
    return (scale * select_nodes(v, idx), scale * select_nodes(z, idx),
            select_subgraph(two_hop_reach(adj), idx), p)


# ----------------------------------------------------------------------------------------------
# Plug-in
# ----------------------------------------------------------------------------------------------

@register('patchgcl')
class PatchGCLLoss(PatchLoss):
    """Graph contrastive loss over --n_patch nodes per layer; >= 0, 2 ln K per level at collapse.

    Its embeddings, GNNs and pooling projections are saved and optimised as
    'patchgcl'. Extra stat 'degree': mean number of neighbours per node (self
    excluded) of the level-0 graphs, a check on --gcl_threshold (a nearly
    complete graph over-smooths the nodes).
    """

    uses_patches = False

    def __init__(self, channels, source='encoder', n_patch=256, dim=256, threshold=0.1, hops=2,
                 self_loops='release', levels=1, ratios=(0.5,), down_scale=4, tau=0.07, real_is_key=True):
        super().__init__()
        self.source, self.n_patch, self.threshold = source, n_patch, threshold
        self.self_loops, self.down_scale, self.tau = self_loops, down_scale, tau
        self.ratios = [ratios[0]] * levels if len(ratios) == 1 else list(ratios)
        self.real_is_key = real_is_key
        self.layers = nn.ModuleList(GraphLayer(c, dim, hops, levels) for c in channels)

    @classmethod
    def add_arguments(cls, parser):
        g = parser.add_argument_group('PatchGCL graph contrastive loss (--patch_loss patchgcl=W; nodes: '
                                      '--n_patch, width: --patch_dim, temperature: --nce_T)')
        add_feature_flag(g, 'gcl_features', 'PatchGCL')
        g.add_argument('--gcl_threshold', type=float, default=0.1,
                       help='patches are joined when the cosine of their source embeddings exceeds this '
                            '(release --nonzero_th: 0.1 in its README); >= 1 leaves only self-loops')
        g.add_argument('--gcl_num_hop', type=int, default=2, help='hops of the level-0 TAGConv (release --num_hop)')
        g.add_argument('--gcl_self_loops', choices=SELF_LOOPS, default='release',
                       help="release: every node counts its self-loop twice, as DGL's add_self_loop does on "
                            "the released graph; clean: once")
        g.add_argument('--gcl_pooling_num', type=int, default=1, help='top-k pooling levels (0: none)')
        g.add_argument('--gcl_pooling_ratio', type=_float_list, default='0.5',
                       help='loss weight of each pooling level, comma-separated (one value: every level)')
        g.add_argument('--gcl_down_scale', type=int, default=4,
                       help='pooling level l keeps max(2, K // (down_scale * 2**(l-1))) nodes')

    @classmethod
    def validate(cls, cfg):
        errors = feature_errors(cfg, 'gcl_features')
        if not 0 <= cfg.gcl_num_hop <= MAX_HOPS:   # each hop widens the TAGConv's linear layer by --patch_dim
            errors.append(f'--gcl_num_hop must be between 0 and {MAX_HOPS} (got {cfg.gcl_num_hop})')
        if not 0 <= cfg.gcl_pooling_num <= MAX_LEVELS:   # past log2(--n_patch) levels every level keeps 2 nodes
            errors.append(f'--gcl_pooling_num must be between 0 and {MAX_LEVELS} (got {cfg.gcl_pooling_num})')
        if cfg.gcl_down_scale < 1:
            errors.append('--gcl_down_scale must be at least 1')
        ratios = cfg.gcl_pooling_ratio
        if len(ratios) not in (1, cfg.gcl_pooling_num) or any(r < 0 for r in ratios):
            errors.append(f'--gcl_pooling_ratio needs one non-negative weight or one per level '
                          f'(--gcl_pooling_num {cfg.gcl_pooling_num}), got {",".join(map(str, ratios))}')
        return errors

    @classmethod
    def requirements(cls, cfg):
        return feature_requirements(cfg, 'gcl_features')

    @classmethod
    def from_config(cls, cfg, feat_channels):
        return cls(feature_channels(cfg.gcl_features, feat_channels), source=cfg.gcl_features,
                   n_patch=cfg.n_patch, dim=cfg.patch_dim, threshold=cfg.gcl_threshold, hops=cfg.gcl_num_hop,
                   self_loops=cfg.gcl_self_loops, levels=cfg.gcl_pooling_num, ratios=cfg.gcl_pooling_ratio,
                   down_scale=cfg.gcl_down_scale, tau=cfg.nce_T, real_is_key=real_is_key(cfg))

    def source_graph(self, e_q, e_k):
        """(B, K, K) adjacency from the source image's embeddings, whichever side carries gradients."""
        return patch_graph(e_k if self.real_is_key else e_q, self.threshold)

    def layer_loss(self, layer, f_q, f_k):
        """(loss, mean degree) of one layer from sampled features f_q, f_k (B, K, C)."""
        e_q = l2_normalize(layer.embed(f_q.float()))                # (B, K, D) with grad
        with torch.no_grad():
            e_k = l2_normalize(layer.embed(f_k.float()))            # (B, K, D) key side
        adj = self.source_graph(e_q, e_k)
        degree = (adj.sum(dim=-1) - adj.diagonal(dim1=1, dim2=2)).mean()
        v, z = encode_pair(layer.gnn, propagation_matrix(adj, self.self_loops), e_k, e_q)
        loss = two_way_nce(v, z, self.tau)
        sizes = pooled_sizes(adj.shape[-1], len(layer.pools), self.down_scale)
        for proj, gnn, k, ratio in zip(layer.pools, layer.pool_gnns, sizes, self.ratios):
            source_nodes = v if self.real_is_key else z.detach()
            v_in, z_in, adj, _ = top_k_pool(proj, source_nodes, v, z, adj, k)
            v, z = encode_pair(gnn, propagation_matrix(adj, self.self_loops), v_in, z_in)
            loss = loss + ratio * two_way_nce(v, z, self.tau)
        return loss / (len(layer.pools) + 1), degree

    def forward(self, inp):
        maps_q, maps_k = feature_maps(self.source, inp)
        ids = PatchSampler.sample_ids(maps_k, self.n_patch, inp.generator)
        losses, degrees = [], []
        for layer, fq, fk, idx in zip(self.layers, maps_q, maps_k, ids):
            loss, degree = self.layer_loss(layer, gather_positions(fq, idx), gather_positions(fk, idx))
            losses.append(loss)
            degrees.append(degree)
        return torch.stack(losses).mean(), {'degree': torch.stack(degrees).mean()}


def _float_list(value):
    """'0.5' or '1,0.5' -> tuple of floats (argparse type)."""
    try:
        return tuple(float(v) for v in value.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError('expected comma-separated numbers, e.g. 0.5 or 1,0.5') from None
