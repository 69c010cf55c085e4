"""Networks: official state_dict keys/shapes/parameter counts, encode/decode split, loading."""
import pytest
import torch

from conftest import assert_close_scaled, scaled_gap
from core.checkpoint import ModelFileError, load_modules
from core.model import (ARCHS, Discriminator, EncoderPlan, Generator, HSRCGenerator, MappingNetwork,
                        StyleEncoder, build_generator, build_nets, default_taps, encoder_plan, he_init,
                        num_encoder_blocks)

# reference-stargan-v2.md §3.2-3.9 (printed from the official modules)
OFFICIAL_G_256 = {
    'from_rgb.weight': (64, 3, 3, 3), 'from_rgb.bias': (64,),
    'encode.0.conv1.weight': (64, 64, 3, 3), 'encode.0.conv1.bias': (64,),
    'encode.0.conv2.weight': (128, 64, 3, 3), 'encode.0.conv2.bias': (128,),
    'encode.0.norm1.weight': (64,), 'encode.0.norm1.bias': (64,),
    'encode.0.norm2.weight': (64,), 'encode.0.norm2.bias': (64,),
    'encode.0.conv1x1.weight': (128, 64, 1, 1),
    'encode.1.conv1x1.weight': (256, 128, 1, 1), 'encode.2.conv1x1.weight': (512, 256, 1, 1),
    'decode.0.conv1.weight': (512, 512, 3, 3), 'decode.0.norm1.fc.weight': (1024, 64),
    'decode.2.conv2.weight': (512, 512, 3, 3),
    'decode.3.conv1.weight': (256, 512, 3, 3), 'decode.3.conv2.weight': (256, 256, 3, 3),
    'decode.3.norm1.fc.weight': (1024, 64), 'decode.3.norm2.fc.weight': (512, 64),
    'decode.3.conv1x1.weight': (256, 512, 1, 1),
    'decode.4.conv1.weight': (128, 256, 3, 3), 'decode.4.norm1.fc.weight': (512, 64),
    'decode.4.conv1x1.weight': (128, 256, 1, 1),
    'decode.5.conv1.weight': (64, 128, 3, 3), 'decode.5.conv2.weight': (64, 64, 3, 3),
    'decode.5.norm1.fc.weight': (256, 64), 'decode.5.norm2.fc.weight': (128, 64),
    'decode.5.conv1x1.weight': (64, 128, 1, 1),
    'to_rgb.0.weight': (64,), 'to_rgb.0.bias': (64,), 'to_rgb.2.weight': (3, 64, 1, 1), 'to_rgb.2.bias': (3,),
}
HSRC_G_256 = {
    'encode.0.conv1.weight': (128, 64, 4, 4), 'encode.0.conv1.bias': (128,), 'encode.0.norm1.weight': (64,),
    'encode.1.conv1.weight': (256, 128, 4, 4), 'encode.1.norm1.bias': (128,),
    'encode.5.conv2.weight': (256, 256, 3, 3), 'encode.5.norm2.weight': (256,),
    'decode.3.norm2.fc.weight': (512, 64), 'decode.4.conv1.weight': (128, 256, 3, 3),
    'decode.4.norm1.weight': (256,), 'decode.5.conv1.weight': (64, 128, 3, 3), 'decode.5.norm1.bias': (128,),
}


def _count(net):
    return sum(p.numel() for p in net.parameters())


def _shapes(net):
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def test_official_generator_keys_shapes_and_size():
    g = Generator(256, 64, 512, w_hpf=0)
    shapes = _shapes(g)
    assert len(shapes) == 108 and _count(g) == 33_892_995
    assert {k: shapes[k] for k in OFFICIAL_G_256} == OFFICIAL_G_256
    assert 'encode.3.conv1x1.weight' not in shapes and 'encode.4.conv1x1.weight' not in shapes
    assert list(shapes)[:4] == ['from_rgb.weight', 'from_rgb.bias', 'encode.0.conv1.weight', 'encode.0.conv1.bias']
    # registration order inside a ResBlk: conv1, conv2, norm1, norm2, conv1x1 (Adam states are keyed by it)
    assert [k for k in shapes if k.startswith('encode.0.')][-1] == 'encode.0.conv1x1.weight'


@pytest.mark.parametrize('size,plain', [(128, 33_632_003), (512, 33_964_099)])
def test_official_generator_sizes(size, plain):
    assert _count(Generator(size, 64, 512, 0)) == plain


@pytest.mark.parametrize('cls', [Generator, HSRCGenerator])
def test_the_high_pass_path_is_refused(cls):
    """w_hpf > 0 (upstream's FAN high-pass skips) is not implemented, so it must not build silently."""
    with pytest.raises(ValueError, match='FAN high-pass'):
        cls(32, 16, 32, w_hpf=1, base_dim=8)
    assert not any('hpf' in k for k in _shapes(cls(32, 16, 32, w_hpf=0, base_dim=8)))


def test_hsrc_generator_keys_and_size():
    g = HSRCGenerator(256, 64, 512, 0)
    shapes = _shapes(g)
    assert len(shapes) == 86 and _count(g) == 10_739_459
    assert {k: shapes[k] for k in HSRC_G_256} == HSRC_G_256
    assert _count(HSRCGenerator(128)) == 42_401_283 and _count(HSRCGenerator(512)) == 2_754_435


@pytest.mark.parametrize('domains,mapping,encoder,disc', [
    (2, 2_438_272, 20_916_928, 20_852_290), (4, 4_079_872, 20_982_592, 20_853_316),
    (5, 4_900_672, 21_015_424, 20_853_829)])
def test_mapping_style_encoder_discriminator_sizes(domains, mapping, encoder, disc):
    assert _count(MappingNetwork(16, 64, domains)) == mapping
    assert _count(StyleEncoder(256, 64, domains)) == encoder
    assert _count(Discriminator(256, domains)) == disc
    assert _shapes(MappingNetwork(16, 64, domains))[f'unshared.{domains - 1}.6.weight'] == (64, 512)
    e = _shapes(StyleEncoder(256, 64, domains))
    assert e['shared.8.weight'] == (512, 512, 4, 4) and e['unshared.0.weight'] == (64, 512)
    assert 'shared.7.weight' not in e and 'shared.6.conv1x1.weight' not in e
    d = _shapes(Discriminator(256, domains))
    assert d['main.10.weight'] == (domains, 512, 1, 1) and d['main.8.weight'] == (512, 512, 4, 4)


def test_heads_pick_the_requested_domain():
    torch.manual_seed(0)
    f = MappingNetwork(8, 4, 3, hidden_dim=16)
    z, y = torch.randn(5, 8), torch.tensor([0, 2, 1, 2, 0])
    s = f(z, y)
    for b in range(5):
        assert_close_scaled(s[b], f.unshared[int(y[b])](f.shared(z[b:b + 1]))[0])
    d = Discriminator(32, 3, max_conv_dim=16, base_dim=8)
    x = torch.randn(5, 3, 32, 32)
    assert_close_scaled(d(x, y), d.main(x).flatten(1)[torch.arange(5), y])


def test_all_styles_equals_forward_for_every_domain():
    torch.manual_seed(0)
    f = MappingNetwork(8, 4, 3, hidden_dim=16).apply(he_init)
    z = torch.randn(5, 8)
    styles = f.all_styles(z)
    assert styles.shape == (5, 3, 4)
    for d in range(3):
        assert torch.equal(styles[:, d], f(z, torch.full((5,), d)))
    assert not torch.equal(styles[:, 0], styles[:, 1])


def _alone_and_in_a_batch(net, x, *rest):
    """Output for image 0 computed alone, and computed beside the other images of the batch."""
    with torch.no_grad():
        return net(x[:1], *[r[:1] for r in rest])[0], net(x, *rest)[0]


@pytest.mark.parametrize('arch', ARCHS)
def test_networks_treat_every_image_of_a_batch_independently(arch):
    """Instance norm and per-sample heads: an image's output does not depend on its batch mates (eval mode)."""
    torch.manual_seed(0)
    g = build_generator(arch, 32, 8, 32, 0, 8).apply(he_init).eval()
    e = StyleEncoder(32, 8, 3, max_conv_dim=32, base_dim=8).apply(he_init).eval()
    d = Discriminator(32, 3, max_conv_dim=32, base_dim=8).apply(he_init).eval()
    f = MappingNetwork(4, 8, 3, hidden_dim=16).apply(he_init).eval()
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([2, 0, 1])
    others = torch.randn(3, 3, 32, 32) * 3 + 1   # batch mates with other statistics
    x_mixed = torch.cat([x[:1], others[1:]])
    s = torch.randn(3, 8)
    for net, args in ((g, (x_mixed, s)), (e, (x_mixed, y)), (d, (x_mixed, y)), (f, (torch.randn(3, 4), y))):
        alone, batched = _alone_and_in_a_batch(net, *args)
        assert alone.shape == batched.shape
        # A batch of 1 and of 3 take different kernels (oneDNN blocks by batch size): measured up to
        # 2.3e-6 of the scale here (AVX2, SSE4.1, oneDNN off) and 3.1e-6 on an AVX-512 CPU.
        assert_close_scaled(alone, batched, rel=3e-5, msg=type(net).__name__)
    # and the check can fail: batch statistics (train-mode batch norm) would couple the images
    bn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).train()
    alone, batched = _alone_and_in_a_batch(bn, x_mixed)
    assert scaled_gap(alone, batched) > 1e-2


@pytest.mark.parametrize('cls,taps', [(Generator, (0, 2)), (HSRCGenerator, (1, 5))])
def test_encode_once_decode_many_equals_forward(cls, taps):
    torch.manual_seed(0)
    g = cls(32, 16, 32, 0, base_dim=8).apply(he_init)
    x, s1, s2 = torch.randn(2, 3, 32, 32), torch.randn(2, 16), torch.randn(1, 16)
    enc = g.run_encoder(x, taps)
    assert torch.equal(g.run_decoder(enc, s1), g(x, s1))
    # a (1, style_dim) style broadcasts over the batch (used by the videos)
    assert_close_scaled(g.run_decoder(enc, s2), g(x, s2.expand(2, -1)), rel=3e-5)   # as in the test above
    assert [f.shape[1] for f in enc.feats] == g.tap_channels(taps)
    assert [f.shape[2] for f in enc.feats] == [g.plan.sizes[i] for i in taps]


def test_default_taps():
    assert default_taps('hsrc', 256) == [1, 2, 3, 4, 5]    # every 64x64 block, as the release
    assert default_taps('hsrc', 128) == [0]
    assert default_taps('hsrc', 32) == [1, 2, 3, 4, 5]     # no 64x64 block: the bottleneck-resolution blocks
    assert default_taps('stargan-v2', 256) == [0, 1, 2, 5]   # 128, 64, 32 px and the last bottleneck block
    assert default_taps('stargan-v2', 64) == [0, 1, 3]
    assert default_taps('stargan-v2', 32) == [0, 2]


def test_encoder_plan_values():
    assert encoder_plan('stargan-v2', 256) == EncoderPlan(
        dims=[64, 128, 256, 512, 512], channels=[128, 256, 512, 512, 512, 512], sizes=[128, 64, 32, 16, 16, 16])
    assert encoder_plan('stargan-v2', 32) == EncoderPlan([512, 512], [512] * 3, [16] * 3)
    assert encoder_plan('stargan-v2', 64, base_dim=8, max_conv_dim=12) == EncoderPlan([8, 12, 12], [12] * 4,
                                                                                      [32, 16, 16, 16])
    assert encoder_plan('hsrc', 256) == EncoderPlan([64, 128, 256], [128] + [256] * 5, [128] + [64] * 5)
    assert encoder_plan('hsrc', 32, base_dim=8) == EncoderPlan([8, 16, 32], [16] + [32] * 5, [16] + [8] * 5)
    assert [num_encoder_blocks('stargan-v2', s) for s in (32, 64, 128, 256, 512)] == [3, 4, 5, 6, 7]
    assert [num_encoder_blocks('hsrc', s) for s in (32, 64, 128, 256, 512)] == [6] * 5
    with pytest.raises(ValueError, match='unknown generator architecture'):
        encoder_plan('unet', 256)


@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('size', [32, 64, 128, 256])
@pytest.mark.parametrize('dims', [(None, 512), (8, 32)])
def test_encoder_plan_matches_the_built_encoder(arch, size, dims):
    """Channels, sizes and block count of the plan are those the built generator's encoder produces."""
    base_dim, max_conv_dim = dims
    plan = encoder_plan(arch, size, base_dim, max_conv_dim)
    with torch.device('meta'):   # shapes only: no memory, no arithmetic
        g = build_generator(arch, size, 16, max_conv_dim, 0, base_dim)
        feats = g.run_encoder(torch.empty(1, 3, size, size), range(len(g.encode))).feats
    assert plan.num_blocks == len(g.encode) == num_encoder_blocks(arch, size)
    assert [f.shape[1] for f in feats] == plan.channels == g.tap_channels(range(plan.num_blocks))
    assert [(f.shape[2], f.shape[3]) for f in feats] == [(s, s) for s in plan.sizes]
    assert g.from_rgb.out_channels == plan.dims[0]


def test_ema_starts_equal_to_initialised_online_nets():
    from core.config import parse_config
    cfg = parse_config(['--mode', 'train', '--img_size', '32', '--base_dim', '8', '--max_conv_dim', '16',
                        '--hidden_dim', '16'])
    nets, nets_ema = build_nets(cfg)
    for name, ema in nets_ema.items():
        online = nets[name].state_dict()
        assert all(torch.equal(online[k], v) for k, v in ema.state_dict().items())
        assert not any(p.requires_grad for p in ema.parameters())
    # he_init: zero biases and Kaiming std on the online nets
    assert torch.all(nets.generator.from_rgb.bias == 0)


def test_loading_official_layouts():
    g = Generator(32, 16, 32, base_dim=8).apply(he_init)
    sd = {f'module.{k}': v for k, v in g.state_dict().items()}   # DataParallel keys of the 2020 release
    fresh = Generator(32, 16, 32, base_dim=8)
    load_modules({'generator': fresh}, {'generator': sd}, 'x.ckpt')
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), g.state_dict().values()))
    bigger = {f'module.{k}': v for k, v in Generator(64, 16, 32, base_dim=8).state_dict().items()}
    with pytest.raises(ModelFileError) as err:
        load_modules({'generator': Generator(32, 16, 32, base_dim=8)}, {'generator': bigger}, 'x.ckpt')
    assert 'unexpected keys' in str(err.value) and 'encode.' in str(err.value)
