"""CUT's networks: the released state_dict keys and shapes, the layers that --nce_layers taps, and forward
passes against a float64 reference written from the layer description."""
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close_scaled

from core.cut.networks import NLayerDiscriminator, PatchSampleF, ResnetGenerator, init_weights

# ----------------------------------------------------------------------------------------------
# The released keys and shapes (CUT models/networks.py, resnet_9blocks / basic / mlp_sample at
# the default flags, ngf = ndf = 64, netF_nc 256), written down entry by entry.
# ----------------------------------------------------------------------------------------------

CONV3 = (256, 256, 3, 3)


def _resblocks(first, count):
    keys = {}
    for i in range(first, first + count):
        for conv in (1, 5):
            keys[f'model.{i}.conv_block.{conv}.weight'] = CONV3
            keys[f'model.{i}.conv_block.{conv}.bias'] = (256,)
    return keys


RESNET_9BLOCKS = {
    'model.1.weight': (64, 3, 7, 7), 'model.1.bias': (64,),
    'model.4.weight': (128, 64, 3, 3), 'model.4.bias': (128,),
    'model.7.filt': (128, 1, 3, 3),
    'model.8.weight': (256, 128, 3, 3), 'model.8.bias': (256,),
    'model.11.filt': (256, 1, 3, 3),
    **_resblocks(12, 9),
    'model.21.filt': (256, 1, 4, 4),
    'model.22.weight': (128, 256, 3, 3), 'model.22.bias': (128,),
    'model.25.filt': (128, 1, 4, 4),
    'model.26.weight': (64, 128, 3, 3), 'model.26.bias': (64,),
    'model.30.weight': (3, 64, 7, 7), 'model.30.bias': (3,),
}

RESNET_6BLOCKS = {
    **{k: v for k, v in RESNET_9BLOCKS.items() if int(k.split('.')[1]) <= 17},
    'model.18.filt': (256, 1, 4, 4),
    'model.19.weight': (128, 256, 3, 3), 'model.19.bias': (128,),
    'model.22.filt': (128, 1, 4, 4),
    'model.23.weight': (64, 128, 3, 3), 'model.23.bias': (64,),
    'model.27.weight': (3, 64, 7, 7), 'model.27.bias': (3,),
}

RESNET_9BLOCKS_NO_ANTIALIAS = {
    'model.1.weight': (64, 3, 7, 7), 'model.1.bias': (64,),
    'model.4.weight': (128, 64, 3, 3), 'model.4.bias': (128,),
    'model.7.weight': (256, 128, 3, 3), 'model.7.bias': (256,),
    **_resblocks(10, 9),
    'model.19.weight': (256, 128, 3, 3), 'model.19.bias': (128,),   # ConvTranspose2d: (in, out, k, k)
    'model.22.weight': (128, 64, 3, 3), 'model.22.bias': (64,),
    'model.26.weight': (3, 64, 7, 7), 'model.26.bias': (3,),
}

PATCHGAN_BASIC = {
    'model.0.weight': (64, 3, 4, 4), 'model.0.bias': (64,), 'model.2.filt': (64, 1, 3, 3),
    'model.3.weight': (128, 64, 4, 4), 'model.3.bias': (128,), 'model.6.filt': (128, 1, 3, 3),
    'model.7.weight': (256, 128, 4, 4), 'model.7.bias': (256,), 'model.10.filt': (256, 1, 3, 3),
    'model.11.weight': (512, 256, 4, 4), 'model.11.bias': (512,),
    'model.14.weight': (1, 512, 4, 4), 'model.14.bias': (1,),
}

PATCHGAN_NO_ANTIALIAS = {
    'model.0.weight': (64, 3, 4, 4), 'model.0.bias': (64,), 'model.2.weight': (128, 64, 4, 4), 'model.2.bias': (128,),
    'model.5.weight': (256, 128, 4, 4), 'model.5.bias': (256,), 'model.8.weight': (512, 256, 4, 4),
    'model.8.bias': (512,), 'model.11.weight': (1, 512, 4, 4), 'model.11.bias': (1,),
}

MLP_SAMPLE = {f'mlp_{l}.{k}': shape
              for l, c in enumerate((3, 128, 256, 256, 256))
              for k, shape in (('0.weight', (256, c)), ('0.bias', (256,)), ('2.weight', (256, 256)),
                               ('2.bias', (256,)))}

NCE_LAYERS = (0, 4, 8, 12, 16)


def shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def num_params(module):
    return sum(p.numel() for p in module.parameters())


def test_generators_have_the_released_keys_shapes_and_parameter_counts():
    g9 = ResnetGenerator(n_blocks=9)
    assert list(shapes(g9)) == list(RESNET_9BLOCKS) and shapes(g9) == RESNET_9BLOCKS   # order too (52 entries)
    assert len(RESNET_9BLOCKS) == 52 and num_params(g9) == 11_378_179
    g6 = ResnetGenerator(n_blocks=6)
    assert shapes(g6) == RESNET_6BLOCKS and len(RESNET_6BLOCKS) == 40 and num_params(g6) == 7_837_699
    plain = ResnetGenerator(antialias=False, antialias_up=False)
    assert shapes(plain) == RESNET_9BLOCKS_NO_ANTIALIAS and len(RESNET_9BLOCKS_NO_ANTIALIAS) == 48
    # the blur filters are buffers, not parameters
    assert {k for k, _ in g9.named_buffers()} == {'model.7.filt', 'model.11.filt', 'model.21.filt', 'model.25.filt'}


def test_discriminator_and_heads_have_the_released_keys_shapes_and_parameter_counts():
    d = NLayerDiscriminator()
    assert list(shapes(d)) == list(PATCHGAN_BASIC) and shapes(d) == PATCHGAN_BASIC and num_params(d) == 2_764_737
    assert shapes(NLayerDiscriminator(antialias=False)) == PATCHGAN_NO_ANTIALIAS
    g = ResnetGenerator()
    heads = PatchSampleF(g.tap_channels(NCE_LAYERS), 256)
    assert shapes(heads) == MLP_SAMPLE and len(MLP_SAMPLE) == 20 and num_params(heads) == 560_384


def test_released_state_dicts_load_strictly_both_ways():
    released = {k: torch.randn(s) for k, s in RESNET_6BLOCKS.items()}
    g = ResnetGenerator(n_blocks=6)
    g.load_state_dict(released, strict=True)
    assert all(torch.equal(g.state_dict()[k], v) for k, v in released.items())


def test_taps_are_the_released_layers_with_their_shapes_at_64px():
    # 256 px shapes scaled by 1/4: pad (3, 70, 70), convs (128, 64, 64) and (256, 32, 32), resblocks (256, 16, 16)
    g = ResnetGenerator()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        feats = g.encode(x, NCE_LAYERS)
        out, feats2 = g.forward_with_taps(x, NCE_LAYERS)
    assert [tuple(f.shape[1:]) for f in feats] == [(3, 70, 70), (128, 64, 64), (256, 32, 32), (256, 16, 16),
                                                   (256, 16, 16)]
    assert g.tap_channels(NCE_LAYERS) == [3, 128, 256, 256, 256]
    assert torch.equal(feats[0], F.pad(x, (3, 3, 3, 3), mode='reflect'))   # layer 0: raw padded pixels
    assert all(torch.equal(a, b) for a, b in zip(feats, feats2)) and out.shape == x.shape
    assert NLayerDiscriminator()(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)


def test_xavier_init_has_the_released_scale():
    g = init_weights(ResnetGenerator(ngf=64, n_blocks=1), 'xavier', 0.02)
    w = g.model[1].weight
    expected = 0.02 * (2 / (3 * 49 + 64 * 49)) ** 0.5   # gain * sqrt(2 / (fan_in + fan_out)) = 4.94e-4
    assert w.std().item() == pytest.approx(expected, rel=0.05)
    assert all((m.bias == 0).all() for m in g.modules() if isinstance(m, torch.nn.Conv2d))


# ----------------------------------------------------------------------------------------------
# float64 reference of the same layers, from the layer description (no module code)
# ----------------------------------------------------------------------------------------------

BLUR3 = torch.tensor([[1., 2., 1.], [2., 4., 2.], [1., 2., 1.]], dtype=torch.float64) / 16
BLUR4 = torch.tensor([1., 3., 3., 1.], dtype=torch.float64)
BLUR4 = torch.outer(BLUR4, BLUR4) / 64 * 4   # sums to 4: the stride-2 up-sampling keeps the mean


def inorm(x):
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + 1e-5)


def conv(x, w, b, stride=1, padding=0):
    return F.conv2d(x, w.double(), None if b is None else b.double(), stride=stride, padding=padding)


def blur_down(x):
    c = x.shape[1]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode='reflect'), BLUR3.expand(c, 1, 3, 3), stride=2, groups=c)


def blur_up(x):
    """Replicate pad 1, insert zeros between pixels, pad 1, 4x4 filter, crop 1 on every side."""
    c, (h, w) = x.shape[1], x.shape[2:]
    x = F.pad(x, (1, 1, 1, 1), mode='replicate')
    spread = torch.zeros(x.shape[0], c, 2 * (h + 2) - 1, 2 * (w + 2) - 1, dtype=x.dtype)
    spread[:, :, ::2, ::2] = x
    y = F.conv2d(F.pad(spread, (1, 1, 1, 1)), BLUR4.expand(c, 1, 4, 4), groups=c)   # (B, C, 2h+2, 2w+2)
    return y[:, :, 1:-1, 1:-1]


def reference_generator(sd, x, n_blocks, taps):
    """CUT's resnet generator, antialiased, instance norm, from its state_dict: (output, tapped outputs)."""
    out = {}
    h = out[0] = F.pad(x, (3, 3, 3, 3), mode='reflect')
    h = torch.relu(inorm(conv(h, sd['model.1.weight'], sd['model.1.bias'])))
    h = out[4] = conv(h, sd['model.4.weight'], sd['model.4.bias'], padding=1)
    h = blur_down(torch.relu(inorm(h)))
    h = out[8] = conv(h, sd['model.8.weight'], sd['model.8.bias'], padding=1)
    h = blur_down(torch.relu(inorm(h)))
    for i in range(12, 12 + n_blocks):
        r = F.pad(h, (1, 1, 1, 1), mode='reflect')
        r = torch.relu(inorm(conv(r, sd[f'model.{i}.conv_block.1.weight'], sd[f'model.{i}.conv_block.1.bias'])))
        r = F.pad(r, (1, 1, 1, 1), mode='reflect')
        h = out[i] = h + inorm(conv(r, sd[f'model.{i}.conv_block.5.weight'], sd[f'model.{i}.conv_block.5.bias']))
    up = 12 + n_blocks
    for i in (up, up + 4):
        h = torch.relu(inorm(conv(blur_up(h), sd[f'model.{i + 1}.weight'], sd[f'model.{i + 1}.bias'], padding=1)))
    h = F.pad(h, (3, 3, 3, 3), mode='reflect')
    y = torch.tanh(conv(h, sd[f'model.{up + 9}.weight'], sd[f'model.{up + 9}.bias']))
    return y, [out[i] for i in taps]


def reference_discriminator(sd, x):
    lrelu = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
    h = blur_down(lrelu(conv(x, sd['model.0.weight'], sd['model.0.bias'], padding=1)))
    for i in (3, 7):
        h = blur_down(lrelu(inorm(conv(h, sd[f'model.{i}.weight'], sd[f'model.{i}.bias'], padding=1))))
    h = lrelu(inorm(conv(h, sd['model.11.weight'], sd['model.11.bias'], padding=1)))
    return conv(h, sd['model.14.weight'], sd['model.14.bias'], padding=1)


def close(a, b, rel=1e-4):
    """a (float32) equals b (float64) to a tolerance scaled by b's magnitude."""
    return torch.allclose(a.double(), b, rtol=rel, atol=rel * b.abs().max().item())


def randomised(net, seed):
    """The network with weights of the trained scale (the 0.02 init would hide a wrong layer)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    return net


def test_generator_forward_equals_the_float64_reference():
    taps = (0, 4, 8, 12, 13)
    g = randomised(ResnetGenerator(ngf=4, n_blocks=2), 0)
    x = torch.rand(2, 3, 24, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    sd = {k: v.double() for k, v in g.state_dict().items()}
    y_ref, feats_ref = reference_generator(sd, x.double(), 2, taps)
    with torch.no_grad():
        y, feats = g.forward_with_taps(x, taps)
    assert y.shape == x.shape and close(y, y_ref)
    assert all(close(f, r) for f, r in zip(feats, feats_ref))
    assert not close(y, torch.tanh(y_ref * 1.01))   # the tolerance tells a 1 % error apart


def test_discriminator_forward_equals_the_float64_reference():
    d = randomised(NLayerDiscriminator(ndf=4), 2)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    ref = reference_discriminator({k: v.double() for k, v in d.state_dict().items()}, x.double())
    with torch.no_grad():
        out = d(x)
    assert out.shape == (2, 1, 2, 2) and close(out, ref)


def test_heads_project_the_sampled_positions_to_unit_rows():
    heads = randomised(PatchSampleF([3, 5], 8), 4)
    feats = [torch.randn(2, 3, 6, 6), torch.randn(2, 5, 4, 4)]
    ids = heads.sample_ids(feats, 7, torch.Generator().manual_seed(0))
    patches = heads(feats, ids)
    assert [tuple(p.shape) for p in patches] == [(2, 7, 8), (2, 7, 8)]
    # row k of image b is head(feature vector at position ids[k]), normalised
    f = feats[1][1].flatten(1)[:, ids[1][2]].double()   # (C,)
    sd = {k: v.double() for k, v in heads.mlp_1.state_dict().items()}
    v = sd['2.weight'] @ torch.relu(sd['0.weight'] @ f + sd['0.bias']) + sd['2.bias']
    assert_close_scaled(patches[1][1, 2].double(), v / v.norm())   # a unit row: its scale is its largest entry
