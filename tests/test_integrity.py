"""Integrity of a run: unreadable and damaged checkpoints, digests, the non-finite guard, and
records (stats.jsonl, TensorBoard, config.json) that stay true across resumes."""
import pytest
import torch

from core.fileio import CheckpointError, safe_load


@pytest.mark.parametrize('content', [b'', b'PK\x03\x04', b'hello world' * 3])
def test_unreadable_files_give_the_same_clear_message(tmp_path, content):
    """0 bytes (EOFError), a cut zip (RuntimeError) and garbage (KeyError inside torch.load) alike."""
    path = tmp_path / 'bad.ckpt'
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        safe_load(str(path))
    assert str(path) in str(err.value) and 'truncated or corrupt' in str(err.value)
    assert ('0 bytes' in str(err.value)) == (content == b'')


def test_a_truncated_checkpoint_is_unreadable(tmp_path):
    path = tmp_path / 'cut.ckpt'
    torch.save({'w': torch.randn(4096)}, str(path))
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match='truncated or corrupt'):
        safe_load(str(path))
