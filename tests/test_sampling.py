"""--mode sample / translate / demo on a tiny model trained for a few steps on synthetic data."""
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import core.video
from conftest import tiny_flags, with_mode
from core.config import parse_config
from core.data.loader import EvalTransform
from core.data.images import list_images, load_rgb
from core.model import build_nets
from core.inference import draw_latents
from main import main
from test_video import read_video

S = 32   # image size of the tiny model


@pytest.fixture(scope='module')
def trained(seasons32, tmp_path_factory):
    """A tiny model trained for 2 steps; returns the flags that trained it (the run's sample folders: val)."""
    run = tmp_path_factory.mktemp('run')
    flags = tiny_flags(seasons32, run, '--total_iters', '2', '--sample_every', '0',
                       '--src_dir', str(seasons32 / 'val'), '--ref_dir', str(seasons32 / 'val'))
    assert main(flags) == 0
    return flags


def _sample_flags(trained, out, *extra):
    ckpt = trained[trained.index('--checkpoint_dir') + 1]
    return with_mode(trained, 'sample', '--checkpoint', os.path.join(ckpt, '000002_nets_ema.ckpt'),
                      '--result_dir', str(out), *extra)


def _translate_flags(trained, out, *extra):
    return with_mode(trained, 'translate', '--resume_iter', 'latest', '--result_dir', str(out), *extra)


def _size(path):
    with Image.open(path) as img:
        return img.size


def _refs_one_per_domain(seasons32, root):
    """A reference tree with the first val image of each domain: 4 references."""
    for domain in sorted(os.listdir(seasons32 / 'val')):
        (root / domain).mkdir(parents=True)
        shutil.copy(list_images(str(seasons32 / 'val' / domain))[0], root / domain)
    return root


def test_sample_writes_grids_and_videos(trained, seasons32, tmp_path):
    refs = _refs_one_per_domain(seasons32, tmp_path / 'refs')
    out = tmp_path / 'results'
    n_src, n_ref, n_out, T = 5, 4, 2, 4
    assert main(_sample_flags(trained, out, '--src_dir', str(seasons32 / 'val'), '--ref_dir', str(refs),
                              '--val_batch_size', str(n_src), '--num_outs_per_domain', str(n_out),
                              '--video_frames', str(T), '--no-labels')) == 0
    assert sorted(os.listdir(out)) == ['latent_psi_0.5.jpg', 'latent_psi_0.7.jpg', 'latent_psi_1.0.jpg',
                                       'reference.jpg', 'video_latent.mp4', 'video_ref.mp4']
    # reference.jpg: a header row, then one row per reference starting with that reference.
    assert _size(out / 'reference.jpg') == ((n_src + 1) * S, (n_ref + 1) * S)
    grid = np.asarray(Image.open(out / 'reference.jpg'), dtype=np.float32)
    ref_paths = [list_images(str(refs / d))[0] for d in sorted(os.listdir(refs))]
    for r, path in enumerate(ref_paths):
        expected = np.asarray(load_rgb(path).resize((S, S), Image.BILINEAR), dtype=np.float32)
        tile = grid[(r + 1) * S:(r + 2) * S, :S]
        assert np.abs(tile - expected).mean() < 8, r
        assert np.abs(tile - grid[(r + 1) * S:(r + 2) * S, S:2 * S]).mean() > 8   # not a copy of the source
    # latent grids: sources on top, then every domain x every z.
    for psi in ('0.5', '0.7', '1.0'):
        assert _size(out / f'latent_psi_{psi}.jpg') == (n_src * S, (1 + 4 * n_out) * S)
    # videos: one transition per consecutive pair of styles, even-sized H.264 frames.
    # T = 4 frames per transition, then the last frame held round(4 * 10 / 31) = 1 more time
    frames, meta = read_video(out / 'video_ref.mp4')
    assert len(frames) == (n_ref - 1) * T + 1
    assert meta['size'] == (S + S // 8 + n_src * S, 2 * S) and meta['codec'] == 'h264'
    frames, meta = read_video(out / 'video_latent.mp4')
    assert len(frames) == (4 * n_out - 1) * T + 1 and meta['size'] == (n_src * S, 2 * S)


def test_sample_follows_the_run_unless_flags_say_otherwise(trained, tmp_path, capsys):
    """Only --checkpoint: sources per grid, styles per domain and the image folders are the run's."""
    ckpt = os.path.join(trained[trained.index('--checkpoint_dir') + 1], '000002_nets_ema.ckpt')
    base = ['--mode', 'sample', '--checkpoint', ckpt, '--num_workers', '0', '--video_frames', '2', '--no-labels']
    assert main(base + ['--result_dir', str(tmp_path / 'run')]) == 0
    out = capsys.readouterr().out
    assert 'val_batch_size=3, num_outs_per_domain=1' in out
    assert 'from the run: val_batch_size, num_outs_per_domain, src_dir, ref_dir' in out
    # 3 sources (the run's --val_batch_size), 1 + 4 domains x 1 style (its --num_outs_per_domain)
    assert _size(tmp_path / 'run' / 'latent_psi_1.0.jpg') == (3 * S, 5 * S)
    assert main(base + ['--result_dir', str(tmp_path / 'flag'), '--val_batch_size', '2']) == 0
    out = capsys.readouterr().out
    assert 'val_batch_size=2' in out and 'from flags: val_batch_size' in out
    assert _size(tmp_path / 'flag' / 'latent_psi_1.0.jpg') == (2 * S, 5 * S)


def test_labelled_grids_add_margins_and_keep_the_images(trained, tmp_path):
    for name, flag in (('plain', '--no-labels'), ('labelled', '--labels')):
        assert main(_sample_flags(trained, tmp_path / name, '--video_frames', '2', flag)) == 0
    for file in ('latent_psi_0.5.jpg', 'reference.jpg'):
        plain = np.asarray(Image.open(tmp_path / 'plain' / file), dtype=np.float32)
        labelled = np.asarray(Image.open(tmp_path / 'labelled' / file), dtype=np.float32)
        top, left = labelled.shape[0] - plain.shape[0], labelled.shape[1] - plain.shape[1]
        assert top > 0 and left > 0
        assert np.abs(labelled[top:, left:] - plain).mean() < 4   # the same images (JPEG noise aside)
        assert labelled[:top].min() < 100 and labelled[top:, :left].min() < 100   # text in both margins


def test_label_grid_draws_only_in_the_margins():
    from core.visualize import label_grid, unit_to_uint8
    grid = torch.rand(3, 2 * S, 3 * S)
    labelled = label_grid(grid, S, ['input', 'winter z0'], ['autumn', 'spring', 'summer'], 'psi 0.5')
    top, left = labelled.shape[1] - grid.shape[1], labelled.shape[2] - grid.shape[2]
    assert torch.equal(unit_to_uint8(labelled[:, top:, left:]), unit_to_uint8(grid.clone()))
    assert labelled[:, :top].min() < 0.5 and labelled[:, top:, :left].min() < 0.5   # text drawn
    blank = label_grid(grid, S, ['', ''], ['', '', ''], '')
    top, left = blank.shape[1] - grid.shape[1], blank.shape[2] - grid.shape[2]
    assert top % 16 == 0 and left % 16 == 0 and left > 0
    assert blank[:, :top].min() == 1 and blank[:, :, :left].min() == 1   # white margins, nothing drawn


def test_column_labels_wider_than_a_tile_go_on_two_staggered_lines():
    from core.visualize import label_grid, unit_to_uint8
    names = ['winter', 'summer', 'autumn', 'spring', 'winter']
    wide = label_grid(torch.rand(3, 64, 5 * 64), 64, ['input', 'z0'], names, 'psi 1.0')
    narrow_grid = torch.rand(3, 64, 5 * 32)
    narrow = label_grid(narrow_grid, 32, ['input', 'z0'], names, 'psi 1.0')
    wide_top, top = wide.shape[1] - 64, narrow.shape[1] - 64
    left = narrow.shape[2] - narrow_grid.shape[2]
    assert top > wide_top                                    # a second line of column labels
    assert torch.equal(unit_to_uint8(narrow[:, top:, left:]), unit_to_uint8(narrow_grid.clone()))
    first, second = narrow[:, :top // 2, left:], narrow[:, top // 2:top, left:]
    ink = lambda band: (band.min(0).values < 0.5).any(0)     # columns of pixels with text
    assert ink(first)[:32].any() and not ink(second)[:32].any()        # column 0's label on line 1
    assert ink(second)[32:64].any()                                    # column 1's label on line 2
    assert ink(first).nonzero().max() < narrow_grid.shape[2]           # nothing runs off the right edge
    # every label is whole (none cut to 'wi..'): the staggered labels hold as much ink as unstaggered wide ones
    assert abs(int(ink(first).sum() + ink(second).sum()) - int(ink(wide[:, :wide_top, -5 * 64:]).sum())) <= 6


def test_saved_pixels_round_half_up_as_torchvision_save_image(tmp_path):
    import torchvision.utils as vutils
    from core.visualize import save_grid
    levels = torch.arange(0, 511, dtype=torch.float32) / 2        # 0, 0.5, 1, ..., 255: every half level
    grid = (levels / 255).view(1, 1, -1).expand(3, 2, -1).contiguous()
    assert (grid.mul(255)[0, 0, 5]).item() == 2.5                 # a value exactly at .5 after scaling
    save_grid(grid.clone(), str(tmp_path / 'ours.png'))
    vutils.save_image(grid.clone(), str(tmp_path / 'torchvision.png'))
    ours = np.asarray(Image.open(tmp_path / 'ours.png'))
    assert np.array_equal(ours, np.asarray(Image.open(tmp_path / 'torchvision.png')))
    assert ours[0, 5, 0] == 3                                     # half up (half to even would give 2)


def test_sample_is_deterministic_per_seed(trained, seasons32, tmp_path):
    common = ('--src_dir', str(seasons32 / 'val'), '--ref_dir', str(seasons32 / 'val'), '--video_frames', '2')
    for name, seed in (('a', '5'), ('b', '5'), ('c', '6')):
        assert main(_sample_flags(trained, tmp_path / name, *common, '--seed', seed)) == 0
    for file in ('latent_psi_0.7.jpg', 'reference.jpg'):
        assert (tmp_path / 'a' / file).read_bytes() == (tmp_path / 'b' / file).read_bytes()
    assert np.array_equal(read_video(tmp_path / 'a' / 'video_latent.mp4')[0],
                          read_video(tmp_path / 'b' / 'video_latent.mp4')[0])
    assert (tmp_path / 'a' / 'latent_psi_0.7.jpg').read_bytes() != (tmp_path / 'c' / 'latent_psi_0.7.jpg').read_bytes()
    # the reference grid involves no randomness
    assert (tmp_path / 'a' / 'reference.jpg').read_bytes() == (tmp_path / 'c' / 'reference.jpg').read_bytes()


def test_translate_latent_styles_names_sizes_and_seed(trained, seasons32, tmp_path):
    src = seasons32 / 'val'
    inputs = list_images(str(src))
    for name, seed in (('a', '1'), ('b', '1'), ('c', '2')):
        assert main(_translate_flags(trained, tmp_path / name, '--src', str(src), '--trg_domain', 'winter',
                                     '--num_styles', '3', '--seed', seed)) == 0
    written = sorted(str(p.relative_to(tmp_path / 'a')) for p in (tmp_path / 'a').rglob('*.png'))
    expected = sorted(os.path.splitext(os.path.relpath(p, src))[0] + f'_to_winter_z{k:02d}.png'
                      for p in inputs for k in range(3))
    assert written == expected
    for rel in written:
        assert _size(tmp_path / 'a' / rel) == (S, S)
        assert (tmp_path / 'a' / rel).read_bytes() == (tmp_path / 'b' / rel).read_bytes()
    assert any((tmp_path / 'a' / rel).read_bytes() != (tmp_path / 'c' / rel).read_bytes() for rel in written)
    # different styles give different images
    one = written[0].replace('_z00', '_z{:02d}')
    assert len({(tmp_path / 'a' / one.format(k)).read_bytes() for k in range(3)}) == 3


def test_translate_by_id_with_psi_single_image(trained, seasons32, tmp_path):
    image = list_images(str(seasons32 / 'val' / 'autumn'))[0]
    stem = os.path.splitext(os.path.basename(image))[0]
    assert main(_translate_flags(trained, tmp_path, '--src', image, '--trg_domain', '1', '--psi', '0.5')) == 0
    assert os.listdir(tmp_path) == [f'{stem}_to_spring_z00_psi0.5.png']


def test_translate_with_reference_image_and_folder(trained, seasons32, tmp_path):
    src = list_images(str(seasons32 / 'val' / 'autumn'))[0]
    stem = os.path.splitext(os.path.basename(src))[0]
    ref = list_images(str(seasons32 / 'val' / 'winter'))[1]
    ref_stem = os.path.splitext(os.path.basename(ref))[0]
    # the reference's domain is read from its folder name
    assert main(_translate_flags(trained, tmp_path / 'one', '--src', src, '--ref', ref)) == 0
    assert os.listdir(tmp_path / 'one') == [f'{stem}_to_winter_ref_{ref_stem}.png']
    assert main(_translate_flags(trained, tmp_path / 'all', '--src', src, '--ref', str(seasons32 / 'val' / 'summer'),
                                 '--trg_domain', 'summer')) == 0
    refs = list_images(str(seasons32 / 'val' / 'summer'))
    assert sorted(os.listdir(tmp_path / 'all')) == sorted(
        f'{stem}_to_summer_ref_{os.path.splitext(os.path.basename(r))[0]}.png' for r in refs)


def test_translate_keep_size_and_one_image_video(trained, seasons32, tmp_path):
    """--keep_size: outputs at the input's own size (rounded to the generator's factor 2);
    --video: one MP4 per input, the input above its translation, walking through the styles."""
    photo = tmp_path / 'in' / 'photo.png'
    photo.parent.mkdir()
    load_rgb(list_images(str(seasons32 / 'val' / 'autumn'))[0]).resize((81, 40)).save(photo)
    assert main(_translate_flags(trained, tmp_path / 'png', '--src', str(photo), '--trg_domain', 'winter',
                                 '--keep_size')) == 0
    assert _size(tmp_path / 'png' / 'photo_to_winter_z00.png') == (82, 40)
    assert main(_translate_flags(trained, tmp_path / 'mp4', '--src', str(photo), '--trg_domain', 'winter',
                                 '--num_styles', '3', '--psi', '0.7', '--video', '--video_frames', '3')) == 0
    assert os.listdir(tmp_path / 'mp4') == ['photo_to_winter_latent_psi0.7.mp4']
    frames, meta = read_video(tmp_path / 'mp4' / 'photo_to_winter_latent_psi0.7.mp4')
    assert len(frames) == 2 * 3 + 1 and meta['size'] == (S, 2 * S)
    refs = seasons32 / 'val' / 'summer'
    assert main(_translate_flags(trained, tmp_path / 'ref', '--src', str(photo), '--ref', str(refs), '--video',
                                 '--video_frames', '2', '--keep_size')) == 0
    frames, meta = read_video(tmp_path / 'ref' / 'photo_to_summer_ref.mp4')
    assert len(frames) == 2 * (len(list_images(str(refs))) - 1) + 1 and meta['size'] == (82, 80)


def test_translate_video_needs_two_styles(trained, seasons32, tmp_path, capsys):
    image = list_images(str(seasons32 / 'val' / 'autumn'))[0]
    _fails(_translate_flags(trained, tmp_path / 'out', '--src', image, '--trg_domain', '0', '--video'), capsys,
           '--video', '--num_styles 2')
    assert not (tmp_path / 'out').exists()


def test_translate_style_k_is_the_grids_row_k(trained):
    cfg = parse_config(_translate_flags(trained, 'unused', '--src', '.', '--trg_domain', '0'))
    assert torch.equal(draw_latents(cfg.seed, 2, 8), draw_latents(cfg.seed, 5, 8)[:2])


def test_official_layout_checkpoint_loads_with_flags(seasons32, tmp_path, capsys):
    """A plain dict of state_dicts without config (the official files) loads with architecture flags."""
    arch = ['--img_size', '32', '--num_domains', '3', '--base_dim', '8', '--max_conv_dim', '16',
            '--hidden_dim', '32', '--style_dim', '16', '--latent_dim', '8']
    flags = ['--mode', 'translate', *arch, '--num_workers', '0', '--val_batch_size', '2']
    cfg = parse_config(flags)
    torch.manual_seed(0)
    nets, _ = build_nets(cfg)
    path = tmp_path / '100000_nets_ema.ckpt'
    torch.save({name: nets[name].state_dict() for name in ('generator', 'mapping_network', 'style_encoder')}, path)

    image = list_images(str(seasons32 / 'val' / 'spring'))[0]
    out = tmp_path / 'out'
    assert main(flags + ['--checkpoint', str(path), '--src', image, '--trg_domain', '2',
                         '--result_dir', str(out)]) == 0
    stem = os.path.splitext(os.path.basename(image))[0]
    written = out / f'{stem}_to_domain2_z00.png'
    # the output is the loaded networks' translation, not that of freshly initialised ones
    x = EvalTransform(32)(load_rgb(image)).unsqueeze(0)
    with torch.no_grad():
        s = nets.mapping_network(draw_latents(cfg.seed, 1, cfg.latent_dim)[:, 0], torch.tensor([2]))
        expected = ((nets.generator(x, s)[0] + 1) / 2).clamp(0, 1).mul(255).round().permute(1, 2, 0).numpy()
    got = np.asarray(Image.open(written), dtype=np.float32)
    assert np.abs(got - expected).max() <= 1

    capsys.readouterr()
    assert main(flags + ['--checkpoint', str(path), '--src', image, '--trg_domain', 'winter',
                         '--result_dir', str(out)]) == 1
    assert 'stores no domain names' in capsys.readouterr().err
    bad = [v if v != '16' else '12' for v in flags]   # --style_dim/--max_conv_dim 12: shapes differ
    assert main(bad + ['--checkpoint', str(path), '--src', image, '--trg_domain', '0',
                       '--result_dir', str(tmp_path / 'bad')]) == 1
    err = capsys.readouterr().err
    assert 'does not match the networks built from the current flags' in err and 'stores no config' in err
    assert 'Traceback' not in err and not (tmp_path / 'bad').exists()


def _fails(argv, capsys, *phrases):
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'Traceback' not in err
    for phrase in phrases:
        assert phrase in err, (phrase, err)


def _broken_inputs(seasons32, tmp_path):
    """A copy of one val domain with an undecodable 'image' in it."""
    broken = tmp_path / 'inputs'
    shutil.copytree(seasons32 / 'val' / 'autumn', broken)
    (broken / 'broken.jpg').write_bytes(b'not an image')
    return str(broken)


def _three_domains(seasons32, tmp_path, *extra):
    """A reference tree with three of the model's four domains, plus the `extra` (folder, domain) copies."""
    three = tmp_path / 'three'
    for domain in ('autumn', 'spring', 'summer'):
        shutil.copytree(seasons32 / 'val' / domain, three / domain)
    for folder, domain in extra:
        shutil.copytree(seasons32 / 'val' / domain, three / folder)
    return str(three)


# Bad input of sample and translate: argv(trained flags, data, tmp_path, output folder, source folder) and the
# phrases of its one-line message.
BAD_INPUTS = {
    'unknown domain name': (
        lambda t, d, tmp, out, src: _translate_flags(t, out, '--src', src, '--trg_domain', 'monsoon'),
        ("'monsoon' is not a domain", 'autumn (0), spring (1), summer (2), winter (3)')),
    'domain index out of range': (
        lambda t, d, tmp, out, src: _translate_flags(t, out, '--src', src, '--trg_domain', '4'),
        ('out of range',)),
    'reference folder is not a domain': (
        lambda t, d, tmp, out, src: _translate_flags(t, out, '--src', src, '--ref', src),
        ('no folder above it is named after a domain', '--trg_domain')),
    'psi with a reference': (
        lambda t, d, tmp, out, src: _translate_flags(t, out, '--src', src, '--ref', src, '--trg_domain', '0',
                                                     '--psi', '0.5'),
        ('--psi',)),
    'no source': (
        lambda t, d, tmp, out, src: _translate_flags(t, out, '--trg_domain', '0'),
        ('--src',)),
    'missing source file': (
        lambda t, d, tmp, out, src: _translate_flags(t, out, '--src', str(tmp / 'nope.jpg'), '--trg_domain', '0'),
        ('nope.jpg',)),
    'undecodable source image': (
        lambda t, d, tmp, out, src: _translate_flags(t, out, '--src', _broken_inputs(d, tmp), '--trg_domain', '0'),
        ('broken.jpg', '--skip_bad_images')),
    'missing checkpoint': (
        lambda t, d, tmp, out, src: with_mode(t, 'translate', '--resume_iter', '1', '--src', src, '--trg_domain', '0',
                                               '--result_dir', str(out)),
        ('checkpoint file not found', '--resume_iter')),
    'reference folders miss a domain': (
        lambda t, d, tmp, out, src: _sample_flags(t, out, '--src_dir', src, '--ref_dir', _three_domains(d, tmp)),
        ('--ref_dir', '3 domain folder(s)', '4 domains')),
    'reference folder of another name': (
        lambda t, d, tmp, out, src: _sample_flags(t, out, '--src_dir', src,
                                                  '--ref_dir', _three_domains(d, tmp, ('snow', 'winter'))),
        ('--ref_dir', 'autumn, spring, summer, winter')),
    'missing source folder': (
        lambda t, d, tmp, out, src: _sample_flags(t, out, '--src_dir', str(tmp / 'missing'), '--ref_dir', src),
        ('--src_dir',)),
    'video of one frame': (
        lambda t, d, tmp, out, src: _sample_flags(t, out, '--src_dir', src, '--ref_dir', src, '--video_frames', '1'),
        ('--video_frames',)),
}


@pytest.mark.parametrize('case', BAD_INPUTS)
def test_bad_input_one_clear_message_and_nothing_written(case, trained, seasons32, tmp_path, capsys):
    argv, phrases = BAD_INPUTS[case]
    out = tmp_path / 'out'
    _fails(argv(trained, seasons32, tmp_path, out, str(seasons32 / 'val')), capsys, *phrases)
    assert not out.exists()


def test_failed_video_leaves_no_partial_file(trained, seasons32, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(core.video, 'ffmpeg_executable', lambda: '/bin/false')
    out = tmp_path / 'out'
    _fails(_sample_flags(trained, out, '--src_dir', str(seasons32 / 'val'), '--ref_dir', str(seasons32 / 'val'),
                         '--video_frames', '2'), capsys, 'video_ref.mp4')
    assert 'reference.jpg' in os.listdir(out)
    assert not [f for f in os.listdir(out) if f.endswith('.mp4') or f.startswith('.')]


def test_demo_ends_with_sample_outputs(tmp_path, capsys):
    """--mode demo trains (2 steps here) and writes every sample output into the preset's result_dir."""
    data = tmp_path / 'data'
    argv = ['--mode', 'demo', '--total_iters', '2', '--ds_iter', '2', '--sample_every', '0', '--save_every', '2',
            '--print_every', '0', '--num_outs_per_domain', '1', '--val_batch_size', '4', '--video_frames', '2',
            '--train_img_dir', str(data / 'train'), '--val_img_dir', str(data / 'val'),
            '--src_dir', str(data / 'val'), '--ref_dir', str(data / 'val'), '--no-labels',
            '--checkpoint_dir', str(tmp_path / 'ckpt'), '--sample_dir', str(tmp_path / 'samples'),
            '--result_dir', str(tmp_path / 'results')]
    assert main(argv) == 0
    assert sorted(os.listdir(tmp_path / 'results')) == [
        'latent_psi_0.5.jpg', 'latent_psi_0.7.jpg', 'latent_psi_1.0.jpg', 'reference.jpg',
        'video_latent.mp4', 'video_ref.mp4']
    assert _size(tmp_path / 'results' / 'reference.jpg') == (5 * 32, 5 * 32)   # the demo preset is 32 px
    assert 'sampling took' in capsys.readouterr().out


def test_workers_capped_at_the_cores_without_the_dataloader_warning(trained, seasons32, tmp_path, capsys,
                                                                     monkeypatch):
    import warnings
    from core.utils.device import default_threads, usable_cores
    monkeypatch.setenv('OMP_NUM_THREADS', '1')   # keep the suite's single thread
    with warnings.catch_warnings():
        warnings.simplefilter('error')   # PyTorch's "will create N worker processes" would fail the run
        assert main(_translate_flags(trained, tmp_path, '--src', str(seasons32 / 'val' / 'autumn'),
                                     '--trg_domain', 'winter', '--num_workers', '64')) == 0
    out = capsys.readouterr().out
    assert f'{usable_cores()} data-loader workers (--num_workers 64 capped at the cores)' in out
    assert default_threads(2) == 1 and default_threads(8) == 4 and default_threads(1) == 1


def test_make_assets_writes_the_readme_figures_from_a_checkpoint(trained, tmp_path, monkeypatch):
    """bench/make_assets.py: representative images, two labelled grids and an enlarged GIF, from one command."""
    from bench import make_assets
    monkeypatch.setattr(make_assets, 'PER_DOMAIN', 1)
    monkeypatch.setattr(make_assets, 'IMG_SIZE', S)
    monkeypatch.setattr(make_assets, 'GIF_FRAMES', 2)
    ckpt = trained[trained.index('--checkpoint_dir') + 1]
    flags = [a for a in _sample_flags(trained, tmp_path / 'unused') if a != 'sample' and a != '--mode']
    assets = tmp_path / 'assets'
    assert make_assets.main(['--out', str(assets)] + flags) == 0
    assert sorted(p.name for p in assets.iterdir()) == ['demo_latent.jpg', 'demo_reference.jpg', 'demo_video.gif',
                                                        'representative']
    assert len(list_images(str(assets / 'representative' / 'synthetic-weather' / 'ref' / 'snowy'))) == 1
    ref_w, ref_h = _size(assets / 'demo_reference.jpg')
    assert ref_w > 5 * S and ref_h > 5 * S          # 4 val sources + the reference column, plus label margins
    with Image.open(assets / 'demo_video.gif') as gif:
        assert gif.size[0] >= make_assets.GIF_MIN_WIDTH and gif.n_frames > 2
        assert gif.size[0] % S == 0 and gif.size[1] % S == 0   # tiles of S pixels, enlarged by whole pixels
    assert make_assets.folder_size(str(assets)) < 2e6
    assert os.path.isfile(os.path.join(ckpt, '000002_nets_ema.ckpt'))
