"""Integrity of a run: unreadable and damaged checkpoints, digests, the non-finite guard, and
records (stats.jsonl, TensorBoard, config.json) that stay true across resumes."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, interrupt_training, replaced, tiny_flags, with_mode
from core.checkpoint import DamagedCheckpoint, payload_digest, read_checkpoint
from core.utils.fileio import ModelFileError, atomic_save, safe_load
from main import main


def _snapshot(run_dir):
    """{relative path: (bytes, mtime_ns)} of every file under run_dir."""
    out = {}
    for folder, _, files in os.walk(run_dir):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, run_dir)] = (f.read(), os.stat(path).st_mtime_ns)
    return out


@pytest.mark.parametrize('content', [b'', b'PK\x03\x04', b'hello world' * 3])
def test_unreadable_files_give_the_same_clear_message(tmp_path, content):
    """0 bytes (EOFError), a cut zip (RuntimeError) and garbage (KeyError inside torch.load) alike."""
    path = tmp_path / 'bad.ckpt'
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as err:
        safe_load(str(path))
    assert str(path) in str(err.value) and 'truncated or corrupt' in str(err.value)
    assert ('0 bytes' in str(err.value)) == (content == b'')


def test_a_truncated_checkpoint_is_unreadable(tmp_path):
    path = tmp_path / 'cut.ckpt'
    torch.save({'w': torch.randn(4096)}, str(path))
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(ModelFileError, match='truncated or corrupt'):
        safe_load(str(path))


# ----------------------------------------------------------------------------------------------
# Digests
# ----------------------------------------------------------------------------------------------

def _flip_middle(path, count=64):
    """Invert `count` bytes in the middle of a file, as bit rot or a bad copy would."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle - count // 2, middle + count // 2):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope='module')
def trained(seasons32, tmp_path_factory):
    """A tiny run of 4 iterations saved at 2 and 4, logged every iteration; returns its folder."""
    run = tmp_path_factory.mktemp('trained')
    assert main(tiny_flags(seasons32, run, '--sample_every', '0', '--print_every', '1')) == 0
    return run


@pytest.fixture
def copy_of(trained, tmp_path):
    """A fresh copy of the trained run that a test may damage."""
    shutil.copytree(trained / 'checkpoints', tmp_path / 'checkpoints')
    return tmp_path


def test_digest_covers_every_value_and_ignores_memory_format(tmp_path):
    payload = {'generator': {'w': torch.randn(2, 3, 4, 4), 'b': torch.zeros(2, dtype=torch.bfloat16)},
               'adam': {'state': {0: {'step': torch.tensor(3.)}}, 'param_groups': [{'lr': 1e-4, 'params': [0]}]},
               'config': '{}', 'step': 4}
    digest = payload_digest(payload)
    assert digest.startswith('sha256:') and payload_digest({**payload, 'digest': 'x'}) == digest
    channels_last = {**payload, 'generator': {**payload['generator'],
                                              'w': payload['generator']['w'].to(memory_format=torch.channels_last)}}
    assert payload_digest(channels_last) == digest
    generator = payload['generator']
    for changed in ({**payload, 'step': 5}, {**payload, 'config': '{} '},
                    {**payload, 'generator': {**generator, 'b': torch.ones(2, dtype=torch.bfloat16)}},
                    {**payload, 'generator': {**generator, 'w': generator['w'].reshape(2, 3, 16)}}):
        assert payload_digest(changed) != digest
    path = tmp_path / 'a.ckpt'
    atomic_save({**payload, 'digest': digest}, str(path))
    assert read_checkpoint(str(path))['step'] == 4


def test_changed_tensor_bytes_are_refused_by_name(trained, tmp_path):
    """Flip bytes inside one stored tensor: torch.load reads the file happily, the digest does not match."""
    path = tmp_path / '000004_nets.ckpt'
    shutil.copy(trained / 'checkpoints' / path.name, path)
    payload = safe_load(str(path))
    raw = payload['generator']['from_rgb.weight'].reshape(-1)
    raw[0] = raw[0] * 1.0001
    torch.save(payload, str(path))   # the old digest stays in the file
    with pytest.raises(DamagedCheckpoint) as err:
        read_checkpoint(str(path))
    assert str(path) in str(err.value) and 'digest' in str(err.value)


def test_checkpoints_without_a_digest_still_load(tmp_path):
    """The official layout: a dict of state_dicts, no config, no digest."""
    path = tmp_path / '100000_nets_ema.ckpt'
    torch.save({'generator': {'w': torch.ones(3)}, 'style_encoder': {'module.w': torch.zeros(2)}}, str(path))
    assert set(read_checkpoint(str(path))) == {'generator', 'style_encoder'}


def test_flipped_bytes_are_refused_by_train_sample_and_translate(seasons32, copy_of, capsys):
    flags = tiny_flags(seasons32, copy_of, '--sample_every', '0')
    for kind in ('nets', 'nets_ema', 'optims'):
        _flip_middle(copy_of / 'checkpoints' / f'000004_{kind}.ckpt')
    before = _snapshot(copy_of)

    assert main(replaced(flags, '--total_iters', '6') + ['--resume_iter', '4']) == 1
    err = capsys.readouterr().err
    assert '000004_nets.ckpt' in err and 'Traceback' not in err
    assert 'newest intact earlier step is 2: pass --resume_iter 2' in err

    image = sorted((seasons32 / 'val' / 'spring').iterdir())[0]
    ema = str(copy_of / 'checkpoints' / '000004_nets_ema.ckpt')
    assert main(with_mode(flags, 'sample', '--checkpoint', ema, '--result_dir', str(copy_of / 'out'),
                           '--src_dir', str(seasons32 / 'val'), '--ref_dir', str(seasons32 / 'val'))) == 1
    err = capsys.readouterr().err
    assert ema in err and 'Traceback' not in err
    assert main(with_mode(flags, 'translate', '--resume_iter', '4', '--src', str(image), '--trg_domain', '0',
                           '--result_dir', str(copy_of / 'out'))) == 1
    err = capsys.readouterr().err
    assert ema in err and '--resume_iter 2' in err and 'Traceback' not in err
    assert _snapshot(copy_of) == before and not (copy_of / 'out').exists()


def test_resume_latest_names_the_damaged_step_and_an_earlier_intact_one(seasons32, copy_of, capsys):
    (copy_of / 'checkpoints' / '000004_optims.ckpt').write_bytes(b'')   # e.g. a copy that stopped early
    flags = replaced(tiny_flags(seasons32, copy_of, '--sample_every', '0'), '--total_iters', '6')
    assert main(flags + ['--resume_iter', 'latest']) == 1
    err = capsys.readouterr().err
    assert '000004_optims.ckpt' in err and 'the file is empty (0 bytes)' in err
    assert 'step 4 is damaged; the newest intact earlier step is 2: pass --resume_iter 2' in err
    assert not (copy_of / 'checkpoints' / '000005_nets.ckpt').exists()
    assert main(flags + ['--resume_iter', '2']) == 0   # the advice works and replaces the damaged step
    assert read_checkpoint(str(copy_of / 'checkpoints' / '000004_optims.ckpt'))['step'] == 4


# ----------------------------------------------------------------------------------------------
# The non-finite guard
# ----------------------------------------------------------------------------------------------

def _error_line(err):
    """The one 'error: ...' message of a failed command (stderr also holds the progress bar)."""
    messages = [line for line in err.splitlines() if line.startswith('error: ')]
    assert len(messages) == 1 and 'Traceback' not in err, err[-2000:]
    return messages[0]


def _assert_all_checkpoints_finite(checkpoint_dir):
    paths = sorted(checkpoint_dir.glob('*.ckpt'))
    for path in paths:
        read_checkpoint(str(path))   # refuses a file with NaN/inf (or a bad digest)
    return [p.name for p in paths]


def test_a_diverging_run_stops_before_saving_anything(seasons32, tmp_path, capsys):
    assert main(tiny_flags(seasons32, tmp_path, '--lr', '1e6', '--print_every', '1', '--save_every', '1')) == 1
    message = _error_line(capsys.readouterr().err)
    assert 'training diverged at iteration 1: the loss term' in message and 'is nan' in message
    assert 'no checkpoint of this run was saved before it' in message
    assert '--lr (now 1000000.0)' in message and '--lambda_*' in message
    assert _assert_all_checkpoints_finite(tmp_path / 'checkpoints') == []


def test_divergence_between_logging_steps_is_caught_at_the_save(seasons32, copy_of, capsys):
    """A huge loss weight blows up Adam's moments while the logged (unweighted) terms stay finite:
    the check of the state at the save stops the run, and the earlier checkpoints are left as they were."""
    flags = replaced(tiny_flags(seasons32, copy_of, '--sample_every', '0', '--print_every', '1',
                                '--save_every', '1', '--lambda_sty', '1e38'), '--total_iters', '10')
    assert main(flags + ['--resume_iter', 'latest']) == 1
    message = _error_line(capsys.readouterr().err)
    assert 'training diverged at iteration 5: the optimizer state generator/' in message
    assert 'holds NaN or infinite values' in message or 'holds values up to' in message
    assert 'step 5 was not saved; the newest good checkpoint is step 4' in message and '--resume_iter 4' in message
    assert _assert_all_checkpoints_finite(copy_of / 'checkpoints') == [
        f'00000{step}_{kind}.ckpt' for step in (2, 4) for kind in ('nets', 'nets_ema', 'optims')]


def test_the_save_check_names_the_tensor_and_writes_no_file_of_the_step(seasons32, tmp_path, capsys, monkeypatch):
    import core.trainer
    real_step = core.trainer.train_step

    def poisoned(run, cfg, batch, step, device):
        stats = real_step(run, cfg, batch, step, device)
        if step == 2:   # iteration 3: the EMA generator goes bad, the logged losses do not show it
            with torch.no_grad():
                run.nets_ema.generator.from_rgb.weight[0, 0, 0, 0] = float('inf')
        return stats
    monkeypatch.setattr(core.trainer, 'train_step', poisoned)
    assert main(tiny_flags(seasons32, tmp_path, '--sample_every', '0', '--save_every', '1')) == 1
    message = _error_line(capsys.readouterr().err)
    assert ('training diverged at iteration 3: the EMA weight generator/from_rgb.weight holds NaN or infinite '
            'values; step 3 was not saved; the newest good checkpoint is step 2') in message
    assert len(_assert_all_checkpoints_finite(tmp_path / 'checkpoints')) == 6


def test_resume_and_inference_refuse_a_checkpoint_with_nan(seasons32, copy_of, capsys):
    """E.g. written by an older version without the guard: the digest matches, the values are NaN."""
    for kind in ('nets', 'nets_ema'):
        path = copy_of / 'checkpoints' / f'000004_{kind}.ckpt'
        payload = safe_load(str(path))
        payload['generator']['from_rgb.bias'][0] = float('nan')
        atomic_save({**payload, 'digest': payload_digest(payload)}, str(path))
    flags = tiny_flags(seasons32, copy_of, '--sample_every', '0')
    assert main(replaced(flags, '--total_iters', '6') + ['--resume_iter', 'latest']) == 1
    message = _error_line(capsys.readouterr().err)
    assert '000004_nets.ckpt holds NaN or infinite values (generator/from_rgb.bias)' in message
    assert 'pass --resume_iter 2' in message
    assert main(with_mode(flags, 'sample', '--resume_iter', '4', '--result_dir', str(copy_of / 'out'),
                           '--src_dir', str(seasons32 / 'val'), '--ref_dir', str(seasons32 / 'val'))) == 1
    message = _error_line(capsys.readouterr().err)
    assert '000004_nets_ema.ckpt holds NaN or infinite values' in message and 'pass --resume_iter 2' in message


def test_processes_stop_together_when_one_finds_nan_at_a_save(seasons32, tmp_path):
    """Rank 1 alone holds a NaN after iteration 2: both processes stop at that save (no hang), step 2 is not
    written, and the message is printed."""
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           os.path.join(ROOT, 'tests', 'integrity_worker.py'),
           *tiny_flags(seasons32, tmp_path, '--batch_size', '4', '--save_every', '1', '--print_every', '0',
                       '--sample_every', '0')]
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'STARGAN_TEST_NAN_AT': '2'}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert out.stderr.count('training diverged at iteration 2') == 2, out.stderr[-3000:]   # one per process
    assert 'the weight discriminator/' in out.stderr and 'state of another process' in out.stderr
    assert _assert_all_checkpoints_finite(tmp_path / 'checkpoints') == [
        f'000001_{kind}.ckpt' for kind in ('nets', 'nets_ema', 'optims')]


# ----------------------------------------------------------------------------------------------
# Records across resumes
# ----------------------------------------------------------------------------------------------

def _logged_steps(run_dir):
    lines = (run_dir / 'checkpoints' / 'stats.jsonl').read_text().splitlines()
    return [json.loads(line)['step'] for line in lines]


def _tensorboard_steps(run_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir / 'checkpoints' / 'tensorboard'))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_kill_and_resume_leave_one_record_per_step(seasons32, tmp_path, monkeypatch, capsys):
    """Killed in iteration 4 after logging 1-3 with the last save at 2: the resumed run drops the record of 3
    (and a line torn by the kill) and logs 3 and 4 again, in stats.jsonl and in TensorBoard."""
    flags = tiny_flags(seasons32, tmp_path, '--sample_every', '0', '--print_every', '1')
    restore = interrupt_training(monkeypatch, 3)
    assert main(flags) == 130
    restore()
    assert _logged_steps(tmp_path) == [1, 2, 3]
    with open(tmp_path / 'checkpoints' / 'stats.jsonl', 'a') as f:
        f.write('{"step": 4, "elapsed_s": 1.')   # torn by the kill
    capsys.readouterr()

    assert main(flags + ['--resume_iter', 'latest']) == 0
    assert 'dropped 2 line(s)' in capsys.readouterr().out
    assert _logged_steps(tmp_path) == [1, 2, 3, 4]
    records = [json.loads(line) for line in (tmp_path / 'checkpoints' / 'stats.jsonl').read_text().splitlines()]
    points = _tensorboard_steps(tmp_path, 'G/latent/adv')
    assert [step for step, _ in points] == [1, 2, 3, 4]
    assert [value for _, value in points] == pytest.approx([r['G/latent/adv'] for r in records])


def test_a_finished_run_resumed_again_changes_no_file(seasons32, copy_of, capsys):
    before = _snapshot(copy_of)
    for resume in ('latest', '4'):
        assert main(tiny_flags(seasons32, copy_of, '--print_every', '3', '--resume_iter', resume)) == 0
        assert 'nothing to do: resuming at step 4 and --total_iters is 4' in capsys.readouterr().out
        assert _snapshot(copy_of) == before


def test_config_changes_are_shown_before_config_json_is_rewritten(seasons32, copy_of, capsys):
    path = copy_of / 'checkpoints' / 'config.json'
    flags = replaced(tiny_flags(seasons32, copy_of, '--sample_every', '0', '--print_every', '2'), '--total_iters', '6')
    assert main(flags + ['--resume_iter', 'latest']) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if 'the config differs' in line]
    assert len(lines) == 1 and lines[0].startswith(f'train: the config differs from {path}: ')
    # the run folder was copied, so its paths changed too
    for change in ('--print_every 1 -> 2', '--total_iters 4 -> 6', f'--checkpoint_dir {copy_of.parent}'):
        assert change in lines[0]
    assert lines[0].endswith('; writing the new one') and '--resume_iter' not in lines[0]
    assert json.loads(path.read_text())['total_iters'] == 6
    assert main(replaced(flags, '--total_iters', '8') + ['--resume_iter', '6']) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if 'the config differs' in line]
    assert lines == [f'train: the config differs from {path}: --total_iters 6 -> 8; writing the new one']
    assert _logged_steps(copy_of) == [1, 2, 3, 4, 6, 8]


def test_a_resume_uses_the_learning_rate_of_its_flags(seasons32, copy_of):
    """The divergence message advises a lower --lr; resuming with one must not keep the saved one."""
    flags = replaced(tiny_flags(seasons32, copy_of, '--sample_every', '0', '--lr', '5e-05'), '--total_iters', '6')
    assert main(flags + ['--resume_iter', 'latest']) == 0
    optims = read_checkpoint(str(copy_of / 'checkpoints' / '000006_optims.ckpt'))
    assert [g['lr'] for g in optims['generator']['param_groups']] == [5e-05]
    assert [g['lr'] for g in optims['mapping_network']['param_groups']] == [1e-06]   # --f_lr unchanged
