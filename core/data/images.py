"""Image files: finding them, decoding them robustly, checking them, and reading domain trees.

A leaf module (it imports nothing from the project but core.utils.errors), used by
training, sampling, translate, evaluation, dataset preparation and the
benchmarks alike, so that every one of them lists, decodes and rejects images
the same way and reports a domain tree's problems in the same words.

Layout of a domain tree: `root/<domain_name>/**/<image>`, one sub-folder per
domain. A domain's id is the position of its folder name in the sorted list of
folder names.

Image modes: everything is converted to 8-bit RGB. Transparent pixels are
composited onto white (so transparent backgrounds look like the white
backgrounds of typical photo datasets, not like the arbitrary colour stored
under alpha = 0). 16-bit and 32-bit integer images are scaled from the
0..65535 range (not clipped at 255); float images are taken as [0, 1] or
[0, 255] when they fit, otherwise min-max stretched.
"""
import os
import stat
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import List, NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from core.utils.errors import UserError

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')
MIN_IMAGE_SIDE = 2            # a 1-pixel side cannot be resized or cropped meaningfully
BACKGROUND_RGB = (255, 255, 255)
MAX_LISTED_BAD_FILES = 20
PROGRESS_MIN_IMAGES = 200     # below this a progress bar is only noise
JUNK_FOLDER_NAMES = {'__MACOSX'}   # left behind by zip archives made on macOS
ALPHA_MODES = {'RGBA', 'LA', 'PA'}


class DataError(UserError):
    """A problem with the user's data; str(error) is the whole user-facing message."""


class BadImageError(Exception):
    """An image file that cannot be decoded or used. `path` and `reason` say which and why."""

    def __init__(self, path, reason='cannot be decoded'):
        super().__init__(f'{path}: {reason}')
        self.path = path
        self.reason = reason



# ---------------------------------------------------------------------------
# Finding domains and images
# ---------------------------------------------------------------------------

def _is_hidden(name):
    return name.startswith('.') or name in JUNK_FOLDER_NAMES


def _is_image_name(name):
    # Hidden files include macOS '._x.jpg' resource forks, which are not images.
    return not _is_hidden(name) and name.lower().endswith(IMG_EXTENSIONS)


def _require_folder(folder):
    if not folder:
        raise DataError('No image folder was given.')
    if not os.path.isdir(folder):
        what = 'is not a folder' if os.path.exists(folder) else 'does not exist'
        raise DataError(f'Image folder {folder} {what}. Check the path.')


def _inside(path, folder):
    """True if real path `path` is `folder` or lies under it (both real paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _is_dir(entry):
    try:
        return entry.is_dir()   # follows links
    except OSError:   # a link loop (ELOOP) or a vanished target: not a folder
        return False


def _scan(folder):
    try:
        return sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as err:
        raise DataError(f'Cannot read the folder {folder} ({err.strerror}). Check its permissions.') from None


def image_entries(folder):
    """(path, real path) of every image file under `folder`, each real file once, sorted by path.

    Recursive, extensions case-insensitive, hidden entries skipped. A symbolic
    link to a folder is followed only when its target lies inside `folder` and
    has not been listed yet, so links to a folder above, link loops and links
    to other domains or out of the data add nothing; they are named in one
    warning. A file reached both directly and through links is listed once, by
    its direct path. Links to single files are kept wherever they point (a
    common way to build datasets). Special files named like images (FIFOs,
    sockets, devices) are listed, for check_images to report; they are never
    opened here.
    """
    _require_folder(folder)
    top = os.path.realpath(folder)
    visited, pending, outside = {top}, [(folder, top)], []
    files, linked_files, dir_links, loops = {}, {}, [], []
    while pending or dir_links:
        if not pending:   # every real folder first, so that a real path is preferred to a linked one
            link = dir_links.pop(0)
            real = os.path.realpath(link)
            if not _inside(real, top):
                outside.append(f'{link} -> {real}')
            elif real not in visited:
                visited.add(real)
                pending.append((link, real))
            elif _inside(os.path.realpath(os.path.dirname(link)), real):   # a link to its own folder or above
                loops.append(f'{link} -> {real}')
            continue
        current, current_real = pending.pop()
        for entry in _scan(current):
            if _is_hidden(entry.name):
                continue
            if _is_dir(entry):
                real = os.path.join(current_real, entry.name)
                if entry.is_symlink():
                    dir_links.append(entry.path)
                elif real not in visited:
                    visited.add(real)
                    pending.append((entry.path, real))
            elif _is_image_name(entry.name):
                if entry.is_symlink():
                    linked_files.setdefault(os.path.realpath(entry.path), []).append(entry.path)
                else:
                    files.setdefault(os.path.join(current_real, entry.name), entry.path)
    for real, links in linked_files.items():
        files.setdefault(real, min(links))
    if outside:
        warnings.warn(f'Not following {len(outside)} symbolic link(s) to folders outside {folder} (their images '
                      f'would be counted twice or in the wrong domain): ' + ', '.join(outside[:5])
                      + (' ...' if len(outside) > 5 else '') + '. Move or link the images themselves '
                      'into the folder to use them.', stacklevel=2)
    if loops:
        warnings.warn(f'Not following {len(loops)} symbolic link(s) that loop back to a folder holding them '
                      f'(its images are listed once): ' + ', '.join(loops[:5]) + (' ...' if len(loops) > 5 else ''),
                      stacklevel=2)
    return sorted((path, real) for real, path in files.items())


def list_images(folder):
    """Sorted image files under `folder`, each file once (see image_entries for links and special files)."""
    return [path for path, _ in image_entries(folder)]


def list_domains(root, flag=None):
    """Sorted names of the domain sub-folders of `root`; stray files and hidden folders are ignored."""
    _require_folder(root)
    names = sorted(n for n in os.listdir(root)
                   if not _is_hidden(n) and os.path.isdir(os.path.join(root, n)))
    if not names:
        raise DataError(f'{_where(root, flag)} has no domain sub-folders. Expected one folder per domain: '
                        f'{os.path.join(root, "<domain_name>", "<images>")}.')
    return names


# ---------------------------------------------------------------------------
# Decoding images
# ---------------------------------------------------------------------------

def _unit_range(values, mode):
    """Map the pixel values of a single-channel 'I*' or 'F' image to [0, 1]."""
    lo, hi = values.min(), values.max()
    if mode == 'F' and lo >= 0 and hi <= 1:
        return values
    if mode == 'F' and lo >= 0 and hi <= 255:
        return values / 255
    # 'I;16*' and, in older Pillow versions, 16-bit PNGs opened as 'I' use 0..65535.
    if mode != 'F' and lo >= 0 and hi <= 65535:
        return values / 65535
    return (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)


def _high_depth_to_gray(img):
    """8-bit 'L' copy of a 16/32-bit integer or float image, scaled rather than clipped at 255."""
    values = np.nan_to_num(np.asarray(img, dtype=np.float64))   # (H, W)
    gray = np.rint(_unit_range(values, img.mode) * 255)
    return Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8))


def _composite_on_white(img):
    rgba = img.convert('RGBA')
    background = Image.new('RGBA', rgba.size, BACKGROUND_RGB + (255,))
    return Image.alpha_composite(background, rgba).convert('RGB')


def _to_rgb(img):
    """Convert any Pillow mode to 8-bit RGB (transparency composited onto white)."""
    if img.mode.startswith('I') or img.mode == 'F':
        img = _high_depth_to_gray(img)
    # Palette/L/RGB images can carry transparency in img.info instead of an alpha band.
    if img.mode in ALPHA_MODES or 'transparency' in img.info:
        return _composite_on_white(img)
    return img.convert('RGB')


def _apply_exif_orientation(img):
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a malformed EXIF block should not make decodable pixels unusable
        return img


def _describe_failure(path, err):
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return 'empty file (0 bytes)'
    if isinstance(err, UnidentifiedImageError):
        return 'not a recognised image format (corrupt or mislabelled file)'
    return f'{type(err).__name__}: {err}'


SPECIAL_FILE_KINDS = ((stat.S_ISFIFO, 'a FIFO (named pipe)'), (stat.S_ISSOCK, 'a socket'),
                      (stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device'),
                      (stat.S_ISDIR, 'a folder'))


def _open_regular(path):
    """A binary file object of `path`, or BadImageError if it is missing or not a regular file.

    Opening without blocking and checking the open descriptor means a FIFO (or
    a file swapped for one after a check) can never make a read wait forever.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0))
    except OSError as err:
        what = 'a broken symbolic link' if os.path.islink(path) else err.strerror
        raise BadImageError(path, f'cannot be opened ({what})') from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = next((name for test, name in SPECIAL_FILE_KINDS if test(mode)), 'a special file')
        raise BadImageError(path, f'{kind}, not a regular file; remove it from the image folder')
    return os.fdopen(fd, 'rb')


def load_rgb(path):
    """Fully decode `path` into an 8-bit RGB PIL image with its EXIF orientation applied.

    Raises BadImageError (with the reason) for missing, special (FIFO, socket,
    device), unreadable, truncated, empty or smaller-than-2x2 files.
    """
    with _open_regular(path) as f:
        try:
            with Image.open(f) as opened:
                opened.load()   # decode every pixel now, so truncated files fail here
                rgb = _to_rgb(_apply_exif_orientation(opened))
        except Exception as err:  # Pillow's decoders raise many types (OSError, SyntaxError, ValueError, ...)
            raise BadImageError(path, _describe_failure(path, err)) from err
    if min(rgb.size) < MIN_IMAGE_SIDE:
        raise BadImageError(path, f'too small ({rgb.width}x{rgb.height} pixels, '
                                  f'at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} needed)')
    return rgb


def to_rgb(img):
    """An opened PIL image as load_rgb makes a file's: 8-bit RGB, EXIF orientation applied
    (images given in memory, e.g. through the Python API)."""
    img.load()
    return _to_rgb(_apply_exif_orientation(img))


def _image_problem(path):
    """None if `path` loads as a usable image, else the reason it does not."""
    try:
        load_rgb(path)
    except BadImageError as err:
        return err.reason
    return None


def _bad_image_report(problems, total):
    shown = list(problems.items())[:MAX_LISTED_BAD_FILES]
    lines = [f'  {path}: {reason}' for path, reason in shown]
    if len(problems) > len(shown):
        lines.append(f'  ... and {len(problems) - len(shown)} more')
    return f'{len(problems)} of {total} image files cannot be used:\n' + '\n'.join(lines)


def check_images(paths, skip_bad=False):
    """Fully decode every image of `paths` and return the usable ones, in order.

    Bad files raise one DataError listing them, or, with skip_bad=True, are
    reported in one warning and dropped.
    """
    paths = list(paths)
    show_bar = len(paths) >= PROGRESS_MIN_IMAGES and sys.stderr.isatty()
    # Threads suffice: Pillow releases the GIL while decoding.
    with ThreadPoolExecutor() as pool:
        results = list(tqdm(pool.map(_image_problem, paths), total=len(paths),
                            desc='Checking images', unit='img', disable=not show_bar))
    problems = {p: r for p, r in zip(paths, results) if r is not None}
    if not problems:
        return paths
    report = _bad_image_report(problems, len(paths))
    if not skip_bad:
        raise DataError(f'{report}\nFix or remove these files, or pass --skip_bad_images to skip them.')
    warnings.warn(f'{report}\nSkipping them (--skip_bad_images).', stacklevel=2)
    return [p for p in paths if p not in problems]


# ---------------------------------------------------------------------------
# Domain trees
# ---------------------------------------------------------------------------

class DomainTree(NamedTuple):
    """The domains of a `root/<domain>/**/<image>` tree and their image files."""
    root: str
    names: List[str]             # sorted folder names; domain y is names[y]
    paths_by_domain: List[list]  # per domain, its sorted image paths

    @property
    def paths(self):
        return [p for paths in self.paths_by_domain for p in paths]

    @property
    def labels(self):
        return [y for y, paths in enumerate(self.paths_by_domain) for _ in paths]


def _where(root, flag):
    return f'--{flag} {root}' if flag else root


def _shared_images(names, entries_by_domain):
    """'path (domain) is also path (domain)' for each real file listed in more than one domain."""
    owner, shared = {}, []
    for name, entries in zip(names, entries_by_domain):
        for path, real in entries:
            if real in owner and owner[real][0] != name:
                shared.append(f'{path} ({name}) is also {owner[real][1]} ({owner[real][0]})')
            owner.setdefault(real, (name, path))
    return shared


def domain_tree(root, flag=None, num_domains=None, names=None, counted_by='--num_domains',
                named_by='the model'):
    """Read and check a domain tree: DomainTree(root, names, paths_by_domain).

    The one place that decides what a domain tree is, for every mode. DataError
    (naming --flag when given) if root is missing, has no domain folders, has
    a domain folder without images, has other than `num_domains` domains
    (counted_by says who expects that number: '--num_domains' or 'the model'),
    or has other folder names than `names` (named_by says whose: 'the model'
    or, for a training run's val set, '--train_img_dir'), or if one image file
    is listed in two domains (through symbolic links to files).
    """
    where = _where(root, flag)
    if not root or not os.path.isdir(root):
        what = 'is not a folder' if root and os.path.exists(root) else 'does not exist'
        raise DataError(f'{where} {what}; expected one sub-folder of images per domain')
    found = list_domains(root, flag)
    if num_domains is not None and len(found) != num_domains:
        expected, fix = ((f'--num_domains is {num_domains}', f'set --num_domains {len(found)} or arrange')
                         if counted_by == '--num_domains' else (f'{counted_by} has {num_domains} domains', 'arrange'))
        raise DataError(f'{where} has {len(found)} domain folder(s) ({", ".join(found)}) but {expected}; '
                        f'{fix} the images as one sub-folder per domain')
    if names is not None and tuple(found) != tuple(names):
        whose = "the model's" if named_by == 'the model' else f"{named_by}'s"
        raise DataError(f'{where} has the domain folders {", ".join(found)} but {whose} domains are '
                        f'{", ".join(names)}; name the sub-folders after {whose} domains')
    entries_by_domain = []
    for name in found:
        entries = image_entries(os.path.join(root, name))
        if not entries:
            raise DataError(f'Domain folder {os.path.join(root, name)} contains no images '
                            f'(searched recursively for {", ".join(IMG_EXTENSIONS)}). '
                            'Add images or remove the folder.')
        entries_by_domain.append(entries)
    shared = _shared_images(found, entries_by_domain)
    if shared:
        more = f' and {len(shared) - 3} more' if len(shared) > 3 else ''
        raise DataError(f'{where}: {len(shared)} image file(s) belong to two domains through symbolic links: '
                        f'{"; ".join(shared[:3])}{more}. An image belongs to one domain; remove the extra links.')
    return DomainTree(root, found, [[path for path, _ in entries] for entries in entries_by_domain])
