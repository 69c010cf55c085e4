"""The Cityscapes label->photo scores: palette mapping, confusion-matrix scores on hand-computed cases, the
released scripts' quirks, the DRN-D-22 network against its release key list, its weight loading, and the
command line on a few tiny PNGs with random weights, and the download targets."""
import os
import re
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, assert_close_scaled
from core.utils import weights as W
from core.utils.errors import UserError
from metrics import cityscapes_seg as cs
from metrics.drn import RELEASE_KEYS, DRNSeg, bilinear_up_kernel

CAR, SKY, ROAD, TRUCK, PERSON, BICYCLE, FENCE, MOTORCYCLE = 13, 10, 0, 14, 11, 18, 4, 17


# ----------------------------------------------------------------------------------------------
# Colours -> ids
# ----------------------------------------------------------------------------------------------

def test_pure_palette_colours_map_to_their_ids_and_black_is_ignored():
    assert cs.colors_to_ids(cs.PALETTE).tolist() == list(range(20))
    assert cs.IGNORE_ID == 19 and cs.PALETTE[19].tolist() == [0, 0, 0]
    assert cs.PALETTE[CAR].tolist() == [0, 0, 142] and cs.CLASSES[CAR] == 'car'


def test_noisy_colours_map_to_the_nearest_palette_colour():
    rng = np.random.default_rng(0)
    # JPEG-like wobble: L1 at most 9, under half the smallest gap between two palette colours (bus-train, 20)
    noise = rng.integers(-3, 4, size=(20, 50, 3))
    noisy = np.clip(cs.PALETTE[:, None].astype(int) + noise, 0, 255).astype(np.uint8)   # (20, 50, 3)
    assert (cs.colors_to_ids(noisy) == np.arange(20)[:, None]).all()
    # L1 nearest: (60, 60, 60) is 30 from building (70, 70, 70) and 180 from black
    assert cs.colors_to_ids(np.array([[60, 60, 60], [8, 4, 2], [0, 0, 130]], np.uint8)).tolist() == [2, 19, CAR]


def test_a_bgr_read_scrambles_the_classes_as_the_reference_reports():
    """get_Acc.py reads BGR against the RGB palette: car -> bicycle, sky -> fence, wall -> road, truck -> ignore,
    person -> motorcycle (the reference's numpy check)."""
    swapped = cs.BGR_READ_ID
    assert [swapped[c] for c in (CAR, SKY, 3, TRUCK, PERSON)] == [BICYCLE, FENCE, ROAD, cs.IGNORE_ID, MOTORCYCLE]
    assert swapped[ROAD] == ROAD   # (128, 64, 128) reads the same both ways


# ----------------------------------------------------------------------------------------------
# Confusion matrix and scores, by hand
# ----------------------------------------------------------------------------------------------

LABEL = np.array([[0, 0, 1], [1, 19, 2]])
PRED = np.array([[0, 1, 1], [2, 0, 2]])
# Counted pixels (label, pred): (0,0) (0,1) (1,1) (1,2) (2,2); the ignored label pixel is left out; class 3
# is in neither. TP = (1, 1, 1, 0), label counts (2, 2, 1, 0), prediction counts (1, 2, 2, 0).


def test_confusion_matrix_counts_labelled_pixels_only():
    cm = cs.confusion_matrix(LABEL, PRED, num_classes=4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match='sizes differ'):
        cs.confusion_matrix(LABEL, PRED[:, :2])


def test_scores_against_hand_computed_values():
    scores = cs.scores_from_confusion(cs.confusion_matrix(LABEL, PRED, num_classes=4))
    # IoU = 1/2, 1/3, 1/2 (class 3 absent from both: not counted); pixAcc 3/5; classAcc mean(1/2, 1/2, 1)
    expected = {'mIoU': 100 * (1 / 2 + 1 / 3 + 1 / 2) / 3, 'pixAcc': 100 * 3 / 5, 'classAcc': 100 * 2 / 3}
    for key, value in expected.items():
        assert_close_scaled(scores[key], value, rel=1e-12, msg=key)
    iou = cs.class_iou(cs.confusion_matrix(LABEL, PRED, num_classes=4))
    assert np.isnan(iou[3]) and not np.isnan(iou[:3]).any()


def test_a_class_only_predicted_counts_in_the_miou_but_not_in_the_class_accuracy():
    label, pred = np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1])
    scores = cs.scores_from_confusion(cs.confusion_matrix(label, pred, num_classes=3))
    # IoU = 1/2, 1, 0 (class 2: one false positive); classAcc over the labelled classes 0 and 1: (1/2 + 1) / 2
    assert_close_scaled(scores['mIoU'], 100 * 1.5 / 3, rel=1e-12)
    assert_close_scaled(scores['classAcc'], 100 * 0.75, rel=1e-12)
    assert_close_scaled(scores['pixAcc'], 100 * 3 / 4, rel=1e-12)


def test_release_arithmetic_uses_its_constant_denominators():
    cm = np.zeros((19, 19), np.int64)
    cm[:4, :4] = cs.confusion_matrix(LABEL, PRED, num_classes=4)
    released = cs.release_scores(cm, cm)
    assert_close_scaled(released['pixAcc'], 100 * 3 / (128 * 256 * 500), rel=1e-12)
    assert_close_scaled(released['classAcc'], 100 * (1 / 2 + 1 / 2 + 1) / 19, rel=1e-12)
    assert_close_scaled(released['mIoU'], cs.scores_from_confusion(cm)['mIoU'], rel=1e-12)


# ----------------------------------------------------------------------------------------------
# Reading label maps
# ----------------------------------------------------------------------------------------------

def _png(path, rgb):
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(path)
    return str(path)


def test_label_maps_are_read_in_rgb_and_resized_with_nearest(tmp_path):
    rows = np.where(np.arange(256) % 2 == 0, CAR, SKY)   # alternate rows: car, sky
    path = _png(tmp_path / 'stripes.png', cs.PALETTE[np.repeat(rows[:, None], 256, 1)])   # (256, 256, 3)
    ids = cs.label_ids(path)
    assert ids.shape == cs.SEG_SIZE
    assert (ids == SKY).all()   # Pillow's nearest samples pixel centres: rows 1, 3, 5, ...
    map_ids, acc_ids = cs.label_ids(path, release_quirks=True)
    assert (acc_ids == BICYCLE).all()   # OpenCV's nearest takes rows 0, 2, 4 (car), read as BGR: bicycle
    uniform = _png(tmp_path / 'car.png', np.broadcast_to(cs.PALETTE[CAR], (64, 64, 3)))
    map_ids, acc_ids = cs.label_ids(uniform, release_quirks=True)
    assert (map_ids == CAR).all() and (acc_ids == BICYCLE).all()   # get_mAP.py reads RGB, get_Acc.py BGR
    assert (cs.label_ids(uniform) == CAR).all()


def test_photos_are_normalised_with_the_cityscapes_statistics(tmp_path):
    path = _png(tmp_path / 'grey.png', np.full((20, 30, 3), 51))
    x = cs.photo_tensor(path)
    assert x.shape == (3, 128, 256)
    expected = (0.2 - torch.tensor(cs.INFO_MEAN)) / torch.tensor(cs.INFO_STD)   # 51 / 255 = 0.2
    assert_close_scaled(x.mean((1, 2)), expected, rel=1e-5)


def test_files_are_paired_by_name(tmp_path):
    fake, real = tmp_path / 'fake_B', tmp_path / 'real_A'
    fake.mkdir(), real.mkdir()
    for name in ('b', 'a'):
        _png(fake / f'{name}.png', np.zeros((4, 4, 3)))
        _png(real / f'{name}.jpg', np.zeros((4, 4, 3)))
    fakes, labels = cs.paired_images(str(fake), str(real))
    assert [p[-5:] for p in fakes] == ['a.png', 'b.png'] and [p[-5:] for p in labels] == ['a.jpg', 'b.jpg']
    _png(fake / 'c.png', np.zeros((4, 4, 3)))
    with pytest.raises(UserError, match='1 without a partner, e.g. c'):
        cs.paired_images(str(fake), str(real))


# ----------------------------------------------------------------------------------------------
# DRN-D-22
# ----------------------------------------------------------------------------------------------

def test_drn_state_dict_matches_the_release_key_list():
    own = {k: tuple(v.shape) for k, v in DRNSeg().state_dict().items() if not k.endswith('num_batches_tracked')}
    assert list(own.items()) == list(RELEASE_KEYS)
    # spot checks written from the architecture table, independent of both listings
    assert own['base.0.0.weight'] == (16, 3, 7, 7) and own['base.2.0.weight'] == (32, 16, 3, 3)
    assert own['base.3.0.downsample.0.weight'] == (64, 32, 1, 1) and 'base.3.1.downsample.0.weight' not in own
    assert own['base.6.1.conv2.weight'] == (512, 512, 3, 3) and own['base.8.1.running_var'] == (512,)
    assert own['seg.weight'] == (19, 512, 1, 1) and own['up.weight'] == (19, 1, 16, 16)
    assert len(RELEASE_KEYS) == 128


def test_drn_output_stride_and_size():
    torch.manual_seed(0)
    model = DRNSeg().eval()
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        assert model.base(x).shape == (1, 512, 4, 8)   # output stride 8
        assert model(x).shape == (1, 19, 32, 64)
        # the fixed up-sampling interpolates: a constant map stays constant away from the border
        up = model.up(torch.ones(1, 19, 4, 8))
    assert_close_scaled(up[..., 8:-8, 8:-8], 1.0, rel=1e-6)
    assert model.base[6][0].conv1.dilation == (4, 4) and model.base[7][0].dilation == (2, 2)
    assert torch.equal(model.up.weight[3, 0], bilinear_up_kernel(16)) and not model.up.weight.requires_grad


# ----------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def release_like_state():
    """A random DRNSeg state dict without num_batches_tracked, as the 2017 release is saved (built once)."""
    torch.manual_seed(1)
    model = DRNSeg()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 2)
    return {k: v for k, v in model.state_dict().items() if not k.endswith('num_batches_tracked')}


def test_weights_round_trip_through_the_cache(tmp_path, monkeypatch, release_like_state):
    monkeypatch.setenv('STARGAN_WEIGHTS_DIR', str(tmp_path))
    state = release_like_state
    torch.save(state, tmp_path / 'drn_d_22_cityscapes.pth')
    loaded = cs.build_segmenter().state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    # DRN's training checkpoints: {'state_dict': ...} with DataParallel's 'module.' prefix
    torch.save({'epoch': 1, 'state_dict': {'module.' + k: v for k, v in state.items()}}, tmp_path / 'ckpt.pth.tar')
    loaded = cs.build_segmenter(str(tmp_path / 'ckpt.pth.tar')).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_missing_weights_name_the_download_command(tmp_path, monkeypatch):
    monkeypatch.setenv('STARGAN_WEIGHTS_DIR', str(tmp_path))
    with pytest.raises(UserError) as err:
        cs.build_segmenter()
    message = str(err.value)
    assert '\n' not in message
    assert 'drn_d_22_cityscapes.pth' in message and 'bash download.sh drn' in message
    assert W.WEIGHTS[cs.WEIGHT_NAME].target == 'drn'


def test_a_file_of_another_network_is_rejected(tmp_path, monkeypatch, release_like_state):
    monkeypatch.setenv('STARGAN_WEIGHTS_DIR', str(tmp_path))
    state = dict(release_like_state)
    state['seg.weight'] = torch.zeros(20, 512, 1, 1)   # a 20-class head
    del state['up.weight']
    torch.save(state, tmp_path / 'drn_d_22_cityscapes.pth')
    with pytest.raises(UserError) as err:
        cs.build_segmenter()
    message = str(err.value)
    assert 'does not fit the drn_d_22_cityscapes network' in message and 'bash download.sh drn' in message
    assert 'missing: up.weight' in message and 'wrong shape: seg.weight (20, 512, 1, 1) vs (19, 512, 1, 1)' in message
    torch.save([1, 2, 3], tmp_path / 'drn_d_22_cityscapes.pth')
    with pytest.raises(UserError, match='does not hold a state dict'):
        cs.build_segmenter()


# ----------------------------------------------------------------------------------------------
# The command line, end to end
# ----------------------------------------------------------------------------------------------

def _printed(text):
    match = re.search(r'mIoU (\S+)  pixAcc (\S+)  classAcc (\S+)', text)
    return dict(zip(('mIoU', 'pixAcc', 'classAcc'), map(float, match.groups())))


def test_command_line_prints_scores_consistent_with_the_pure_functions(tmp_path, capsys, monkeypatch,
                                                                     release_like_state):
    fake, real = tmp_path / 'fake_B', tmp_path / 'real_A'
    fake.mkdir(), real.mkdir()
    rng = np.random.default_rng(3)
    for i in range(2):
        blocks = rng.choice([ROAD, CAR, SKY, TRUCK, 19], size=(4, 8))
        labels = cs.PALETTE[np.kron(blocks, np.ones((8, 8), int))]   # (32, 64, 3) blocks of classes
        _png(real / f'{i}.png', labels)
        _png(fake / f'{i}.png', np.clip(labels.astype(int) + rng.integers(-40, 41, labels.shape), 0, 255))
    weights = tmp_path / 'random_drn.pth'
    torch.save(release_like_state, weights)

    # record the network's output in the first run; the second run (the same photos) reuses it, which
    # saves a forward pass of the 16M-parameter network on a busy CPU
    preds, forward = [], DRNSeg.forward

    def recorded(self, x):
        if not preds:
            preds.append(forward(self, x))
        return preds[0]
    monkeypatch.setattr(DRNSeg, 'forward', recorded)
    printed = {}
    for quirks in (False, True):
        argv = ['--fake', str(fake), '--labels', str(real), '--weights', str(weights), '--device', 'cpu']
        assert cs.main(argv + ['--release_quirks'] * quirks) == 0
        out = capsys.readouterr().out
        assert '2 images' in out and 'random_drn.pth' in out
        printed[quirks] = _printed(out)
    assert len(preds) == 1 and preds[0].shape == (2, 19, 128, 256)
    pred_ids = preds[0].argmax(1).numpy()   # (2, 128, 256)

    # the same numbers from the pure functions
    fakes, labels = cs.paired_images(str(fake), str(real))
    cm = sum(cs.confusion_matrix(cs.label_ids(p), pred) for p, pred in zip(labels, pred_ids))
    quirky = [cs.label_ids(p, release_quirks=True) for p in labels]
    cm_map = sum(cs.confusion_matrix(m, pred) for (m, _), pred in zip(quirky, pred_ids))
    cm_acc = sum(cs.confusion_matrix(a, cs.BGR_READ_ID[pred]) for (_, a), pred in zip(quirky, pred_ids))
    for quirks, expected in ((False, cs.scores_from_confusion(cm)), (True, cs.release_scores(cm_map, cm_acc))):
        for key, value in printed[quirks].items():
            assert 0 <= value <= 100, (quirks, key, value)
            assert_close_scaled(value, expected[key], rel=1e-6, scale=100, msg=f'{key} quirks={quirks}')
    assert cm.sum() == sum(int((cs.label_ids(p) < 19).sum()) for p in labels) > 0


# ----------------------------------------------------------------------------------------------
# download.sh (no network here: the listing and the manual steps only)
# ----------------------------------------------------------------------------------------------

def test_download_script_lists_the_targets_and_prints_the_manual_steps():
    script = os.path.join(ROOT, 'download.sh')
    listing = subprocess.run(['bash', script], capture_output=True, text=True, timeout=60).stdout
    for target in ('drn', 'horse2zebra', 'cityscapes', 'cityscapes-val-cut', 'pretrained-cut',
                   'pretrained-hsrc-single-modal'):
        assert re.search(rf'^  {target}\b', listing, flags=re.M), target
    steps = subprocess.run(['bash', script, 'cityscapes'], capture_output=True, text=True, timeout=60)
    assert steps.returncode == 0 and 'leftImg8bit_trainvaltest.zip' in steps.stdout
    assert 'python -m metrics.cityscapes_seg --fake' in steps.stdout and 'bash download.sh drn' in steps.stdout
