"""Cityscapes label->photo segmentation scores: does a pre-trained segmenter find the input's labels in the photo?

The FCN-score protocol of the label->photo papers (CUT, Hneg_SRC), as Hneg_SRC's
get_mAP.py and get_Acc.py define it: each generated photo is segmented by
DRN-D-22 trained on Cityscapes (metrics/drn.py) and compared with the label
colour map it was generated from.

* Photos: RGB, resized to 256 x 128 (w x h) with Pillow's bicubic filter, scaled
  to [0, 1], normalised with DRN's Cityscapes info.json mean (0.2901, 0.3281,
  0.2870) and std (0.1830, 0.1866, 0.1845); the prediction is the argmax of the
  network's 19 class scores.
* Labels: RGB colour maps, resized to 256 x 128 with nearest-neighbour sampling,
  each pixel mapped to the nearest of 20 colours by L1 distance: the 19
  Cityscapes train-id colours (PALETTE) and black, id 19, which is ignored.
* One confusion matrix over all images (rows: label, columns: prediction), label
  pixels of the 19 classes only. From it, in percent:
    mIoU      mean over classes of IoU = TP / (TP + FP + FN), over the classes
              present in the labels or the predictions. Hneg_SRC prints it as "mAP".
    pixAcc    correctly labelled pixels / labelled (non-ignored) pixels.
    classAcc  mean over the classes present in the labels of the per-class accuracy.

Files are paired by name (fake_B/x.png with real_A/x.png in the CUT result layout).

Where the released scripts differ (release_quirks=True, --release_quirks,
reproduces their arithmetic; the default computes the scores as defined above,
so our numbers are not byte-comparable with theirs where these bite):
* get_Acc.py reads both images with OpenCV, i.e. in BGR order, and maps them to
  ids with the RGB palette. Pure colours then land on other classes (car ->
  bicycle, sky -> fence, wall -> road, truck -> ignore, person -> motorcycle), in
  the labels and the predictions alike, so pixAcc and classAcc score a
  scrambled class set. Its labels are resized with OpenCV's nearest filter,
  reproduced here without OpenCV as its documented rule (source pixel
  floor(i * src / dst)) and not compared with OpenCV itself; the prediction
  colours are those of the saved colour PNGs, assumed to use this palette. A prediction that the swap maps to "ignore" (truck) falls in
  no class: it is left out of the matrix here (the release's handling of it is
  not known).
* get_Acc.py's pixAcc divides by the constant 128 * 256 * 500, the pixel count of
  500 images including the ignored pixels, whatever the number of images.
* get_Acc.py's classAcc divides by 19, with 0 for the classes absent from the labels.
* get_mAP.py (the "mAP") resizes the label maps with Pillow's default filter,
  bicubic since Pillow 7, which blends colours at class borders before the
  nearest-colour mapping; its arithmetic is otherwise the one above.
* get_mAP.py pairs photos and labels by position in two unsorted file listings;
  both modes here pair by file name, which is what it relies on.
Whether CUT's own table used this DRN-D-22 file and resolution is not known.

Weights: drn_d_22_cityscapes.pth in the weight cache (core.utils.weights; `bash
download.sh drn` prints where to get it), or any file with --weights.

Command line:
    python -m metrics.cityscapes_seg --fake DIR --labels DIR [--weights FILE] [--release_quirks]
"""
import argparse
import hashlib
import os
import sys

import numpy as np
import torch
from PIL import Image

from core.data.images import check_images, list_images
from core.data.loader import read_image
from core.utils.errors import UserError, run_cli
from core.utils.weights import WEIGHTS, load_weights
from metrics.drn import NUM_CLASSES, DRNSeg, load_drn_state_dict

WEIGHT_NAME = 'drn_d_22_cityscapes'   # core.utils.weights name of the segmenter
SEG_SIZE = (128, 256)                 # (h, w): get_mAP.py's --h 128 --w 256
INFO_MEAN = (0.2901, 0.3281, 0.2870)  # DRN's datasets/cityscapes/info.json
INFO_STD = (0.1830, 0.1866, 0.1845)
RELEASE_PIXELS = 128 * 256 * 500      # get_Acc.py's pixAcc denominator
IGNORE_ID = NUM_CLASSES               # black, and every label pixel of no class

CLASSES = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light', 'traffic sign', 'vegetation',
           'terrain', 'sky', 'person', 'rider', 'car', 'truck', 'bus', 'train', 'motorcycle', 'bicycle')
# The Cityscapes colours of the 19 train ids, in id order, then black (ignore).
PALETTE = np.array([(128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
                    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
                    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
                    (0, 80, 100), (0, 0, 230), (119, 11, 32), (0, 0, 0)], dtype=np.uint8)


# ----------------------------------------------------------------------------------------------
# Pure functions: colours -> ids -> confusion matrix -> scores
# ----------------------------------------------------------------------------------------------

def colors_to_ids(rgb):
    """Nearest palette colour by L1 distance: uint8 (..., 3) RGB -> int64 ids (...) in 0..19 (19 = ignore)."""
    rgb = np.asarray(rgb)
    dist = np.abs(rgb[..., None, :].astype(np.int32) - PALETTE.astype(np.int32)).sum(-1)   # (..., 20)
    return dist.argmin(-1).astype(np.int64)


def ids_to_colors(ids):
    """Palette colours of ids: int (...) in 0..19 -> uint8 (..., 3) RGB."""
    return PALETTE[np.asarray(ids)]


def confusion_matrix(label_ids, pred_ids, num_classes=NUM_CLASSES):
    """(num_classes, num_classes) int64 counts, rows = label, columns = prediction.

    Only pixels whose label and prediction are both classes (0 .. num_classes-1)
    count: ignored label pixels are left out.
    """
    label, pred = np.asarray(label_ids).ravel(), np.asarray(pred_ids).ravel()
    if label.shape != pred.shape:
        raise ValueError(f'label and prediction sizes differ: {np.shape(label_ids)} vs {np.shape(pred_ids)}')
    keep = (label >= 0) & (label < num_classes) & (pred >= 0) & (pred < num_classes)
    flat = label[keep] * num_classes + pred[keep]
    return np.bincount(flat, minlength=num_classes ** 2).reshape(num_classes, num_classes)   # (C, C)


def class_iou(cm):
    """IoU per class, TP / (TP + FP + FN); NaN for a class absent from labels and predictions: (C,)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(union > 0, tp / union, np.nan)


def scores_from_confusion(cm):
    """{'mIoU', 'pixAcc', 'classAcc'} in percent, as defined in the module docstring (NaN if nothing counts)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp, label_count = np.diag(cm), cm.sum(1)
    iou = class_iou(cm)
    present = label_count > 0
    return {'mIoU': 100 * float(np.nanmean(iou)) if np.isfinite(iou).any() else float('nan'),
            'pixAcc': 100 * float(tp.sum() / cm.sum()) if cm.sum() > 0 else float('nan'),
            'classAcc': 100 * float((tp[present] / label_count[present]).mean()) if present.any() else float('nan')}


def release_scores(cm_map, cm_acc):
    """The released scripts' numbers, in percent: get_mAP.py's "mAP" from cm_map, get_Acc.py's from cm_acc.

    cm_acc is the matrix of the BGR-read colour maps; its pixAcc divides by
    128 * 256 * 500 and its classAcc by 19 (0 for a class without label pixels).
    """
    cm_acc = np.asarray(cm_acc, dtype=np.float64)
    label_count = cm_acc.sum(1)
    with np.errstate(invalid='ignore', divide='ignore'):
        per_class = np.where(label_count > 0, np.diag(cm_acc) / label_count, 0.0)
    iou = class_iou(cm_map)
    return {'mIoU': 100 * float(np.nanmean(iou)) if np.isfinite(iou).any() else float('nan'),
            'pixAcc': 100 * float(np.trace(cm_acc) / RELEASE_PIXELS),
            'classAcc': 100 * float(per_class.sum() / NUM_CLASSES)}


# The id each class's colour gets when its colour PNG is read in BGR order (get_Acc.py's predictions).
BGR_READ_ID = colors_to_ids(PALETTE[:NUM_CLASSES, ::-1])   # (19,)


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------

def opencv_nearest(rgb, size):
    """OpenCV's INTER_NEAREST resize of uint8 (H, W, 3) to size (h, w): source pixel floor(i * H / h)."""
    h_src, w_src = rgb.shape[:2]
    rows = np.minimum(np.arange(size[0]) * h_src // size[0], h_src - 1)
    cols = np.minimum(np.arange(size[1]) * w_src // size[1], w_src - 1)
    return rgb[rows][:, cols]   # (h, w, 3)


def photo_tensor(path, size=SEG_SIZE):
    """A generated photo as the network's input: (3, h, w) float, bicubic-resized and info.json-normalised."""
    image = read_image(path).resize((size[1], size[0]), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)   # (3, h, w)
    return (x - torch.tensor(INFO_MEAN).view(3, 1, 1)) / torch.tensor(INFO_STD).view(3, 1, 1)


def label_ids(path, size=SEG_SIZE, release_quirks=False):
    """Ids (h, w) of a label colour map; with release_quirks, the pair (get_mAP.py's ids, get_Acc.py's ids)."""
    image = read_image(path)
    if not release_quirks:
        return colors_to_ids(np.asarray(image.resize((size[1], size[0]), Image.NEAREST)))
    map_ids = colors_to_ids(np.asarray(image.resize((size[1], size[0]), Image.BICUBIC)))
    acc_ids = colors_to_ids(opencv_nearest(np.asarray(image), size)[..., ::-1])   # BGR read, RGB palette
    return map_ids, acc_ids


def paired_images(fake_dir, label_dir):
    """(fake paths, label paths) paired by their path under each folder without the extension, sorted.

    Raises UserError naming the unpaired files.
    """
    def by_stem(folder):
        return {os.path.splitext(os.path.relpath(p, folder))[0]: p for p in list_images(folder)}
    fakes, labels = by_stem(fake_dir), by_stem(label_dir)
    alone = sorted(set(fakes) ^ set(labels))
    if alone or not fakes:
        detail = f'{len(alone)} without a partner, e.g. {", ".join(alone[:3])}' if alone else 'no images'
        raise UserError(f'cannot pair the photos of {fake_dir} with the labels of {label_dir} by file name: {detail}')
    stems = sorted(fakes)
    return [fakes[s] for s in stems], [labels[s] for s in stems]


# ----------------------------------------------------------------------------------------------
# The network and the scores
# ----------------------------------------------------------------------------------------------

def build_segmenter(weights_path=None, device='cpu', pretrained=True):
    """DRN-D-22 in eval mode on `device`, loaded strictly from weights_path or the weight cache.

    pretrained=False keeps random weights (tests). A missing file raises one
    UserError naming `bash download.sh drn`; a file of another network, one naming its keys.
    """
    model = DRNSeg()
    if pretrained:
        load_weights(model, WEIGHT_NAME, path=weights_path, adapt=load_drn_state_dict)
    return model.eval().requires_grad_(False).to(device)


def network_identity(model, weights_path=None):
    """The weight file's name, for the result; for an unnamed network a digest of its weights."""
    if weights_path:
        return os.path.basename(weights_path)
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return 'random-' + digest.hexdigest()[:16]


@torch.no_grad()
def segmentation_scores(fake_paths, label_paths, weights_path=None, device='cpu', release_quirks=False,
                        batch_size=8, model=None):
    """The three scores of generated photos against the label maps they came from (paired by position).

    Returns {'mIoU', 'pixAcc', 'classAcc'} in percent (mIoU is Hneg_SRC's "mAP"),
    'per_class_IoU' {class: percent or None}, 'num_images', 'protocol' and
    'network'. model: a DRNSeg to use instead of loading one (tests).
    """
    if len(fake_paths) != len(label_paths) or not fake_paths:
        raise UserError(f'need as many label maps as photos, at least one: got {len(fake_paths)} photos and '
                        f'{len(label_paths)} label maps')
    if model is None:
        model = build_segmenter(weights_path, device)
        identity = WEIGHTS[WEIGHT_NAME].filename if weights_path is None else os.path.basename(weights_path)
    else:
        identity = network_identity(model)
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    cm_acc = np.zeros_like(cm)
    for start in range(0, len(fake_paths), batch_size):
        x = torch.stack([photo_tensor(p) for p in fake_paths[start:start + batch_size]]).to(device)   # (B, 3, h, w)
        preds = model(x).argmax(1).cpu().numpy()                                                   # (B, h, w)
        for pred, path in zip(preds, label_paths[start:start + batch_size]):
            if release_quirks:
                map_ids, acc_ids = label_ids(path, release_quirks=True)
                cm += confusion_matrix(map_ids, pred)
                cm_acc += confusion_matrix(acc_ids, BGR_READ_ID[pred])
            else:
                cm += confusion_matrix(label_ids(path), pred)
    scores = release_scores(cm, cm_acc) if release_quirks else scores_from_confusion(cm)
    iou = class_iou(cm)
    scores['per_class_IoU'] = {name: (None if np.isnan(v) else 100 * float(v)) for name, v in zip(CLASSES, iou)}
    scores.update(num_images=len(fake_paths), network=identity,
                  protocol='release_quirks' if release_quirks else 'corrected')
    return scores


def format_scores(scores):
    """The one-line summary the command line prints."""
    what = 'the released scripts\' arithmetic' if scores['protocol'] == 'release_quirks' else 'corrected'
    return (f'Cityscapes segmentation of {scores["num_images"]} images (DRN-D-22 {scores["network"]}, {what}): '
            f'mIoU {scores["mIoU"]:.4f}  pixAcc {scores["pixAcc"]:.4f}  classAcc {scores["classAcc"]:.4f}')


def main(argv=None):
    """python -m metrics.cityscapes_seg --fake DIR --labels DIR: print the three scores."""
    parser = argparse.ArgumentParser(prog='python -m metrics.cityscapes_seg', description=__doc__.split('\n')[0])
    parser.add_argument('--fake', required=True, help='folder of generated photos (e.g. .../images/fake_B)')
    parser.add_argument('--labels', required=True,
                        help='folder of the label colour maps they were generated from, same file names '
                             '(e.g. .../images/real_A)')
    parser.add_argument('--weights', default=None,
                        help='DRN-D-22 Cityscapes weight file (default: drn_d_22_cityscapes.pth in the weight cache)')
    parser.add_argument('--release_quirks', action='store_true',
                        help='reproduce the arithmetic of Hneg_SRC\'s get_mAP.py / get_Acc.py (BGR colour read, '
                             'pixAcc over 128*256*500 pixels, classAcc over 19 classes, bicubic label resize)')
    parser.add_argument('--batch_size', type=int, default=8, help='photos per forward pass')
    parser.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto')
    args = parser.parse_args(argv)
    from core.utils.device import resolve_device

    def run():
        fakes, labels = paired_images(args.fake, args.labels)
        check_images(fakes + labels)   # every unreadable file named in one error, before any work
        scores = segmentation_scores(fakes, labels, args.weights, resolve_device(args.device),
                                     args.release_quirks, args.batch_size)
        print(format_scores(scores))
    return run_cli(run)


if __name__ == '__main__':
    sys.exit(main())
