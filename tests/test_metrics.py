"""FID maths, the protocols' preprocessing, the feature networks, LPIPS and the weight files."""
import io
import os

import numpy as np
import pytest
import torch
import torchvision.utils as vutils
from PIL import Image
from scipy import linalg
from torchvision import transforms

from conftest import assert_close_scaled
from core.utils import weights as W
from core.utils.errors import UserError
from core.visualize import to_uint8
from metrics.fid import FIDExtractor, feature_stats, frechet_distance
from metrics.inception import StarGANInception, TFInception
from metrics.lpips import build_lpips, copy_alexnet_trunk, lpips_diversity, lpips_features
from metrics.resize import pil_bilinear_resize, pillow_resize_on_device, tf1_bilinear_resize


@pytest.fixture(scope='module')
def extractors():
    torch.manual_seed(0)
    return {p: FIDExtractor(p, pretrained=False).eval() for p in ('stargan-v2', 'standard')}


@pytest.fixture(scope='module')
def lpips_model():
    torch.manual_seed(0)
    return build_lpips('cpu', pretrained=False)


def scipy_fid(a, b):
    """The official formula: scipy sqrtm of S1 S2, real part."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    return float(np.real(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)))


# ----------------------------------------------------------------------------------------------
# The distance
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('n1, n2, dim', [(200, 150, 32), (40, 25, 64), (12, 300, 48)])
def test_frechet_distance_matches_scipy(n1, n2, dim):
    rng = np.random.default_rng(dim)
    a = rng.standard_normal((n1, dim))
    b = rng.standard_normal((n2, dim)) @ rng.standard_normal((dim, dim)) * 0.3 + 0.5
    ours = frechet_distance(feature_stats(a), feature_stats(b))
    assert ours == pytest.approx(scipy_fid(a, b), rel=1e-6)


def test_feature_stats_match_numpy_and_reconstruct_sigma():
    x = np.random.default_rng(0).standard_normal((10, 30))
    stats = feature_stats(x)
    # float64: 1e-10 of the scale is still a million units in the last place.
    assert_close_scaled(stats.mu, x.mean(0), rel=1e-10)
    assert_close_scaled(stats.sigma, np.cov(x, rowvar=False), rel=1e-10)
    assert_close_scaled((stats.eigvec * stats.eigval) @ stats.eigvec.T, stats.sigma, rel=1e-10)   # rank 9 < 30
    assert stats.eigvec.shape == (30, 9)


def test_fid_of_a_set_with_itself_is_zero_and_a_mean_shift_adds_its_square():
    x = np.random.default_rng(1).standard_normal((100, 20))
    delta = np.full(20, 0.5)
    stats = feature_stats(x)
    assert_close_scaled(frechet_distance(stats, stats), 0.0, rel=1e-10, scale=np.trace(stats.sigma))
    # Equal covariances: FID = |delta|^2 exactly.
    assert frechet_distance(feature_stats(x), feature_stats(x + delta)) == pytest.approx(20 * 0.25, rel=1e-9)


def test_fewer_than_two_images_is_a_clear_error():
    with pytest.raises(UserError, match='at least 2'):
        feature_stats(np.zeros((1, 8)))


@pytest.mark.parametrize('protocol', ['stargan-v2', 'standard'])
def test_image_fid_is_zero_on_the_same_images_and_grows_with_a_brightness_shift(extractors, protocol):
    rng = np.random.default_rng(2)
    base = rng.integers(40, 200, (5, 3, 16, 16)).astype(np.int64)
    images = [torch.from_numpy(np.clip(base + shift, 0, 255).astype(np.uint8)) for shift in (0, 15, 50)]
    feats = [extractors[protocol](x.repeat_interleave(2, -1).repeat_interleave(2, -2)).numpy() for x in images]
    fids = [frechet_distance(feature_stats(feats[0]), feature_stats(f)) for f in feats]
    stats = feature_stats(feats[0])
    assert_close_scaled(fids[0], 0.0, rel=1e-10, scale=np.trace(stats.sigma))
    assert 0 < fids[1] < fids[2]


# ----------------------------------------------------------------------------------------------
# Preprocessing: the same numbers as the official PNG pipeline
# ----------------------------------------------------------------------------------------------

def official_inception_input(x_fake, img_size):
    """StarGAN v2: utils.save_image to PNG, DefaultDataset + get_eval_loader's transform."""
    out = []
    for img in x_fake:
        buffer = io.BytesIO()
        vutils.save_image(((img + 1) / 2).clamp_(0, 1), buffer, format='PNG', nrow=1, padding=0)
        pil = Image.open(io.BytesIO(buffer.getvalue())).convert('RGB')
        transform = transforms.Compose([transforms.Resize([img_size, img_size]), transforms.Resize([299, 299]),
                                        transforms.ToTensor(),
                                        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
        out.append(transform(pil))
    return torch.stack(out)


@pytest.mark.parametrize('img_size', [32, 64])
def test_stargan_preprocessing_equals_the_png_round_trip_bit_for_bit(extractors, img_size):
    gen = torch.Generator().manual_seed(img_size)
    x_fake = torch.randn(3, 3, img_size, img_size, generator=gen) * 0.8
    x_fake[0, 0, 0, :4] = torch.tensor([-1.5, 1.5, 0.0, 2 * 127.5 / 255 - 1])   # clamped and half-way values
    ours = extractors['stargan-v2'].preprocess(to_uint8(x_fake))
    assert torch.equal(ours, official_inception_input(x_fake, img_size))


@pytest.mark.parametrize('size, out', [(32, 299), (64, 299), (256, 299), (300, 64), (17, 5)])
def test_pillow_resize_on_tensors_is_bit_exact(size, out):
    x = torch.from_numpy(np.random.default_rng(size).integers(0, 256, (2, 3, size, size), dtype=np.uint8))
    expected = torch.stack([torch.from_numpy(np.array(Image.fromarray(img.permute(1, 2, 0).numpy()).resize(
        (out, out), Image.Resampling.BILINEAR))).permute(2, 0, 1) for img in x])
    assert torch.equal(pillow_resize_on_device(x, (out, out)), expected)
    assert torch.equal(pil_bilinear_resize(x, (out, out)), expected)


def test_pillow_resize_with_different_axis_factors_falls_back_to_pillow():
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 3, 17, 23), dtype=np.uint8))
    expected = np.array(Image.fromarray(x[0].permute(1, 2, 0).numpy()).resize((40, 5), Image.Resampling.BILINEAR))
    assert np.array_equal(pil_bilinear_resize(x, (5, 40))[0].permute(1, 2, 0).numpy(), expected)
    with pytest.raises(ValueError):
        pillow_resize_on_device(x, (5, 40))


def test_tf1_resize_samples_without_half_pixel_offset():
    x = torch.tensor([[0., 1.], [2., 3.]]).view(1, 1, 2, 2)
    expected = torch.tensor([[0, .5, 1, 1], [1, 1.5, 2, 2], [2, 2.5, 3, 3], [2, 2.5, 3, 3]])
    assert torch.equal(tf1_bilinear_resize(x, (4, 4))[0, 0], expected)


def test_to_uint8_rounds_like_save_image():
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0, 2 * 100.5 / 255 - 1]).view(1, 1, 1, 6)
    assert to_uint8(x).flatten().tolist() == [0, 0, 128, 255, 255, 101]


def test_tf_inception_matches_torch_fidelity(extractors, tmp_path):
    """torch-fidelity (in requirements.txt) is the independent reference: its absence is a failure, not a skip.

    Both networks get the same random weights from a local file, so nothing is downloaded.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    torch.save(extractors['standard'].net.net.state_dict(), tmp_path / 'w.pth')
    reference = FeatureExtractorInceptionV3('inception-v3-compat', ['2048'],
                                            feature_extractor_weights_path=str(tmp_path / 'w.pth'))
    x = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    assert_close_scaled(extractors['standard'](x), reference(x)[0], rel=3e-5)   # networks, as in test_model.py


def test_stargan_inception_skips_transform_input(extractors):
    """The official wrapper chains the torchvision blocks, so transform_input never runs."""
    net = extractors['stargan-v2'].net
    x = torch.randn(1, 3, 299, 299)
    with torch.no_grad():
        features = net(x)
        manual = x
        for block in net.blocks:
            manual = block(manual)
    assert torch.equal(features, manual.flatten(1))
    assert features.shape == (1, 2048)


# ----------------------------------------------------------------------------------------------
# LPIPS
# ----------------------------------------------------------------------------------------------

def test_lpips_of_identical_outputs_is_zero(lpips_model):
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    assert torch.equal(lpips_diversity(lpips_model, [x, x.clone()]), torch.zeros(3))


def test_lpips_diversity_is_the_mean_of_the_pairwise_lpips_package_values(lpips_model):
    outputs = [torch.rand(5, 3, 32, 32) * 2 - 1 for _ in range(4)]
    expected = torch.stack([lpips_model(outputs[i], outputs[j]).flatten()
                            for i in range(4) for j in range(i + 1, 4)]).mean(0)
    ours = lpips_diversity(lpips_model, outputs)
    assert ours.shape == (5,)
    assert_close_scaled(ours, expected, rel=3e-5)   # networks on other batch sizes, as in test_model.py
    assert bool((ours > 0).all())


def test_alexnet_trunk_copy_gives_torchvision_alexnet_features(lpips_model):
    import copy
    import torchvision
    torch.manual_seed(1)
    alexnet = torchvision.models.alexnet(weights=None)
    model = copy_alexnet_trunk(copy.deepcopy(lpips_model), alexnet)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        relu5 = model.net(x)[-1]
        expected = alexnet.features[:12](x)
    assert torch.equal(relu5, expected)
    assert lpips_features(model, x)[0].shape == (2, 64, 15, 15)


# ----------------------------------------------------------------------------------------------
# Weight files: never downloaded at run time, one clear message
# ----------------------------------------------------------------------------------------------

def test_missing_weight_file_names_the_file_and_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv('STARGAN_WEIGHTS_DIR', str(tmp_path))
    with pytest.raises(UserError) as err:
        StarGANInception(pretrained=True)
    message = str(err.value)
    assert 'inception_v3_google-0cc3c7bd.pth' in message and 'bash download.sh metric-weights' in message
    with pytest.raises(UserError, match='pt_inception-2015-12-05-6726825d.pth'):
        TFInception(pretrained=True)
    with pytest.raises(UserError, match='alexnet-owt-7be5be79.pth'):
        build_lpips('cpu', pretrained=True)


def _register_tiny_weight(tmp_path, monkeypatch, module, corrupt=False):
    monkeypatch.setenv('STARGAN_WEIGHTS_DIR', str(tmp_path))
    path = tmp_path / 'tiny-weights.pth'
    torch.save(module.state_dict(), path)
    sha = '00000000' if corrupt else W.sha256_file(path)[:8]
    monkeypatch.setitem(W.WEIGHTS, 'tiny', W.WeightFile(path.name, 'https://example.invalid/tiny.pth', sha,
                                                        'metric-weights'))


def test_load_weights_reads_a_checked_file_into_the_network(tmp_path, monkeypatch):
    torch.manual_seed(0)
    source = torch.nn.Conv2d(3, 4, 3)
    _register_tiny_weight(tmp_path, monkeypatch, source)
    target = W.load_weights(torch.nn.Conv2d(3, 4, 3), 'tiny')
    assert torch.equal(target.weight, source.weight)


def test_load_weights_rejects_a_corrupt_or_wrong_file(tmp_path, monkeypatch):
    _register_tiny_weight(tmp_path, monkeypatch, torch.nn.Conv2d(3, 4, 3), corrupt=True)
    with pytest.raises(UserError, match='does not match its SHA-256.*bash download.sh metric-weights'):
        W.load_weights(torch.nn.Conv2d(3, 4, 3), 'tiny')
    _register_tiny_weight(tmp_path, monkeypatch, torch.nn.Conv2d(3, 4, 3))
    with pytest.raises(UserError, match='does not fit the tiny network.*wrong shape'):
        W.load_weights(torch.nn.Conv2d(3, 8, 3), 'tiny')


def test_inception_loads_weights_from_the_cache(tmp_path, monkeypatch):
    """The real loading path of the FID network, with a random state dict of the right shape."""
    torch.manual_seed(3)
    source = TFInception(pretrained=False).net
    monkeypatch.setenv('STARGAN_WEIGHTS_DIR', str(tmp_path))
    info = W.WEIGHTS['inception_tf_fid']
    torch.save(source.state_dict(), tmp_path / info.filename)
    monkeypatch.setitem(W.WEIGHTS, 'inception_tf_fid', info._replace(sha256=W.sha256_file(tmp_path / info.filename)))
    loaded = TFInception(pretrained=True)
    assert all(torch.equal(a, b) for a, b in zip(loaded.net.state_dict().values(), source.state_dict().values()))
    assert FIDExtractor('standard', pretrained=True).identity == info.filename


def test_weights_command_line_lists_and_verifies(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('STARGAN_WEIGHTS_DIR', str(tmp_path))
    assert W.main(['dir']) == 0 and capsys.readouterr().out.strip() == str(tmp_path)
    assert W.main(['files', 'metric-weights']) == 0
    listed = capsys.readouterr().out.split()
    assert 'alexnet-owt-7be5be79.pth' in listed and 'https://download.pytorch.org/models/alexnet-owt-7be5be79.pth' in listed
    assert W.main(['verify', 'metric-weights']) == 1
    assert 'bash download.sh metric-weights' in capsys.readouterr().err
    assert W.main(['files', 'nonsense']) == 1
    assert os.listdir(tmp_path) == []
