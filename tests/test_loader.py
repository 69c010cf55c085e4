"""Tests of core/data/loader.py on tiny synthetic image trees (CPU, a few seconds)."""
import os
import pickle
import random
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from core.data.loader import (EvalTransform, StepBatchSampler, TrainDataset, TrainTransform, domain_tree_dataset,
                              folder_dataset, load_image_tensor, load_val_batch, make_train_iterator,
                              random_resized_crop_params)
from core.data.images import DataError, check_images, domain_tree, list_domains, list_images, load_rgb
from core.utils.seeding import STREAM_REFERENCE, STREAM_SOURCE


def scan(root):
    """(domain names, image paths, domain ids) of a domain tree."""
    tree = domain_tree(root)
    return tree.names, tree.paths, tree.labels

IMG_SIZE = 32


# ---------------------------------------------------------------------------
# Fixtures: colour-coded domains, so a tensor tells which domain it came from
# ---------------------------------------------------------------------------

def domain_image(domain, k, size=(40, 32)):
    """A noisy image whose channel `domain` is bright and the others dark."""
    rng = np.random.default_rng(100 * domain + k)
    pixels = np.full((size[1], size[0], 3), 40, np.int16)   # (H, W, 3)
    pixels[..., domain] = 200
    pixels += rng.integers(-15, 16, pixels.shape, dtype=np.int16)
    return Image.fromarray(pixels.astype(np.uint8))


def make_tree(root, counts, size=(40, 32)):
    """root/d<k>/<nnn>.png with counts[k] images in domain k; returns the root as str."""
    for d, n in enumerate(counts):
        folder = root / f'd{d}'
        folder.mkdir(parents=True)
        for k in range(n):
            domain_image(d, k, size).save(folder / f'{k:03d}.png')
    return str(root)


def domain_of(x):
    """Domain id of colour-coded images (B, 3, S, S) -> (B,)."""
    return x.mean(dim=(2, 3)).argmax(dim=1)


def make_cfg(train_dir, val_dir=None, **overrides):
    cfg = dict(train_img_dir=train_dir, val_img_dir=val_dir, img_size=IMG_SIZE, batch_size=4,
               num_workers=0, randcrop_prob=0.5, seed=7, num_domains=3, skip_bad_images=False,
               val_batch_size=4, facts=SimpleNamespace(domain_names=None))
    cfg.update(overrides)
    return SimpleNamespace(**cfg)


def take(cfg, start_step, num_steps):
    with make_train_iterator(cfg, start_step, 'cpu') as batches:
        return [next(batches) for _ in range(num_steps)]


def assert_same_batches(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for a, b in zip(batches_a, batches_b):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key


# ---------------------------------------------------------------------------
# Domains and file discovery
# ---------------------------------------------------------------------------

def test_domains_sorted_and_stray_entries_ignored(tmp_path):
    for name in ['zebra', 'Cat', 'dog', '.hidden', '__MACOSX']:
        (tmp_path / name).mkdir()
    (tmp_path / '.DS_Store').write_bytes(b'\0\0')
    (tmp_path / 'readme.txt').write_text('notes')
    assert list_domains(str(tmp_path)) == ['Cat', 'dog', 'zebra']


def test_missing_folder_and_no_domains(tmp_path):
    with pytest.raises(DataError, match='does not exist'):
        list_domains(str(tmp_path / 'nope'))
    domain_image(0, 0).save(tmp_path / 'loose.png')
    with pytest.raises(DataError, match='no domain sub-folders'):
        list_domains(str(tmp_path))


def test_images_found_recursively_with_mixed_case_extensions(tmp_path):
    names = ['a.JPG', 'b.Png', 'c.jpeg', 'd.TIFF', 'e.WebP', 'sub/f.bmp', 'sub/deeper/g.pgm',
             'notes.txt', '.h.jpg', '._i.jpg', '.hid/j.png']
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b'')
    found = [os.path.relpath(p, tmp_path) for p in list_images(str(tmp_path))]
    expected = ['a.JPG', 'b.Png', 'c.jpeg', 'd.TIFF', 'e.WebP', 'sub/deeper/g.pgm', 'sub/f.bmp']
    assert found == [os.path.normpath(n) for n in expected]


def test_domain_without_images_is_named(tmp_path):
    make_tree(tmp_path, [2, 2])
    (tmp_path / 'd2').mkdir()
    (tmp_path / 'd2' / 'readme.txt').write_text('x')
    with pytest.raises(DataError, match='d2'):
        scan(str(tmp_path))


def test_scan_gives_domain_ids_in_sorted_order(tmp_path):
    domains, paths, labels = scan(make_tree(tmp_path, [2, 3, 1]))
    assert domains == ['d0', 'd1', 'd2']
    assert labels == [0, 0, 1, 1, 1, 2]
    assert all(os.path.basename(os.path.dirname(p)) == domains[y] for p, y in zip(paths, labels))


# ---------------------------------------------------------------------------
# Decoding every image mode
# ---------------------------------------------------------------------------

def _p_with_transparency():
    img = Image.new('P', (32, 32), 0)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.paste(1, (0, 0, 16, 32))
    img.info['transparency'] = 0
    return img


def _gray16(mode):
    pixels = np.full((32, 32), 32896, np.uint16)   # (H, W), mid grey on the 16-bit scale
    pixels[:4] = 65535
    if mode == 'I;16B':
        # Pillow's convert('I;16B') clips at 255, so build the big-endian bytes directly.
        return Image.frombytes(mode, (32, 32), pixels.astype('>u2').tobytes())
    img = Image.fromarray(pixels)
    return img if mode == 'I;16' else img.convert(mode)


MODE_CASES = {
    'L': (lambda: domain_image(0, 0).convert('L'), 'png'),
    'LA': (lambda: domain_image(0, 0).convert('LA'), 'png'),
    'P': (lambda: domain_image(1, 0).convert('P'), 'png'),
    'P+transparency': (_p_with_transparency, 'png'),
    'RGBA': (lambda: domain_image(2, 0).convert('RGBA'), 'png'),
    'PA': (lambda: domain_image(2, 0).convert('PA'), 'tiff'),
    'CMYK': (lambda: domain_image(0, 0).convert('CMYK'), 'jpg'),
    'YCbCr': (lambda: domain_image(0, 0).convert('YCbCr'), 'tiff'),
    '1': (lambda: domain_image(0, 0).convert('1'), 'png'),
    'I;16': (lambda: _gray16('I;16'), 'png'),
    'I;16B': (lambda: _gray16('I;16B'), 'tiff'),
    'I': (lambda: _gray16('I'), 'tiff'),
    'F': (lambda: Image.fromarray(np.full((32, 32), 0.5, np.float32)), 'tiff'),
    'non-square': (lambda: domain_image(1, 0, size=(57, 23)), 'jpg'),
}


@pytest.mark.parametrize('case', sorted(MODE_CASES))
def test_every_mode_loads_as_rgb_tensor(tmp_path, case):
    build, ext = MODE_CASES[case]
    path = str(tmp_path / f'img.{ext}')
    source = build()
    # Uncompressed YCbCr TIFFs that Pillow 12 writes do not read back (a Pillow defect); LZW ones do.
    source.save(path, **({'compression': 'tiff_lzw'} if ext == 'tiff' else {}))
    img = load_rgb(path)
    assert img.mode == 'RGB' and img.size == source.size
    x = EvalTransform(IMG_SIZE)(img)
    assert x.shape == (3, IMG_SIZE, IMG_SIZE) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.min() >= -1 and x.max() <= 1


@pytest.mark.parametrize('mode,ext', [('I;16', 'png'), ('I;16B', 'tiff'), ('I', 'tiff')])
def test_16_bit_is_scaled_not_clipped(tmp_path, mode, ext):
    path = str(tmp_path / f'gray.{ext}')
    _gray16(mode).save(path)
    pixels = np.asarray(load_rgb(path))   # (H, W, 3)
    assert abs(int(pixels[20, 20, 0]) - 128) <= 1   # 32896 / 65535 of full scale
    assert (pixels[0] == 255).all()
    assert (pixels[..., 0] == pixels[..., 1]).all()
    assert pixels.mean() < 200   # not saturated white


def test_float_image_in_unit_range(tmp_path):
    path = str(tmp_path / 'f.tiff')
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(path)
    assert abs(int(np.asarray(load_rgb(path))[0, 0, 0]) - 128) <= 1


def test_transparency_composited_onto_white(tmp_path):
    rgba = Image.new('RGBA', (8, 8), (0, 0, 0, 0))
    rgba.paste((10, 20, 30, 255), (0, 0, 4, 8))
    rgba.save(tmp_path / 'a.png')
    pixels = np.asarray(load_rgb(str(tmp_path / 'a.png')))
    assert (pixels[:, :4] == (10, 20, 30)).all() and (pixels[:, 4:] == 255).all()
    _p_with_transparency().save(tmp_path / 'p.png')
    pixels = np.asarray(load_rgb(str(tmp_path / 'p.png')))
    assert (pixels[:, :16] == (10, 200, 30)).all() and (pixels[:, 16:] == 255).all()


def test_exif_orientation_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6   # Orientation: rotate 90 degrees clockwise to display
    domain_image(0, 0, size=(40, 20)).save(tmp_path / 'rot.jpg', exif=exif.tobytes())
    assert load_rgb(str(tmp_path / 'rot.jpg')).size == (20, 40)


# ---------------------------------------------------------------------------
# Bad files
# ---------------------------------------------------------------------------

def _write_bad_files(folder):
    """Four unusable files in `folder`; returns their paths."""
    rng = np.random.default_rng(0)
    (folder / 'noise.jpg').write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    domain_image(0, 1, size=(64, 64)).save(folder / 'full.png')
    data = (folder / 'full.png').read_bytes()
    (folder / 'full.png').unlink()
    (folder / 'truncated.png').write_bytes(data[:len(data) // 2])
    (folder / 'empty.png').write_bytes(b'')
    Image.new('RGB', (1, 1)).save(folder / 'tiny.png')
    return [str(folder / n) for n in ['empty.png', 'noise.jpg', 'tiny.png', 'truncated.png']]


def test_bad_files_raise_one_error_naming_them(tmp_path):
    make_tree(tmp_path, [2, 2])
    bad = _write_bad_files(tmp_path / 'd1')
    _, paths, _ = scan(str(tmp_path))
    with pytest.raises(DataError) as info:
        check_images(paths)
    message = str(info.value)
    assert all(path in message for path in bad)
    assert '--skip_bad_images' in message and 'empty file' in message and 'too small' in message


def test_skip_bad_warns_and_drops(tmp_path):
    make_tree(tmp_path, [2, 2])
    bad = _write_bad_files(tmp_path / 'd1')
    _, paths, _ = scan(str(tmp_path))
    with pytest.warns(UserWarning, match='4 of 8 image files cannot be used'):
        good = check_images(paths, skip_bad=True)
    assert good == [p for p in paths if p not in bad]


def test_bad_file_list_is_capped(tmp_path):
    for k in range(25):
        (tmp_path / f'{k:02d}.png').write_bytes(b'')
    with pytest.raises(DataError, match=r'\.\.\. and 5 more') as info:
        check_images(list_images(str(tmp_path)))
    assert '19.png' in str(info.value) and '20.png' not in str(info.value)


def test_train_iterator_checks_images_and_domain_count(tmp_path):
    root = make_tree(tmp_path, [2, 2, 2])
    with pytest.raises(DataError, match='--num_domains is 2') as info:
        make_train_iterator(make_cfg(root, num_domains=2), 0, 'cpu')
    assert 'd0, d1, d2' in str(info.value)
    _write_bad_files(tmp_path / 'd2')
    with pytest.raises(DataError, match='--skip_bad_images'):
        make_train_iterator(make_cfg(root), 0, 'cpu')
    with pytest.warns(UserWarning):
        batch = take(make_cfg(root, skip_bad_images=True), 0, 1)[0]
    assert batch.x_src.shape == (4, 3, IMG_SIZE, IMG_SIZE)


def test_domain_left_empty_by_skipping_is_an_error(tmp_path):
    root = make_tree(tmp_path, [2, 2])
    (tmp_path / 'd2').mkdir()
    (tmp_path / 'd2' / 'broken.jpg').write_bytes(b'not an image')
    with pytest.warns(UserWarning), pytest.raises(DataError, match='No usable images'):
        make_train_iterator(make_cfg(root, skip_bad_images=True), 0, 'cpu')


# ---------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------

def test_random_resized_crop_stays_inside_the_image():
    rng = random.Random(0)
    for width, height in [(32, 32), (40, 32), (57, 23), (23, 57), (3, 3), (1000, 1000)]:
        for _ in range(300):
            top, left, crop_h, crop_w = random_resized_crop_params(width, height, rng)
            assert 0 < crop_h and 0 < crop_w
            assert 0 <= top <= height - crop_h and 0 <= left <= width - crop_w


def test_random_resized_crop_scale_and_ratio_within_bounds():
    rng = random.Random(1)
    for _ in range(2000):
        _, _, crop_h, crop_w = random_resized_crop_params(1000, 1000, rng)
        # On a 1000 px image the rounding of the sides moves scale/ratio by < 0.2%.
        assert 0.8 - 0.002 <= crop_h * crop_w / 1e6 <= 1.0
        assert 0.9 - 0.002 <= crop_w / crop_h <= 1.1 + 0.002


def test_random_resized_crop_falls_back_to_centre_crop():
    # Crops of 80-100% of the area cannot fit a 10 px side, so every attempt fails.
    assert random_resized_crop_params(100, 10, random.Random(0)) == (0, 44, 10, 11)
    assert random_resized_crop_params(10, 100, random.Random(0)) == (44, 0, 11, 10)


def test_train_transform_is_a_function_of_the_seed():
    img = domain_image(1, 0, size=(57, 23))
    transform = TrainTransform(IMG_SIZE, randcrop_prob=1.0)
    outputs = [transform(img, seed) for seed in range(8)]
    assert all(x.shape == (3, IMG_SIZE, IMG_SIZE) and -1 <= x.min() and x.max() <= 1 for x in outputs)
    assert torch.equal(transform(img, 3), outputs[3])
    assert len({x.sum().item() for x in outputs}) > 1


def test_datasets_and_transforms_pickle_for_spawn(tmp_path):
    _, paths, labels = scan(make_tree(tmp_path, [2, 2]))
    dataset = TrainDataset(paths, labels, IMG_SIZE, 0.5)
    clone = pickle.loads(pickle.dumps(dataset))
    item = (1, 12345, 0, 678)
    assert all(torch.equal(a, b) for a, b in zip(dataset[item][:2], clone[item][:2]))
    pickle.dumps(EvalTransform(IMG_SIZE))


def test_spawned_workers_give_the_same_batch(tmp_path):
    _, paths, labels = scan(make_tree(tmp_path, [2, 3]))
    dataset = TrainDataset(paths, labels, IMG_SIZE, 0.5)
    sampler = StepBatchSampler(labels, 4, seed=3, stream=STREAM_REFERENCE, pairs=True)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=1, multiprocessing_context='spawn')
    x, x2, y = next(iter(loader))
    expected = [dataset[item] for item in sampler.batch(0)]
    assert torch.equal(x, torch.stack([e[0] for e in expected]))
    assert torch.equal(x2, torch.stack([e[1] for e in expected]))


# ---------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------

def test_domains_are_balanced_on_unbalanced_data():
    labels = [0] * 2 + [1] * 10 + [2] * 50
    sampler = StepBatchSampler(labels, batch_size=16, seed=0, stream=STREAM_SOURCE)
    counts = Counter(labels[item[0]] for step in range(400) for item in sampler.batch(step))
    assert all(abs(counts[y] - 6400 / 3) < 0.1 * 6400 / 3 for y in range(3))
    # Within a domain every image is drawn.
    seen = {item[0] for step in range(400) for item in sampler.batch(step)}
    assert seen == set(range(len(labels)))


def test_reference_pairs_share_the_domain_and_differ():
    labels = [0] + [1] * 2 + [2] * 7
    sampler = StepBatchSampler(labels, batch_size=8, seed=1, stream=STREAM_REFERENCE, pairs=True)
    for step in range(200):
        for index, _, index2, _ in sampler.batch(step):
            assert labels[index] == labels[index2]
            assert (index2 == index) == (labels[index] == 0)   # only the 1-image domain repeats


def test_sampler_batches_depend_only_on_the_step():
    labels = [0, 0, 1, 1, 1]
    batches = iter(StepBatchSampler(labels, 4, seed=5, stream=STREAM_SOURCE, start_step=3))
    fresh = StepBatchSampler(labels, 4, seed=5, stream=STREAM_SOURCE)
    assert next(batches) == fresh.batch(3) and next(batches) == fresh.batch(4)
    assert fresh.batch(3) != fresh.batch(4)
    assert StepBatchSampler(labels, 4, seed=6, stream=STREAM_SOURCE).batch(3) != fresh.batch(3)


# ---------------------------------------------------------------------------
# Training iterator
# ---------------------------------------------------------------------------

def test_train_batches_have_right_shapes_and_labels(tmp_path):
    cfg = make_cfg(make_tree(tmp_path, [2, 3, 4]), batch_size=8)
    for batch in take(cfg, 0, 3):
        for key in ['x_src', 'x_ref', 'x_ref2']:
            assert batch[key].shape == (8, 3, IMG_SIZE, IMG_SIZE) and batch[key].dtype == torch.float32
            assert batch[key].min() >= -1 and batch[key].max() <= 1
        assert batch.y_src.shape == batch.y_ref.shape == (8,)
        assert batch.y_src.dtype == batch.y_ref.dtype == torch.long
        assert torch.equal(domain_of(batch.x_src), batch.y_src)
        assert torch.equal(domain_of(batch.x_ref), batch.y_ref)
        assert torch.equal(domain_of(batch.x_ref2), batch.y_ref)
        assert not any(torch.equal(a, b) for a, b in zip(batch.x_ref, batch.x_ref2))


def test_resumed_iterator_matches_uninterrupted_run(tmp_path):
    root = make_tree(tmp_path, [2, 3, 5])
    uninterrupted = take(make_cfg(root, num_workers=0), 0, 5)
    assert not torch.equal(uninterrupted[3].x_src, uninterrupted[4].x_src)
    for num_workers in [0, 2]:
        cfg = make_cfg(root, num_workers=num_workers)
        assert_same_batches(take(cfg, 3, 2), uninterrupted[3:])
    assert_same_batches(take(make_cfg(root, num_workers=2), 0, 5), uninterrupted)


# ---------------------------------------------------------------------------
# Validation batch, eval datasets, single images
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('val_batch_size,expected', [(4, 4), (10, 7)])
def test_val_batch_is_fixed_with_equal_counts(tmp_path, val_batch_size, expected):
    cfg = make_cfg(None, make_tree(tmp_path, [2, 2, 3]), val_batch_size=val_batch_size)
    first, second = load_val_batch(cfg, 'cpu'), load_val_batch(cfg, 'cpu')
    assert_same_batches([first], [second])
    assert first.x_src.shape == first.x_ref.shape == (expected, 3, IMG_SIZE, IMG_SIZE)
    assert first.y_src.shape == first.y_ref.shape == (expected,)
    assert torch.equal(domain_of(first.x_src), first.y_src)
    assert torch.equal(domain_of(first.x_ref), first.y_ref)


def test_val_batch_checks_domains_and_images(tmp_path):
    root = make_tree(tmp_path, [2, 2])
    with pytest.raises(DataError, match='--num_domains'):
        load_val_batch(make_cfg(None, root), 'cpu')
    (tmp_path / 'd1' / 'bad.png').write_bytes(b'')
    with pytest.raises(DataError, match='bad.png'):
        load_val_batch(make_cfg(None, root, num_domains=2), 'cpu')
    with pytest.warns(UserWarning, match='bad.png'):
        batch = load_val_batch(make_cfg(None, root, num_domains=2, skip_bad_images=True), 'cpu')
    assert batch.x_src.shape[0] == 4


def test_eval_datasets_yield_tensor_domain_path(tmp_path):
    root = make_tree(tmp_path, [1, 2])
    x, y, path = domain_tree_dataset(root, IMG_SIZE, num_domains=2)[2]
    assert x.shape == (3, IMG_SIZE, IMG_SIZE) and y == 1 and path.endswith(os.path.join('d1', '001.png'))
    flat = folder_dataset(os.path.join(root, 'd1'), IMG_SIZE, domain=5)
    assert len(flat) == 2 and flat[0][1] == 5
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DataError, match='no images'):
        folder_dataset(str(tmp_path / 'empty'), IMG_SIZE)


def test_load_image_tensor(tmp_path):
    domain_image(2, 0, size=(50, 30)).save(tmp_path / 'one.png')
    x = load_image_tensor(str(tmp_path / 'one.png'), IMG_SIZE)
    assert x.shape == (1, 3, IMG_SIZE, IMG_SIZE) and domain_of(x).item() == 2
    (tmp_path / 'bad.jpg').write_bytes(b'garbage')
    with pytest.raises(DataError, match='bad.jpg'):
        load_image_tensor(str(tmp_path / 'bad.jpg'), IMG_SIZE)
    with pytest.raises(DataError, match='does not exist'):
        load_image_tensor(str(tmp_path / 'missing.jpg'), IMG_SIZE)
