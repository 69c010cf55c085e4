"""Pretrained weight files (metrics, VGG features): one cache folder, never a silent download.

`bash download.sh <target>` fetches files into weights_dir() and checks them;
code asks for a file with require_weight(name), which fails with one clear
message naming the file and the command when it is missing or corrupt, and
load_weights(module, name) loads it strictly into a network.

download.sh reads this table through the command line, so it lives in one place:
    python -m core.utils.weights dir               the cache folder
    python -m core.utils.weights files TARGET      "filename url" per file of a download target
    python -m core.utils.weights verify TARGET     check every file of TARGET (exit 1 with the message if not)
"""
import os
import sys
from typing import NamedTuple, Optional

from core.utils.errors import UserError, run_cli
from core.utils.fileio import ModelFileError, safe_load, sha256_file, state_dict_mismatch

ENV_VAR = 'STARGAN_WEIGHTS_DIR'
DEFAULT_DIR = os.path.join('~', '.cache', 'stargan-src', 'weights')


class WeightFile(NamedTuple):
    filename: str
    url: str
    sha256: Optional[str]   # full hex digest, or a prefix (torch.hub names carry the first 8 hex digits)
    target: str             # the download.sh target that fetches it


WEIGHTS = {
    # torchvision ImageNet Inception v3: StarGAN v2's FID network (stargan-v2 protocol)
    'inception_v3_torchvision': WeightFile(
        'inception_v3_google-0cc3c7bd.pth', 'https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth',
        '0cc3c7bd', 'metric-weights'),
    # TF Inception 2015-12-05 ported to PyTorch: the standard FID network (pytorch-fid, torch-fidelity)
    'inception_tf_fid': WeightFile(
        'pt_inception-2015-12-05-6726825d.pth',
        'https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth',
        '6726825d', 'metric-weights'),
    # torchvision AlexNet: the LPIPS trunk
    'alexnet': WeightFile(
        'alexnet-owt-7be5be79.pth', 'https://download.pytorch.org/models/alexnet-owt-7be5be79.pth',
        '7be5be79', 'metric-weights'),
    # torchvision VGG16: features of the LSeSim / PatchGCL releases
    'vgg16': WeightFile(
        'vgg16-397923af.pth', 'https://download.pytorch.org/models/vgg16-397923af.pth', '397923af', 'vgg16'),
    # DRN-D-22 trained on Cityscapes: the Cityscapes label->photo segmentation scores (metrics/cityscapes_seg.py).
    # Its page is not a direct download, so `bash download.sh drn` prints the manual steps; no SHA-256 is
    # recorded, so the file is checked by its keys and shapes when it is loaded.
    'drn_d_22_cityscapes': WeightFile(
        'drn_d_22_cityscapes.pth', 'http://go.yf.io/drn-cityscapes-models', None, 'drn'),
}


def weights_dir():
    """The cache folder: $STARGAN_WEIGHTS_DIR, else ~/.cache/stargan-src/weights."""
    return os.path.expanduser(os.environ.get(ENV_VAR) or DEFAULT_DIR)


def require_weight(name, check_hash=True):
    """Path of weight file `name` in the cache; UserError naming the file and the command otherwise."""
    info = WEIGHTS[name]
    path = os.path.join(weights_dir(), info.filename)
    if not os.path.isfile(path):
        raise UserError(f'missing weight file {path} ({name}); fetch it with: bash download.sh {info.target} '
                        f'(or copy {info.filename} there; set {ENV_VAR} to use another folder)')
    if check_hash and info.sha256 and not sha256_file(path).startswith(info.sha256):
        raise UserError(f'weight file {path} does not match its SHA-256 ({info.sha256}...); it is corrupt or a '
                        f'different file: delete it and run: bash download.sh {info.target}')
    return path


def load_weights(module, name, path=None, adapt=None):
    """Load weight file `name` (from the cache, checked) strictly into `module`; returns the module.

    path: another file of the same network instead of the cached one (e.g. a
    --weights flag); adapt: a function applied to the loaded state dict before the
    check (for releases saved in an older layout). A file that does not fit the
    network raises one UserError naming the file and the command that fetches the right one.
    """
    path = path or require_weight(name)
    try:
        state_dict = safe_load(path)
    except ModelFileError as err:
        raise UserError(f'{err}; delete it and run: bash download.sh {WEIGHTS[name].target}') from None
    if adapt is not None:
        state_dict = adapt(state_dict)
    if not isinstance(state_dict, dict):
        raise UserError(f'weight file {path} does not hold a state dict of the {name} network; delete it and run: '
                        f'bash download.sh {WEIGHTS[name].target}')
    missing, unexpected, shapes = (sorted(keys) for keys in state_dict_mismatch(module.state_dict(), state_dict))
    if missing or unexpected or shapes:
        detail = '; '.join(f'{label}: {", ".join(keys[:3])}{" ..." if len(keys) > 3 else ""}'
                           for label, keys in (('missing', missing), ('unexpected', unexpected),
                                               ('wrong shape', shapes)) if keys)
        raise UserError(f'weight file {path} does not fit the {name} network ({detail}); delete it and run: '
                        f'bash download.sh {WEIGHTS[name].target}')
    module.load_state_dict(state_dict)
    return module


def _target_files(target):
    names = [name for name, info in WEIGHTS.items() if info.target == target]
    if not names:
        targets = sorted({info.target for info in WEIGHTS.values()})
        raise UserError(f'no weight files belong to download target {target!r}; known: {", ".join(targets)}')
    return names


def main(argv=None):
    """The command line used by download.sh; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv

    def run():
        if argv == ['dir']:
            print(weights_dir())
        elif len(argv) == 2 and argv[0] == 'files':
            for name in _target_files(argv[1]):
                print(WEIGHTS[name].filename, WEIGHTS[name].url)
        elif len(argv) == 2 and argv[0] == 'verify':
            for name in _target_files(argv[1]):
                print(f'ok  {require_weight(name)}')
        else:
            print('usage: python -m core.utils.weights dir | files TARGET | verify TARGET', file=sys.stderr)
            return 2
    return run_cli(run)


if __name__ == '__main__':
    sys.exit(main())
