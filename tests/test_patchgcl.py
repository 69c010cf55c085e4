"""PatchGCL (reference-losses.md 7.6): graph, TAGConv by hand, pooling, gradient routing, any batch size."""
import math

import pytest
import torch

import core.contrastive as contrastive
from core.contrastive import functional as LF
from core.contrastive.patchgcl import (TAGConv, patch_graph, pooled_sizes, propagation_matrix, select_subgraph,
                                       top_k_pool, two_hop_reach, two_way_nce)
from core.contrastive.sampler import l2_normalize
from conftest import assert_close_scaled
from plugin_helpers import (assert_images_are_independent, build_plugin, feature_inputs, image_slice, plugin_config,
                            with_generator)

# The losses' fp32 rounding is that of their logits s / tau, which reach 1 / tau (--nce_T 0.07).
LOGITS = 1 / 0.07
PATH4 = torch.tensor([[1., 1., 0., 0.], [1., 1., 1., 0.], [0., 1., 1., 1.], [0., 0., 1., 1.]])


def ref_tagconv(adj, x, weight, bias, hops, self_loops):
    """DGL TAGConv by hand: per hop, h_v <- sum over edges u->v of h_u / sqrt(indeg(u) indeg(v))."""
    adj, x, weight, bias = adj.double(), x.double(), weight.double(), bias.double()
    edges = adj + torch.eye(len(adj), dtype=torch.float64) if self_loops == 'release' else adj
    indeg = [max(float(edges[:, v].sum()), 1.0) for v in range(len(adj))]
    powers, h = [x], x
    for _ in range(hops):
        nxt = torch.zeros_like(h)
        for v in range(len(adj)):
            for u in range(len(adj)):
                nxt[v] += edges[u, v] * h[u] / math.sqrt(indeg[u] * indeg[v])
        powers.append(nxt)
        h = nxt
    return torch.cat(powers, dim=-1) @ weight.T + bias


# ----------------------------------------------------------------------------- graph functions

def test_patch_graph_is_binary_symmetric_with_unit_diagonal():
    g = torch.Generator().manual_seed(0)
    e = l2_normalize(torch.randn(3, 20, 8, generator=g)).requires_grad_()
    adj = patch_graph(e, 0.1)
    assert adj.shape == (3, 20, 20) and not adj.requires_grad
    assert set(adj.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(adj, adj.transpose(1, 2))
    assert torch.equal(adj.diagonal(dim1=1, dim2=2), torch.ones(3, 20))
    assert torch.equal(patch_graph(e, 1.5), torch.zeros(3, 20, 20))


@pytest.mark.parametrize('self_loops', ['release', 'clean'])
@pytest.mark.parametrize('hops', [1, 2])
def test_tagconv_matches_dgl_by_hand_on_a_4_node_graph(self_loops, hops):
    torch.manual_seed(1)
    conv = TAGConv(3, 5, hops)
    x = torch.randn(4, 3)
    out = conv(x[None], propagation_matrix(PATH4[None], self_loops))[0]
    expected = ref_tagconv(PATH4, x, conv.linear.weight.detach(), conv.linear.bias.detach(), hops, self_loops)
    assert_close_scaled(out, expected)


def test_release_and_clean_self_loops_differ_only_in_the_diagonal_weight():
    release, clean = propagation_matrix(PATH4[None], 'release')[0], propagation_matrix(PATH4[None], 'clean')[0]
    assert release[0, 0] == pytest.approx(2 / 3) and clean[0, 0] == pytest.approx(1 / 2)
    assert torch.equal(release > 0, clean > 0)
    isolated = propagation_matrix(torch.zeros(1, 3, 3), 'clean')[0]
    assert torch.equal(isolated, torch.eye(3))                    # no edges: each node keeps itself


def test_pooled_graph_is_two_hop_reachability_of_the_kept_nodes():
    adj = torch.zeros(1, 6, 6)
    for a, b in ((0, 1), (1, 2), (2, 3), (4, 5)):
        adj[0, a, b] = adj[0, b, a] = 1
    adj += torch.eye(6)
    idx = torch.tensor([[3, 0, 5, 1]])
    sub = select_subgraph(two_hop_reach(adj), idx)[0]
    for i, a in enumerate(idx[0].tolist()):
        for j, b in enumerate(idx[0].tolist()):
            reachable = any(adj[0, a, m] and adj[0, m, b] for m in range(6))
            assert sub[i, j] == float(reachable)


def test_top_k_pool_keeps_the_best_scored_nodes_scaled_by_their_score():
    torch.manual_seed(2)
    proj = torch.nn.Linear(8, 1)
    v, z = l2_normalize(torch.randn(2, 10, 8)), l2_normalize(torch.randn(2, 10, 8))
    adj = patch_graph(v, 0.2)
    v2, z2, adj2, p = top_k_pool(proj, v, v, z, adj, 4)
    assert v2.shape == z2.shape == (2, 4, 8) and adj2.shape == (2, 4, 4)
    assert (p > 0).all() and (p < 1).all()
    for b in range(2):
        order = p[b].argsort(descending=True)[:4]
        assert_close_scaled(v2[b], p[b, order, None] * v[b, order])
        assert_close_scaled(z2[b], p[b, order, None] * z[b, order])


def test_pooled_sizes_follow_the_release():
    assert pooled_sizes(256, 1, 4) == [64]
    assert pooled_sizes(256, 2, 8) == [32, 16]
    assert pooled_sizes(16, 2, 4) == [4, 2]
    assert pooled_sizes(5, 1, 4) == [2]
    assert pooled_sizes(3, 3, 1) == [3, 2, 2]


def test_two_way_nce_of_identical_nodes_is_2_log_k():
    v = l2_normalize(torch.randn(1, 1, 8)).expand(3, 12, 8)
    assert_close_scaled(two_way_nce(v, v, 0.07), 2 * math.log(12), scale=LOGITS)


# ----------------------------------------------------------------------------- plug-in

def _gathered_embeddings(loss_fn, inp, seed=100):
    """Per layer (e_q, e_k) as the plug-in computes them, with the plug-in's sampling replayed."""
    replay = torch.Generator().manual_seed(seed)
    out = []
    for layer, fq, fk in zip(loss_fn.layers, inp.feat_q, inp.feat_k):
        idx = torch.randperm(fq.shape[2] * fq.shape[3], generator=replay)[:loss_fn.n_patch]
        pick = lambda f: f.flatten(2)[:, :, idx].transpose(1, 2)  # noqa: E731  (B, K, C)
        out.append((l2_normalize(layer.embed(pick(fq))), l2_normalize(layer.embed(pick(fk)))))
    return out


@pytest.mark.parametrize('self_loops', ['release', 'clean'])
def test_identity_graph_without_pooling_is_two_way_patch_infonce(self_loops):
    flags = ['--gcl_threshold', '1.5', '--gcl_pooling_num', '0', '--gcl_self_loops', self_loops]
    loss_fn = build_plugin('patchgcl', *flags, '--gcl_num_hop', '0')
    for layer in loss_fn.layers:                                  # the GNN becomes the identity map
        with torch.no_grad():
            layer.gnn.conv.linear.weight.copy_(torch.eye(16))
            layer.gnn.conv.linear.bias.zero_()
    inp = feature_inputs()
    loss, stats = loss_fn(inp)
    expected = [LF.patch_nce(eq, ek, 0.07).mean() + LF.patch_nce(ek, eq, 0.07).mean()
                for eq, ek in _gathered_embeddings(loss_fn, inp)]
    assert_close_scaled(loss, torch.stack(expected).mean(), scale=LOGITS)
    assert float(stats['degree']) == 0.0
    # With hops, an identity graph still never mixes nodes: each node is W [e, e, e] + b.
    hop_fn = build_plugin('patchgcl', *flags, '--gcl_num_hop', '2')
    loss, _ = hop_fn(with_generator(inp, 100))
    expected = []
    for layer, (eq, ek) in zip(hop_fn.layers, _gathered_embeddings(hop_fn, inp)):
        node = lambda e: l2_normalize(layer.gnn.conv.linear(torch.cat([e, e, e], -1)))  # noqa: E731
        expected.append(two_way_nce(node(ek), node(eq), 0.07))
    assert_close_scaled(loss, torch.stack(expected).mean(), scale=LOGITS)


def test_adjacency_comes_from_the_source_image_only():
    g = torch.Generator().manual_seed(3)
    e_q, e_k = l2_normalize(torch.randn(2, 12, 8, generator=g)), l2_normalize(torch.randn(2, 12, 8, generator=g))
    other = l2_normalize(torch.randn(2, 12, 8, generator=g))
    fake_query = build_plugin('patchgcl', '--gcl_threshold', '0.2')
    assert torch.equal(fake_query.source_graph(e_q, e_k), fake_query.source_graph(other, e_k))
    assert not torch.equal(fake_query.source_graph(e_q, e_k), fake_query.source_graph(e_q, other))
    real_query = build_plugin('patchgcl', '--gcl_threshold', '0.2', '--query_side', 'real')
    assert torch.equal(real_query.source_graph(e_q, e_k), real_query.source_graph(e_q, other))


def test_pooling_levels_are_weighted_by_the_ratio():
    inp = feature_inputs()
    plain = build_plugin('patchgcl', '--gcl_pooling_num', '0')
    values = {}
    for ratio in ('0', '0.5', '1'):
        pooled = build_plugin('patchgcl', '--gcl_pooling_num', '1', '--gcl_pooling_ratio', ratio)
        pooled.load_state_dict(plain.state_dict(), strict=False)  # same embedding and level-0 GNN
        values[ratio] = pooled(with_generator(inp, 100))[0]
    level0 = plain(with_generator(inp, 100))[0]
    assert_close_scaled(2 * values['0'], level0, scale=LOGITS)     # (L0 + 0 * L1) / 2
    assert_close_scaled(values['0.5'], (values['0'] + values['1']) / 2, scale=LOGITS)
    assert values['1'] > values['0']


@pytest.mark.parametrize('query_side', ['fake', 'real'])
def test_gradient_reaches_the_query_branch_and_the_graph_modules_only(query_side):
    extra = ['--query_side', query_side] + (['--cyc_mode', 'identity'] if query_side == 'real' else [])
    loss_fn = build_plugin('patchgcl', *extra)
    inp = feature_inputs()   # key side detached, as the objective hands it over
    loss, stats = loss_fn(inp)
    assert loss.dim() == 0 and torch.isfinite(loss) and float(stats['degree']) > 0
    loss.backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in inp.feat_q)
    for layer in loss_fn.layers:
        for module in (layer.embed, layer.gnn, layer.pools[0], layer.pool_gnns[0]):
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_batched_loss_equals_the_mean_of_per_image_losses():
    loss_fn = build_plugin('patchgcl', '--gcl_pooling_num', '2', '--gcl_pooling_ratio', '0.5,0.25')
    inp = feature_inputs(B=4)
    together, _ = loss_fn(inp)
    alone = [loss_fn(with_generator(image_slice(inp, b), 100))[0] for b in range(4)]
    assert_close_scaled(together, torch.stack(alone).mean(), scale=LOGITS)


@pytest.mark.parametrize('B', [1, 3, 8])
def test_any_batch_size_keeps_the_images_independent(B):
    # reference-losses.md 7: batched B > 1 equals a per-image loop (the release runs only at B = 1).
    assert_images_are_independent(build_plugin('patchgcl'), feature_inputs(B=B), feature_inputs(B=B, seed=1),
                                  scale=LOGITS)


def test_parameters_are_initialised_as_released_and_checkpointed():
    loss_fn = build_plugin('patchgcl', channels=(64, 64))
    names = set(loss_fn.state_dict())
    assert {'layers.0.embed.weight', 'layers.0.gnn.conv.linear.weight', 'layers.0.pools.0.weight',
            'layers.1.pool_gnns.0.conv.linear.bias'} <= names
    weight = loss_fn.layers[0].embed.weight.detach()
    assert abs(float(weight.std()) - 0.02) < 0.003
    assert float(loss_fn.layers[0].embed.bias.detach().abs().sum()) == 0.0
    assert loss_fn.layers[0].gnn.conv.linear.in_features == 3 * 16   # [X, AX, A^2 X]


def test_validation_names_the_flags():
    cls = contrastive.get('patchgcl')
    good = plugin_config('patchgcl')
    assert cls.validate(good) == []
    for changes, flag in (({'gcl_num_hop': -1}, '--gcl_num_hop'), ({'gcl_pooling_num': -1}, '--gcl_pooling_num'),
                          ({'gcl_down_scale': 0}, '--gcl_down_scale'),
                          ({'gcl_pooling_num': 2, 'gcl_pooling_ratio': (1.0, 0.5, 0.2)}, '--gcl_pooling_ratio'),
                          ({'gcl_pooling_ratio': (-1.0,)}, '--gcl_pooling_ratio')):
        assert any(flag in e for e in cls.validate(good.replace(**changes))), flag
