"""Networks: official state_dict keys/shapes/parameter counts, encode/decode split, loading."""
import pytest
import torch

from core.checkpoint import CheckpointError, load_modules
from core.model import (Discriminator, Generator, HSRCGenerator, MappingNetwork, StyleEncoder,
                        build_nets, default_taps, he_init)

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


@pytest.mark.parametrize('size,plain,hpf', [(128, 33_632_003, 43_206_403), (512, 33_964_099, 43_538_499)])
def test_official_generator_sizes(size, plain, hpf):
    assert _count(Generator(size, 64, 512, 0)) == plain
    assert _count(Generator(size, 64, 512, 1)) == hpf


def test_high_pass_generator_layout():
    g = Generator(256, 64, 512, w_hpf=1)
    shapes = _shapes(g)
    assert len(shapes) == 125 and _count(g) == 43_467_395
    assert shapes['hpf.filter'] == (3, 3) and 'encode.6.conv1.weight' in shapes
    x, s = torch.randn(1, 3, 256, 256), torch.randn(1, 64)
    masks = [torch.rand(1, 1, 256, 256), torch.rand(1, 1, 256, 256)]
    with torch.no_grad():
        assert g(x, s, masks).shape == (1, 3, 256, 256)


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
        assert torch.allclose(s[b], f.unshared[int(y[b])](f.shared(z[b:b + 1]))[0])
    d = Discriminator(32, 3, max_conv_dim=16, base_dim=8)
    x = torch.randn(5, 3, 32, 32)
    assert torch.allclose(d(x, y), d.main(x).flatten(1)[torch.arange(5), y])


@pytest.mark.parametrize('cls,taps', [(Generator, (0, 2)), (HSRCGenerator, (1, 5))])
def test_encode_once_decode_many_equals_forward(cls, taps):
    torch.manual_seed(0)
    g = cls(32, 16, 32, 0, base_dim=8).apply(he_init)
    x, s1, s2 = torch.randn(2, 3, 32, 32), torch.randn(2, 16), torch.randn(1, 16)
    enc = g.run_encoder(x, taps)
    assert torch.equal(g.run_decoder(enc, s1), g(x, s1))
    # a (1, style_dim) style broadcasts over the batch (used by the videos)
    assert torch.allclose(g.run_decoder(enc, s2), g(x, s2.expand(2, -1)), rtol=1e-5, atol=1e-5)
    assert [f.shape[1] for f in enc.feats] == g.tap_channels(taps)
    assert [f.shape[2] for f in enc.feats] == g.tap_sizes(taps)


def test_default_taps():
    assert default_taps('hsrc', 256) == [1, 2, 3, 4, 5]    # every 64x64 block, as the release
    assert default_taps('hsrc', 128) == [0]
    assert default_taps('stargan-v2', 256) == [0, 1, 2, 5]   # 128, 64, 32 px and the last bottleneck block
    assert default_taps('stargan-v2', 32) == [0, 2]


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
    g = Generator(32, 16, 32, w_hpf=1, base_dim=8)
    sd = {f'module.{k}': v for k, v in g.state_dict().items() if k != 'hpf.filter'}   # DataParallel, 2020 release
    fresh = Generator(32, 16, 32, w_hpf=1, base_dim=8)
    load_modules({'generator': fresh}, {'generator': sd}, 'x.ckpt')
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), g.state_dict().values()))
    with pytest.raises(CheckpointError) as err:
        load_modules({'generator': Generator(32, 16, 32, w_hpf=0, base_dim=8)}, {'generator': sd}, 'x.ckpt')
    assert 'unexpected keys' in str(err.value) and 'encode.' in str(err.value)
