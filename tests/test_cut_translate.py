"""--mode translate for the CUT family: released and our generators load strictly and translate test A into
CUT's result layout; the authors' test.sh lines parse."""
import json
import shlex

import numpy as np
import pytest
import torch
from PIL import Image
from test_cut_training import cut_flags, cut_layout  # noqa: F401  (fixture)

from core.cut.data import eval_transform
from core.cut.networks import ResnetGenerator, init_weights
from core.data.images import list_images, load_rgb
from main import main

HSRC_TEST_H2Z = '--dataroot ./datasets/horse2zebra --name h2z-best --CUT_mode CUT --phase test --num_test 120 --epoch best'
HSRC_TEST_CITY = ('--dataroot ./datasets/cityscapes_cut --name city-best --CUT_mode CUT --phase test --num_test 500 '
                  '--epoch best --direction BtoA')


def expected_png(G, path, size):
    """What translate writes for `path`: floor((G(x) + 1) / 2 * 255) as uint8 (the release's conversion)."""
    x = eval_transform(load_rgb(path), size, 'resize_and_crop')[None]
    with torch.no_grad():
        y = G.eval()(x)[0]
    return ((y.clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8).permute(1, 2, 0).numpy()


def test_a_trained_run_translates_test_a_with_its_own_flags(cut_layout, tmp_path):  # noqa: F811
    assert main(cut_flags(cut_layout, tmp_path)) == 0
    # no network flags: --ngf 4, --crop_size 32 and resnet_6blocks come from the run's config.json
    argv = ['--mode', 'translate', '--model', 'cut', '--dataroot', str(cut_layout), '--name', 'run',
            '--checkpoints_dir', str(tmp_path), '--results_dir', str(tmp_path / 'results'), '--num_test', '2']
    assert main(argv) == 0
    out = tmp_path / 'results' / 'run' / 'test_latest' / 'images'
    fakes = sorted(p.name for p in (out / 'fake_B').iterdir())
    assert fakes == sorted(p.name for p in (out / 'real_A').iterdir()) == ['0000.png', '0001.png']
    G = ResnetGenerator(ngf=4, n_blocks=6)
    G.load_state_dict(torch.load(tmp_path / 'run' / 'latest_net_G.pth', weights_only=True))
    first = list_images(str(cut_layout / 'testA'))[0]
    assert np.array_equal(np.array(Image.open(out / 'fake_B' / '0000.png')), expected_png(G, first, 32))


def test_a_released_generator_loads_strictly_and_translates(cut_layout, tmp_path):  # noqa: F811
    """A CUT / Hneg_SRC latest_net_G.pth (resnet_9blocks, default flags), saved on the CPU with 'module.' keys."""
    torch.manual_seed(0)
    G = init_weights(ResnetGenerator(), 'normal', 0.05)
    (tmp_path / 'h2z').mkdir()
    torch.save({'module.' + k: v for k, v in G.state_dict().items()}, tmp_path / 'h2z' / 'latest_net_G.pth')
    argv = ['--mode', 'translate', '--dataroot', str(cut_layout), '--name', 'h2z', '--checkpoints_dir', str(tmp_path),
            '--results_dir', str(tmp_path / 'results'), '--crop_size', '32', '--src', str(cut_layout / 'testA')]
    assert main(argv) == 0
    out = tmp_path / 'results' / 'h2z' / 'test_latest' / 'images' / 'fake_B'
    paths = list_images(str(cut_layout / 'testA'))
    assert len(list(out.iterdir())) == len(paths)   # --src: every image (--num_test limits --dataroot only)
    assert np.array_equal(np.array(Image.open(out / '0002.png')), expected_png(G, paths[2], 32))


def test_a_generator_of_other_flags_is_refused_naming_the_flags(cut_layout, tmp_path, capsys):  # noqa: F811
    (tmp_path / 'small').mkdir()
    torch.save(ResnetGenerator(ngf=8, n_blocks=6).state_dict(), tmp_path / 'small' / 'latest_net_G.pth')
    argv = ['--mode', 'translate', '--dataroot', str(cut_layout), '--name', 'small', '--checkpoints_dir',
            str(tmp_path), '--results_dir', str(tmp_path / 'results')]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert 'does not match the networks built from the current flags' in err and '--ngf' in err
    assert main(argv[:-4] + ['--checkpoints_dir', str(tmp_path / 'none')]) != 0
    assert 'latest_net_G.pth does not exist' in capsys.readouterr().err


@pytest.mark.parametrize('line, phase, epoch, num_test, direction', [
    (HSRC_TEST_H2Z, 'test', 'best', 120, 'AtoB'), (HSRC_TEST_CITY, 'test', 'best', 500, 'BtoA'),
    ('--dataroot ./datasets/horse2zebra --name h2z_pretrained', 'test', 'latest', 50, 'AtoB')])
def test_the_authors_test_lines_parse(line, phase, epoch, num_test, direction, capsys):
    assert main(['--mode', 'translate', *shlex.split(line), '--dry_run']) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert (cfg['model'], cfg['phase'], cfg['epoch'], cfg['num_test'], cfg['direction']) == \
        ('cut', phase, epoch, num_test, direction)


def test_eval_writes_the_standard_fid_of_the_test_translations(cut_layout, tmp_path, monkeypatch, capsys):  # noqa: F811
    from core.config import parse_config
    from core.cut.evaluate import evaluate
    from metrics.fid import FIDExtractor
    assert main(cut_flags(cut_layout, tmp_path)) == 0
    argv = ['--mode', 'eval', '--dataroot', str(cut_layout), '--name', 'run', '--checkpoints_dir', str(tmp_path),
            '--results_dir', str(tmp_path / 'results')]
    monkeypatch.setenv('STARGAN_WEIGHTS_DIR', str(tmp_path / 'no-weights'))
    assert main(argv) != 0 and 'bash download.sh metric-weights' in capsys.readouterr().err
    result = evaluate(parse_config(argv), extractor=FIDExtractor('standard', pretrained=False).eval())
    written = json.loads((tmp_path / 'results' / 'run' / 'test_latest' / 'fid_standard.json').read_text())
    assert written == result and written['FID'] >= 0 and written['protocol'].startswith('standard: TF-Inception')
    assert written['num_fake'] == written['num_real'] == len(list_images(str(cut_layout / 'testA')))
    assert written['real'] == str(cut_layout / 'testB')


def test_eval_seg_scores_needs_the_segmenter_and_scores_the_label_inputs(cut_layout, tmp_path, monkeypatch,  # noqa: F811
                                                                         capsys):
    """--seg_scores: refused at start-up without DRN-D-22 (naming the download), else seg_scores.json beside
    the FID, equal to metrics.cityscapes_seg on fake_B against real_A."""
    from core.config import parse_config
    from core.cut.evaluate import evaluate_segmentation
    from core.cut.translate import translate
    from metrics.cityscapes_seg import paired_images, segmentation_scores
    from metrics.drn import DRNSeg
    assert main(cut_flags(cut_layout, tmp_path)) == 0
    argv = ['--mode', 'eval', '--dataroot', str(cut_layout), '--name', 'run', '--checkpoints_dir', str(tmp_path),
            '--results_dir', str(tmp_path / 'results'), '--num_test', '2', '--seg_scores']
    monkeypatch.setenv('STARGAN_WEIGHTS_DIR', str(tmp_path / 'no-weights'))
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert '--seg_scores: missing weight file' in err and 'bash download.sh drn' in err and 'Traceback' not in err
    cfg = parse_config(argv)
    out_dir = translate(cfg)
    torch.manual_seed(0)
    model = DRNSeg().eval()
    scores = evaluate_segmentation(cfg, out_dir, 'cpu', model=model)
    written = json.loads((tmp_path / 'results' / 'run' / 'test_latest' / 'seg_scores.json').read_text())
    assert written == json.loads(json.dumps(scores)) and scores['num_images'] == 2
    direct = segmentation_scores(*paired_images(f'{out_dir}/fake_B', f'{out_dir}/real_A'), model=model)
    assert all(scores[k] == direct[k] and 0 <= scores[k] <= 100 for k in ('mIoU', 'pixAcc', 'classAcc'))
