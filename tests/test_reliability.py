"""A run keeps its domains, no exploded model is called good or written out as black images, files that
are not ours are never replaced, every input error is one line, and SIGTERM is handled like Ctrl-C."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch

from conftest import ROOT, replaced, tiny_flags, with_mode
from core.checkpoint import ckpt_path, complete_steps, payload_digest, write_training_state
from core.data.images import domain_tree
from core.inference import GeneratedError, check_generated
from core.utils.errors import EXIT_TERMINATED, run_cli
from core.utils.fileio import TEMP_PATTERN, WriteError, atomic_save, safe_load
from core.utils.logger import status_lines
from core.utils.runlock import LOCK_NAME
from main import main


def error_line(err):
    """The one 'error: ...' message of a failed command (stderr may also hold a progress bar)."""
    lines = [line for line in err.splitlines() if line.startswith('error: ')]
    assert len(lines) == 1 and 'Traceback' not in err, err[-3000:]
    return lines[0]


def temp_files(folder):
    return [name for _, _, files in os.walk(folder) for name in files if TEMP_PATTERN.match(name)]


@pytest.fixture(scope='module')
def trained(seasons32, tmp_path_factory):
    """A tiny run of 4 iterations saved at 2 and 4; returns its folder."""
    run = tmp_path_factory.mktemp('trained')
    assert main(tiny_flags(seasons32, run, '--sample_every', '0')) == 0
    return run


@pytest.fixture
def copy_of(trained, tmp_path):
    shutil.copytree(trained / 'checkpoints', tmp_path / 'checkpoints')
    return tmp_path


def rewrite(path, change):
    """Apply change(payload) to a checkpoint file and store it with a matching digest (a file an older
    version without the guard could have written)."""
    payload = safe_load(str(path))
    change(payload)
    payload.pop('digest', None)
    atomic_save({**payload, 'digest': payload_digest(payload)}, str(path))


# ----------------------------------------------------------------------------------------------
# A run's domains
# ----------------------------------------------------------------------------------------------

def test_resuming_on_renamed_domain_folders_is_refused(seasons32, tmp_path, capsys):
    data = tmp_path / 'data'
    shutil.copytree(seasons32, data)
    flags = tiny_flags(data, tmp_path, '--sample_every', '0', '--total_iters', '2')
    assert main(flags) == 0
    for split in ('train', 'val'):
        os.rename(data / split / 'autumn', data / split / 'zautumn')
    capsys.readouterr()
    assert main(replaced(flags, '--total_iters', '4') + ['--resume_iter', 'latest']) == 1
    message = error_line(capsys.readouterr().err)
    assert 'has the domain folders spring, summer, winter, zautumn' in message
    assert 'was trained on autumn, spring, summer, winter' in message and '--checkpoint_dir' in message
    assert complete_steps(str(tmp_path / 'checkpoints')) == [2]


# ----------------------------------------------------------------------------------------------
# Exploded models
# ----------------------------------------------------------------------------------------------

def test_an_f_lr_blow_up_is_not_saved_and_names_f_lr(seasons32, copy_of, capsys):
    """One step at --f_lr 1e30 leaves F's weights at about 1e30: finite, so only the magnitude bound sees it."""
    flags = replaced(tiny_flags(seasons32, copy_of, '--sample_every', '0', '--save_every', '1', '--print_every', '1',
                                '--f_lr', '1e30'), '--total_iters', '6')
    assert main(flags + ['--resume_iter', 'latest']) == 1
    message = error_line(capsys.readouterr().err)
    assert 'training diverged at iteration 5: the weight mapping_network/' in message
    assert 'e+30 (a healthy network stays far below 1e+06)' in message and 'step 5 was not saved' in message
    assert 'the newest good checkpoint is step 4' in message and 'A lower --f_lr (now 1e+30)' in message
    assert '--lr (now' not in message
    assert complete_steps(str(copy_of / 'checkpoints')) == [2, 4]


def test_an_exploded_checkpoint_on_disk_is_refused_by_translate(seasons32, copy_of, capsys):
    path = copy_of / 'checkpoints' / '000004_nets_ema.ckpt'
    rewrite(path, lambda p: p['mapping_network']['shared.0.weight'].mul_(1e30))
    image = sorted((seasons32 / 'val' / 'spring').iterdir())[0]
    out = copy_of / 'out'
    assert main(with_mode(tiny_flags(seasons32, copy_of), 'translate', '--checkpoint', str(path), '--src', str(image),
                          '--trg_domain', 'winter', '--result_dir', str(out))) == 1
    message = error_line(capsys.readouterr().err)
    assert f'{path} holds values up to' in message and '(mapping_network/shared.0.weight)' in message
    assert not out.exists()


def test_translate_and_sample_stop_at_the_first_absurd_batch(seasons32, copy_of, capsys):
    """Weights below the bound can still make absurd images: each generated batch is checked."""
    path = copy_of / 'checkpoints' / '000004_nets_ema.ckpt'
    rewrite(path, lambda p: p['generator']['to_rgb.2.weight'].mul_(1e5))
    out = copy_of / 'out'
    flags = tiny_flags(seasons32, copy_of)
    assert main(with_mode(flags, 'translate', '--checkpoint', str(path), '--src', str(seasons32 / 'val'),
                          '--trg_domain', '0', '--result_dir', str(out))) == 1
    message = error_line(capsys.readouterr().err)
    assert message.startswith(f'error: the model of {path} generates values up to ')
    assert 'use an earlier checkpoint' in message
    assert main(with_mode(flags, 'sample', '--checkpoint', str(path), '--src_dir', str(seasons32 / 'val'),
                          '--ref_dir', str(seasons32 / 'val'), '--result_dir', str(out))) == 1
    assert error_line(capsys.readouterr().err).startswith(f'error: the model of {path} generates values up to ')
    assert not out.exists() or sorted(os.listdir(out)) == []


def test_check_generated_is_one_reduction_per_batch():
    check_generated(torch.full((2, 3, 8, 8), 8.0), 'x.ckpt')   # a healthy overshoot
    for value, what in ((float('nan'), 'NaN or infinite values'), (float('-inf'), 'NaN or infinite values'),
                        (-5e3, 'values up to 5e+03')):
        x_fake = torch.zeros(2, 3, 8, 8)
        x_fake[1, 2, 3, 4] = value
        with pytest.raises(GeneratedError, match=re.escape(f'the model of x.ckpt generates {what}')):
            check_generated(x_fake, 'x.ckpt')


# ----------------------------------------------------------------------------------------------
# Files that are not ours
# ----------------------------------------------------------------------------------------------

def test_prepare_twice_into_one_folder_keeps_the_first_split(seasons32, tmp_path, capsys):
    root = tmp_path / 'dataset'

    def prepare(train, val):
        return main(['--mode', 'prepare', '--raw_dir', str(seasons32 / 'train'), '--train_img_dir', str(root / train),
                     '--val_img_dir', str(root / val), '--val_per_domain', '1'])
    assert prepare('train', 'val') == 0
    before = {name: (root / name).read_bytes() for name in ('manifest.csv', 'split.json')}
    capsys.readouterr()
    assert prepare('train2', 'val2') == 1
    message = error_line(capsys.readouterr().err)
    assert f'{root} already holds manifest.csv and split.json of another split' in message
    assert {name: (root / name).read_bytes() for name in before} == before
    assert sorted(os.listdir(root)) == ['.manifest_state.json', 'manifest.csv', 'split.json', 'train', 'val']


# ----------------------------------------------------------------------------------------------
# Every input error is one line
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('extra, expected', [
    (['--latent_dim', str(2 ** 70)], f'--latent_dim must be at most 4096 (got {2 ** 70})'),
    (['--batch_size', str(2 ** 70)], f'--batch_size must be at most 4096 (got {2 ** 70})'),
    (['--patch_loss', 'patchgcl=1', '--gcl_pooling_num', str(2 ** 70)], '--gcl_pooling_num must be between 0 and 16'),
    (['--w_hpf', '-1'], '--w_hpf must be 0 (got -1)'),
    (['--checkpoint_dir', ''], '--checkpoint_dir is empty'),
    (['--sample_dir', ''], '--sample_dir is empty'),
])
def test_bad_flag_values_are_one_line_and_write_nothing(seasons32, tmp_path, monkeypatch, capsys, extra, expected):
    monkeypatch.chdir(tmp_path)
    assert main(tiny_flags(seasons32, tmp_path / 'run', *extra)) == 1
    assert error_line(capsys.readouterr().err).startswith(f'error: {expected}')
    assert os.listdir(tmp_path) == []


def test_empty_output_folders_of_inference_are_refused(trained, seasons32, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    flags = tiny_flags(seasons32, trained)
    for mode, flag in (('sample', '--result_dir'), ('eval', '--eval_dir')):
        assert main(with_mode(flags, mode, '--resume_iter', '4', flag, '')) == 1
        assert error_line(capsys.readouterr().err) == f'error: {flag} is empty; give a path (or leave the flag out ' \
                                                      f'for its default)'
    assert os.listdir(tmp_path) == []


def test_a_mistyped_mode_flag_is_named(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(['--mod', 'train'])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == ('error: the following arguments are required: --mode; '
                                               'unknown flag --mod; did you mean --mode?')


def test_a_full_disk_under_stats_jsonl_is_one_line(seasons32, tmp_path, capsys):
    (tmp_path / 'checkpoints').mkdir()
    os.symlink('/dev/full', tmp_path / 'checkpoints' / 'stats.jsonl')   # every write: ENOSPC
    assert main(tiny_flags(seasons32, tmp_path, '--sample_every', '0')) == 1
    message = error_line(capsys.readouterr().err)
    assert f'cannot write {tmp_path / "checkpoints" / "stats.jsonl"} (No space left on device)' in message
    assert not (tmp_path / 'checkpoints' / LOCK_NAME).exists()


@pytest.mark.parametrize('special', ['fifo', '/dev/zero'])
def test_a_special_file_as_checkpoint_is_named_as_such(trained, seasons32, tmp_path, capsys, special):
    path = special
    if special == 'fifo':
        path = str(tmp_path / 'fifo_nets_ema.ckpt')
        os.mkfifo(path)
    image = sorted((seasons32 / 'val' / 'spring').iterdir())[0]
    assert main(with_mode(tiny_flags(seasons32, trained), 'translate', '--checkpoint', path, '--src', str(image),
                          '--trg_domain', '0', '--result_dir', str(tmp_path / 'out'))) == 1
    assert error_line(capsys.readouterr().err) == (f'error: {path} is not a regular file (a FIFO, socket or device), '
                                                   f'not a checkpoint file')


def test_translate_says_what_it_used(trained, seasons32, tmp_path, capsys):
    """A _nets.ckpt file (not EMA) and a --style_dim the checkpoint replaces are named; no run settings."""
    nets = trained / 'checkpoints' / '000004_nets.ckpt'
    image = sorted((seasons32 / 'val' / 'spring').iterdir())[0]
    assert main(with_mode(tiny_flags(seasons32, trained), 'translate', '--checkpoint', str(nets), '--src', str(image),
                          '--trg_domain', '0', '--style_dim', '99', '--result_dir', str(tmp_path / 'out'))) == 0
    out = capsys.readouterr().out
    assert f'note: {nets} holds the networks as trained, not their moving average (EMA)' in out
    assert 'replaces the flag(s) --style_dim 99 (the checkpoint has 16)' in out
    assert 'from the run' not in out and 'val_batch_size' not in out
    assert '1 image (1 input x 1 style)' in out


def test_a_failed_save_leaves_no_file_of_the_step(tmp_path, monkeypatch):
    import core.checkpoint
    real_save, calls = core.checkpoint.atomic_save, []

    def second_fails(obj, path):
        calls.append(path)
        if len(calls) == 2:
            raise WriteError(path, OSError(28, 'No space left on device'))
        real_save(obj, path)
    monkeypatch.setattr(core.checkpoint, 'atomic_save', second_fails)
    payload = {'generator': {'w': torch.ones(3)}, 'config': '{}'}
    with pytest.raises(WriteError, match='No space left on device'):
        write_training_state(str(tmp_path), 7, {'nets': payload, 'nets_ema': payload, 'optims': payload})
    assert calls == [ckpt_path(str(tmp_path), 7, kind) for kind in ('nets', 'nets_ema')]
    assert os.listdir(tmp_path) == []


def test_the_status_block_does_not_wrap():
    values = {f'{phase}/{term}': -1.2345 for phase in ('D/latent', 'D/ref') for term in ('real', 'fake', 'reg')}
    for phase in ('G/latent', 'G/ref'):
        values.update({f'{phase}/{term}': 0.123456 for term in ('adv', 'sty', 'ds', 'cyc', 'src', 'hdce')})
        values.update({f'{phase}/hdce/infonce': 0.8662, f'{phase}/hdce/gamma': 26.48})
    values['lambda_ds'] = 1.96
    lines = status_lines(100, 1200, 25.0, values).splitlines()
    assert lines[0] == 'Iteration [100/1200]  elapsed 0:00:25  lambda_ds 1.96'
    assert lines[1] == '  D/latent  real -1.234  fake -1.234  reg -1.234'
    assert lines[3].endswith('hdce 0.1235 (infonce 0.8662, gamma 26.48)')
    assert len(lines) == 5 and max(len(line) for line in lines) <= 120   # a 120-column terminal


def test_warnings_are_one_line_on_the_command_line():
    seen = []
    assert run_cli(lambda: seen.append(warnings.formatwarning('2 of 8 image files cannot be used', UserWarning,
                                                              'core/data/images.py', 297))) == 0
    assert seen == ['warning: 2 of 8 image files cannot be used\n']
    assert 'images.py:297' in warnings.formatwarning('x', UserWarning, 'core/data/images.py', 297)   # restored


def test_a_link_to_its_own_folder_is_named(tmp_path):
    from core.visualize import save_image
    for domain in ('a', 'b'):
        save_image(torch.zeros(1, 3, 4, 4), 1, str(tmp_path / domain / '0.png'))
    os.symlink('.', tmp_path / 'a' / 'self')
    with pytest.warns(UserWarning, match=r'loop back to a folder holding them.*a/self'):
        tree = domain_tree(str(tmp_path))
    assert tree.paths_by_domain == [[str(tmp_path / 'a' / '0.png')], [str(tmp_path / 'b' / '0.png')]]


# ----------------------------------------------------------------------------------------------
# SIGTERM
# ----------------------------------------------------------------------------------------------

def test_sigterm_during_training_is_handled_like_ctrl_c(seasons32, tmp_path):
    """A real process, as a scheduler or `docker stop` would stop it: one line, exit 143, no temporary file,
    the lock released; the run resumes from its last checkpoint."""
    flags = tiny_flags(seasons32, tmp_path, '--sample_every', '0', '--print_every', '1', '--save_every', '1',
                       '--total_iters', '100000', '--ds_iter', '100000')
    run = subprocess.Popen([sys.executable, os.path.join(ROOT, 'main.py'), *flags], cwd=ROOT,
                           env={**os.environ, 'OMP_NUM_THREADS': '1'}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    deadline = time.monotonic() + 240
    while len(complete_steps(str(tmp_path / 'checkpoints'))) < 2:
        assert time.monotonic() < deadline and run.poll() is None, 'training did not start'
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=120)
    assert run.returncode == EXIT_TERMINATED
    assert err.rstrip().endswith('terminated') and 'Traceback' not in err and 'error:' not in err
    assert temp_files(tmp_path) == [] and not (tmp_path / 'checkpoints' / LOCK_NAME).exists()
    assert len(complete_steps(str(tmp_path / 'checkpoints'))) >= 2


def test_sigterm_during_a_video_removes_its_temporary_file(trained, seasons32, tmp_path, monkeypatch, capsys):
    """The signal arrives while ffmpeg encodes video_ref.mp4 (sent by the process to itself at frame 3)."""
    import core.video
    real_write, frames = core.video.VideoWriter.write, []

    def write(self, frame):
        real_write(self, frame)
        frames.append(self.tmp)
        if len(frames) == 3:
            assert os.path.exists(self.tmp)   # the partial video is on disk now
            os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(core.video.VideoWriter, 'write', write)
    out, handler = tmp_path / 'out', signal.getsignal(signal.SIGTERM)
    assert main(with_mode(tiny_flags(seasons32, trained), 'sample', '--resume_iter', '4', '--result_dir', str(out),
                          '--src_dir', str(seasons32 / 'val'), '--ref_dir', str(seasons32 / 'val'))) == EXIT_TERMINATED
    assert capsys.readouterr().err.rstrip().endswith('terminated')
    assert len(frames) == 3 and os.path.basename(frames[0]).startswith('.video_ref.mp4.')
    assert temp_files(out) == [] and not (out / 'video_ref.mp4').exists()
    assert (out / 'reference.jpg').exists()   # written before the video, whole
    assert signal.getsignal(signal.SIGTERM) == handler   # run_cli put the previous handler back


def test_sigterm_during_an_atomic_write_leaves_no_temporary_file(tmp_path, monkeypatch, capsys):
    import core.utils.fileio as fileio
    real_fsync = fileio.os.fsync

    def fsync_then_sigterm(fd):
        real_fsync(fd)
        os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(fileio.os, 'fsync', fsync_then_sigterm)
    path = tmp_path / 'config.json'
    assert run_cli(lambda: fileio.atomic_write_text(str(path), '{}')) == EXIT_TERMINATED
    assert capsys.readouterr().err == 'terminated\n'
    assert os.listdir(tmp_path) == []


def test_sigterm_while_ffmpeg_starts_leaves_no_file(tmp_path, capsys, monkeypatch):
    """The signal lands between the temporary file's creation and ffmpeg's start: it waits until both are
    recorded, then the writer stops ffmpeg and removes the file."""
    import core.video
    real_start, started = core.video.VideoWriter._start_ffmpeg, []

    def start_after_sigterm(self, fps):
        os.kill(os.getpid(), signal.SIGTERM)
        started.append(real_start(self, fps))
        return started[-1]
    monkeypatch.setattr(core.video.VideoWriter, '_start_ffmpeg', start_after_sigterm)
    frames = (torch.zeros(3, 16, 16) for _ in range(3))
    assert run_cli(lambda: core.video.write_video(str(tmp_path / 'clip.mp4'), frames, 3, fps=5)) == EXIT_TERMINATED
    assert capsys.readouterr().err == 'terminated\n'
    assert len(started) == 1 and started[0].poll() is not None   # ffmpeg was started, then stopped
    assert os.listdir(tmp_path) == []
