"""Hostile inputs: links and special files in data folders, images that go bad during a run,
unwritable output folders, failing saves, stale temporary files, file permissions and flags.

Tests run as root here, and root writes into folders whatever their permission bits, so a
read-only folder is made another way: a path under a file (ENOTDIR, a real OS refusal), or
a probe whose creation is made to fail with EROFS; the chmod test runs only for other users.
"""
import errno
import os
import stat
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, tiny_flags
from core import checks
from core.checks import check_inputs, writable_problem
from core.config import parse_config
from core.data.loader import UnreadableImageError, load_val_batch, make_train_iterator
from core.modes import MODES
from core.utils.fileio import STALE_TEMP_SECONDS, WriteError, atomic_save, remove_stale_temp_files
from core.data.images import DataError, check_images, domain_tree, list_images, load_rgb
from main import main

LISTING_TIMEOUT = 60   # seconds; a hang on a FIFO would never end


def save_image(path, domain=0, size=(12, 10)):
    """A small image whose channel `domain` is bright, so a batch shows where it came from."""
    pixels = np.full((size[1], size[0], 3), 30, np.uint8)
    pixels[..., domain] = 220
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path)


def make_tree(root, counts):
    """root/d<k>/<n>.png, counts[k] images in domain k."""
    for d, n in enumerate(counts):
        for k in range(n):
            save_image(os.path.join(root, f'd{d}', f'{k}.png'), d)
    return str(root)


def tree_paths(root):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return domain_tree(str(root)).paths_by_domain


def train_cfg(train_dir, val_dir=None, domain_names=None, **overrides):
    cfg = parse_config(['--mode', 'train', '--img_size', '32', '--num_domains', '3', '--batch_size', '4',
                        '--num_workers', '0', '--seed', '7', '--val_batch_size', '3',
                        '--train_img_dir', str(train_dir), '--val_img_dir', str(val_dir or train_dir)])
    return cfg.replace(**overrides).with_facts(domain_names=domain_names)


# ---------------------------------------------------------------------------
# Links and special files in data folders
# ---------------------------------------------------------------------------

def test_links_to_a_folder_above_and_link_loops_change_nothing(tmp_path):
    root = make_tree(tmp_path / 'data', [2, 2])
    before = tree_paths(root)
    d0 = tmp_path / 'data' / 'd0'
    (d0 / 'sub').mkdir()
    save_image(str(d0 / 'sub' / 'x.png'))
    before[0] = sorted(before[0] + [str(d0 / 'sub' / 'x.png')])
    os.symlink('..', d0 / 'up')                # the data root: every domain again
    os.symlink('.', d0 / 'self')               # itself
    os.symlink('../..', d0 / 'sub' / 'back')   # a loop through a sub-folder
    os.symlink('sub', d0 / 'again')            # a second way into a folder already listed
    os.symlink('loop_b', d0 / 'loop_a')        # links that point at each other (ELOOP)
    os.symlink('loop_a', d0 / 'loop_b')
    with pytest.warns(UserWarning, match='Not following'):
        domain_tree(root)
    assert tree_paths(root) == before


def test_links_to_other_domains_or_out_of_the_data_are_not_followed(tmp_path):
    """Chosen behaviour: a folder link is followed only inside its domain folder; the others are
    named in one warning. A link to a single file is kept (datasets are often built that way)."""
    root = make_tree(tmp_path / 'data', [1, 2])
    save_image(str(tmp_path / 'elsewhere' / 'e.png'))
    save_image(str(tmp_path / 'single' / 's.png'))
    d0 = tmp_path / 'data' / 'd0'
    os.symlink(tmp_path / 'data' / 'd1', d0 / 'other_domain')
    os.symlink(tmp_path / 'elsewhere', d0 / 'outside')
    os.symlink(tmp_path / 'single' / 's.png', d0 / 's.png')
    with pytest.warns(UserWarning) as record:
        tree = domain_tree(root)
    message = str(record[0].message)
    assert 'other_domain' in message and 'outside' in message
    assert tree.paths_by_domain[0] == [str(d0 / '0.png'), str(d0 / 's.png')]
    assert len(tree.paths_by_domain[1]) == 2


def test_an_image_linked_into_two_domains_is_an_error(tmp_path):
    root = make_tree(tmp_path / 'data', [1, 1])
    os.symlink(tmp_path / 'data' / 'd1' / '0.png', tmp_path / 'data' / 'd0' / 'from_d1.png')
    with pytest.raises(DataError, match='belong to two domains') as err:
        domain_tree(root)
    assert 'from_d1.png (d0)' in str(err.value) and '(d1)' in str(err.value)


def test_a_file_linked_twice_in_one_domain_is_listed_once_by_its_own_path(tmp_path):
    root = make_tree(tmp_path / 'data', [1, 1])
    os.symlink('0.png', tmp_path / 'data' / 'd0' / 'copy.png')
    assert tree_paths(root)[0] == [str(tmp_path / 'data' / 'd0' / '0.png')]


LIST_AND_CHECK = '''
import sys, warnings
from core.data.images import DataError, check_images, domain_tree
warnings.simplefilter('ignore')
try:
    check_images(domain_tree(sys.argv[1]).paths)
except DataError as err:
    print(err)
'''


@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='needs FIFOs')
def test_a_fifo_named_like_an_image_is_a_bad_file_and_never_blocks(tmp_path):
    root = make_tree(tmp_path / 'data', [2, 2])
    fifo = tmp_path / 'data' / 'd0' / 'pipe.jpg'
    os.mkfifo(fifo)
    # In a subprocess, so that a regression hangs one process for LISTING_TIMEOUT, not the suite.
    done = subprocess.run([sys.executable, '-c', LIST_AND_CHECK, root], cwd=ROOT, capture_output=True,
                          text=True, timeout=LISTING_TIMEOUT)
    assert f'{fifo}: a FIFO (named pipe), not a regular file' in done.stdout, done.stderr
    assert check_images(list_images(str(tmp_path / 'data' / 'd1'))) == list_images(str(tmp_path / 'data' / 'd1'))


@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='needs FIFOs')
def test_training_on_a_folder_with_a_fifo_stops_with_one_message(seasons32, tmp_path):
    data = tmp_path / 'data'
    subprocess.run(['cp', '-r', str(seasons32), str(data)], check=True)
    os.mkfifo(data / 'train' / 'spring' / 'pipe.png')
    run = subprocess.run([sys.executable, 'main.py', *tiny_flags(data, tmp_path / 'run')], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert run.returncode == 1 and 'Traceback' not in run.stderr
    assert 'pipe.png: a FIFO (named pipe), not a regular file' in run.stderr


def test_load_rgb_refuses_special_and_missing_files_without_opening_them(tmp_path):
    with pytest.raises(Exception, match='folder, not a regular file'):
        load_rgb(str(tmp_path))
    os.symlink(tmp_path / 'gone.png', tmp_path / 'broken.png')
    with pytest.raises(Exception, match='broken symbolic link'):
        load_rgb(str(tmp_path / 'broken.png'))


def test_val_set_with_other_domain_names_than_the_training_set_is_an_error(tmp_path):
    train = make_tree(tmp_path / 'train', [2, 2, 2])
    val = make_tree(tmp_path / 'val', [2, 2, 2])
    os.rename(tmp_path / 'val' / 'd2', tmp_path / 'val' / 'other')
    cfg = train_cfg(train, val, domain_names=('d0', 'd1', 'd2'))
    with pytest.raises(DataError, match="--val_img_dir .* has the domain folders d0, d1, other but "
                                        "--train_img_dir's domains are d0, d1, d2"):
        load_val_batch(cfg, 'cpu')


# ---------------------------------------------------------------------------
# Images that become unreadable after the check at the start
# ---------------------------------------------------------------------------

def spoil(path):
    with open(path, 'wb') as f:
        f.write(b'not an image any more')


@pytest.mark.parametrize('num_workers', [0, 1])
def test_an_image_spoiled_during_the_run_stops_it_with_one_line(tmp_path, num_workers):
    root = make_tree(tmp_path / 'data', [2, 2, 2])
    cfg = train_cfg(root, num_workers=num_workers, domain_names=('d0', 'd1', 'd2'))
    batches = make_train_iterator(cfg, 0, 'cpu')
    for path in list_images(root):
        spoil(path)
    with batches, pytest.raises(UnreadableImageError) as err:
        next(batches)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and 'Traceback' not in message, message
    assert 'cannot be read any more' in message and '--skip_bad_images' in message


@pytest.mark.parametrize('num_workers', [0, 1])
def test_skip_bad_images_uses_another_image_of_the_same_domain(tmp_path, num_workers):
    """Chosen behaviour: an image spoiled during the run is replaced by the next readable image of
    its domain in list order, so the batch keeps its size and a set of files gives fixed batches."""
    root = make_tree(tmp_path / 'data', [3, 3, 3])
    cfg = train_cfg(root, num_workers=num_workers, domain_names=('d0', 'd1', 'd2'), skip_bad_images=True)
    spoiled = [os.path.join(root, 'd0', f'{k}.png') for k in (0, 1)]
    taken = []
    for _ in range(2):
        batches = make_train_iterator(cfg, 0, 'cpu')
        for path in spoiled:
            spoil(path)
        with batches, warnings.catch_warnings():
            warnings.simplefilter('ignore')
            taken.append([next(batches) for _ in range(6)])
        for path in spoiled:
            save_image(path, 0)
    for batch in taken[0]:
        for x, y in ((batch.x_src, batch.y_src), (batch.x_ref, batch.y_ref), (batch.x_ref2, batch.y_ref)):
            assert torch.equal(x.mean(dim=(2, 3)).argmax(dim=1), y)   # every image from its own domain
    for a, b in zip(*taken):
        assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------
# Output folders
# ---------------------------------------------------------------------------

def test_unwritable_checkpoint_folder_fails_before_any_training(seasons32, tmp_path, monkeypatch, capsys):
    """--checkpoint_dir under a file: the OS refuses the folder even to root (ENOTDIR)."""
    (tmp_path / 'a_file').write_text('')
    monkeypatch.setattr('core.trainer.train', lambda cfg: pytest.fail('training started'))
    flags = tiny_flags(seasons32, tmp_path / 'run') + ['--checkpoint_dir', str(tmp_path / 'a_file' / 'ckpt')]
    assert main(flags) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: --checkpoint_dir ') and f'{tmp_path / "a_file"} is a file' in err
    assert not (tmp_path / 'run').exists()


def test_read_only_file_system_is_found_by_the_probe(tmp_path, monkeypatch):
    """os.access says yes to root even where nothing can be written, so the check creates a probe
    file; here its creation fails as on a read-only mount (EROFS)."""
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(checks.tempfile, 'mkstemp', read_only)
    problem = writable_problem(str(tmp_path / 'new' / 'ckpt'))
    assert problem == f'cannot be written: no new file can be made in {tmp_path} (Read-only file system)'


@pytest.mark.skipif(hasattr(os, 'geteuid') and os.geteuid() == 0, reason='root ignores permission bits')
def test_folder_without_write_permission_is_refused(tmp_path):
    folder = tmp_path / 'locked'
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert 'cannot be written' in writable_problem(str(folder / 'ckpt'))
    finally:
        folder.chmod(0o700)


def test_each_mode_checks_the_folders_it_writes(tmp_path):
    def folders(*argv):
        cfg = parse_config(['--mode', *argv])
        return set(MODES[cfg.mode].outputs(cfg))
    assert folders('train', '--eval_every', '0') == {'checkpoint_dir', 'sample_dir'}
    assert folders('train', '--eval_every', '10', '--num_outs_per_domain', '2') == \
        {'checkpoint_dir', 'sample_dir', 'eval_dir'}
    assert folders('sample') == folders('translate') == {'result_dir'}
    assert folders('eval', '--num_outs_per_domain', '2') == {'eval_dir'}
    assert folders('demo') == {'checkpoint_dir', 'sample_dir', 'result_dir'}
    assert writable_problem(str(tmp_path / 'not' / 'yet' / 'made')) is None
    assert not (tmp_path / 'not').exists()   # checking creates nothing


# ---------------------------------------------------------------------------
# Saves that fail, and what interrupted saves leave behind
# ---------------------------------------------------------------------------

def temp_files(folder):
    return [name for name in os.listdir(folder) if name.endswith('.tmp')]


@pytest.mark.skipif(not os.path.exists('/dev/full'), reason='needs /dev/full')
def test_disk_full_during_a_save_is_one_message_and_keeps_the_old_file(tmp_path, monkeypatch):
    """torch.save turns a failed write into a RuntimeError; the message still names the cause."""
    path = str(tmp_path / 'x.ckpt')
    atomic_save({'w': torch.ones(3)}, path)
    real_fdopen = os.fdopen

    def full_disk(fd, *args, **kwargs):   # the temporary file behaves like a full disk
        os.close(fd)
        return real_fdopen(os.open('/dev/full', os.O_WRONLY), *args, **kwargs)
    monkeypatch.setattr(os, 'fdopen', full_disk)
    with pytest.raises(WriteError) as err:
        atomic_save({'w': torch.zeros(100000)}, path)
    monkeypatch.undo()
    assert str(err.value).startswith(f'cannot write {path} (No space left on device); free some disk space')
    assert len(str(err.value).splitlines()) == 1 and isinstance(err.value, OSError)
    assert torch.equal(torch.load(path)['w'], torch.ones(3)) and temp_files(tmp_path) == []


def test_os_error_at_a_training_save_keeps_the_last_checkpoint(seasons32, tmp_path, monkeypatch, capsys):
    run = tmp_path / 'run'
    assert main(tiny_flags(seasons32, run, '--total_iters', '2')) == 0
    ckpt = run / 'checkpoints'
    before = {name: (ckpt / name).read_bytes() for name in os.listdir(ckpt) if name.endswith('.ckpt')}
    assert len(before) == 3
    capsys.readouterr()

    def no_space(obj, f):
        f.write(b'partial')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(torch, 'save', no_space)
    assert main(tiny_flags(seasons32, run, '--total_iters', '4', '--resume_iter', 'latest')) == 1
    err = capsys.readouterr().err   # after the progress bar
    last_line = err.rstrip('\n').rsplit('\n', 1)[-1]
    assert last_line.startswith(f'error: cannot write {ckpt / "000004_nets.ckpt"} (No space left on device)')
    assert err.count('error: ') == 1 and 'Traceback' not in err, err
    assert {name: (ckpt / name).read_bytes() for name in os.listdir(ckpt) if name.endswith('.ckpt')} == before
    assert temp_files(ckpt) == []


def test_stale_temporary_files_are_removed_at_the_next_start(seasons32, tmp_path):
    ckpt = tmp_path / 'run' / 'checkpoints'
    ckpt.mkdir(parents=True)
    old = ckpt / '.000002_nets.ckpt.a1b2_c3d.tmp'
    fresh = ckpt / '.000004_nets.ckpt.zz9y8x7w.tmp'   # may be a save under way in another process
    not_ours = [ckpt / '.notes.tmp', ckpt / 'x.ckpt.abcdefgh.tmp', ckpt / 'keep.ckpt']
    for path in [old, fresh] + not_ours:
        path.write_bytes(b'x')
    long_ago = time.time() - STALE_TEMP_SECONDS - 10
    for path in [old] + not_ours:
        os.utime(path, (long_ago, long_ago))
    check_inputs(parse_config(tiny_flags(seasons32, tmp_path / 'run')), MODES['train'])
    assert not old.exists() and fresh.exists() and all(p.exists() for p in not_ours)
    nested = tmp_path / 'eval' / 'latent' / 'a2b'
    nested.mkdir(parents=True)
    (nested / '.0.png.abcdefgh.tmp').write_bytes(b'x')
    assert remove_stale_temp_files(str(tmp_path / 'eval'), depth=2, min_age=0) == \
        [str(nested / '.0.png.abcdefgh.tmp')]


@pytest.mark.parametrize('umask', [0o022, 0o027])
def test_videos_get_the_usual_permissions(tmp_path, umask):
    from core.video import write_video
    old = os.umask(umask)
    try:
        path = str(tmp_path / 'v.mp4')
        write_video(path, (torch.zeros(3, 16, 16) for _ in range(3)), 3, fps=5)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask


# ---------------------------------------------------------------------------
# Flags, end to end
# ---------------------------------------------------------------------------

def test_abbreviated_flag_exits_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(['--mode', 'train', '--total_iter', '5'])
    assert info.value.code == 2
    assert capsys.readouterr().err == 'error: unknown flag --total_iter; did you mean --total_iters?\n'


def test_nan_learning_rate_is_refused_naming_the_flag(capsys):
    assert main(['--mode', 'train', '--lr', 'nan']) == 1
    assert capsys.readouterr().err == 'error: --lr must be a finite number (got nan)\n'
