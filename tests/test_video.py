"""Video frames and the streaming ffmpeg writer."""
import math
import os

import imageio_ffmpeg
import numpy as np
import pytest
import torch

import core.video as video
from conftest import assert_close_scaled
from core.model import Generator
from core.video import (VideoError, VideoWriter, num_video_frames, path_schedule, slide_column, source_strip,
                        style_path_frames, transition_alphas, write_video)
from core.visualize import to_uint8


def read_video(path):
    """(frames (T, H, W, 3) uint8, metadata) decoded with the imageio-ffmpeg binary."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta['size']
    frames = [np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader]
    return np.stack(frames), meta


def test_alphas_reproduce_upstream_and_scale():
    upstream = [0] + [1 / (1 + math.exp(-a)) for a in np.arange(-5, 5, 0.5)] + [1] * 10
    assert transition_alphas(31) == pytest.approx(upstream, abs=1e-12)
    for n in (2, 3, 7, 31, 60):
        alphas = transition_alphas(n)
        assert len(alphas) == n and alphas[0] == 0 and alphas[-1] == 1
        assert all(a <= b for a, b in zip(alphas, alphas[1:]))


def test_schedule_lengths_and_single_style():
    assert num_video_frames(3, 31) == 2 * 31 + 10          # upstream: transitions + 10 repeats of the last
    assert num_video_frames(1, 31) == 1 + 10
    schedule = path_schedule(3, 5)
    assert schedule[0] == (0, 1, 0.0) and schedule[5] == (1, 2, 0.0)
    assert schedule[-1] == schedule[-2] == (1, 2, 1.0)


def test_slide_column_and_strip_layout():
    h = w = 4
    x_prev, x_next = torch.full((3, h, w), 0.5), torch.full((3, h, w), -0.5)
    start = slide_column(x_prev, x_next, 0.0, margin=2)
    assert start.shape == (3, 2 * h, w + 2)
    assert (start[:, :h] == -1).all() and (start[:, h:, :w] == 0.5).all() and (start[:, :, w:] == -1).all()
    end = slide_column(x_prev, x_next, 1.0, margin=2)
    assert (end[:, :h, :w] == 0.5).all() and (end[:, h:, :w] == -0.5).all()

    x_src = torch.arange(2.0).view(2, 1, 1, 1).expand(2, 3, h, w)
    x_fake = x_src + 10
    strip = source_strip(x_src, x_fake)
    assert strip.shape == (3, 2 * h, 2 * w)
    assert (strip[:, :h, w:] == 1).all() and (strip[:, h:, :w] == 10).all() and (strip[:, h:, w:] == 11).all()


def test_style_path_frames_decode_the_interpolated_styles():
    torch.manual_seed(0)
    G = Generator(img_size=32, style_dim=8, max_conv_dim=16, base_dim=8).eval()
    x_src, x_ref = torch.randn(2, 3, 32, 32), torch.randn(3, 3, 32, 32)
    styles = torch.randn(3, 8)
    frames = list(style_path_frames(G, x_src, styles, 4, x_ref=x_ref, margin=4))
    assert len(frames) == num_video_frames(3, 4) and frames[0].shape == (3, 64, 32 + 4 + 2 * 32)
    with torch.no_grad():
        first = G(x_src, styles[:1])
        middle = G(x_src, torch.lerp(styles[1:2], styles[2:3], transition_alphas(4)[2]))
    assert_close_scaled(frames[0][:, 32:, 36:68], first[0], rel=3e-5)   # networks: as in test_model.py
    assert_close_scaled(frames[4 + 2][:, 32:, 68:], middle[1], rel=3e-5)
    assert torch.equal(frames[0][:, :32, 36:68], x_src[0])
    assert frames[-1] is frames[-2]   # the hold reuses the last frame instead of decoding it again


def test_writer_streams_frames_padded_to_even_size(tmp_path):
    colours = torch.tensor([[-1.0, -1.0, -1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [1.0, 1.0, 1.0]])
    frames = (colours[t % 4].view(3, 1, 1).expand(3, 21, 33) for t in range(9))
    path = tmp_path / 'out' / 'clip.mp4'
    assert write_video(str(path), frames, 9, fps=12.5) == 9
    decoded, meta = read_video(path)
    assert decoded.shape == (9, 22, 34, 3)        # 21 x 33 padded to even
    assert meta['fps'] == pytest.approx(12.5) and meta['codec'] == 'h264' and 'yuv420p' in meta['pix_fmt']
    expected = to_uint8(colours).numpy().astype(int)   # (4, 3)
    for t in range(9):
        centre = decoded[t, 4:16, 4:28].reshape(-1, 3).mean(axis=0)
        assert np.abs(centre - expected[t % 4]).max() < 12, (t, centre)
    assert os.listdir(path.parent) == ['clip.mp4']


def test_failure_midway_leaves_previous_file_and_no_temp(tmp_path):
    path = tmp_path / 'clip.mp4'
    path.write_bytes(b'previous video')

    def frames():
        yield torch.zeros(3, 16, 16)
        raise RuntimeError('generator broke')

    with pytest.raises(RuntimeError):
        write_video(str(path), frames(), 5, fps=10)
    assert path.read_bytes() == b'previous video'
    assert os.listdir(tmp_path) == ['clip.mp4']


def test_ffmpeg_from_path_else_from_the_wheel(monkeypatch):
    monkeypatch.setattr(video.shutil, 'which', lambda name: None)
    assert video.ffmpeg_executable() == imageio_ffmpeg.get_ffmpeg_exe()
    monkeypatch.setattr(video.shutil, 'which', lambda name: '/opt/bin/' + name)
    assert video.ffmpeg_executable() == '/opt/bin/ffmpeg'


@pytest.mark.parametrize('exe', ['/nonexistent/ffmpeg', '/bin/false'])
def test_broken_ffmpeg_gives_video_error_and_no_file(tmp_path, monkeypatch, exe):
    monkeypatch.setattr(video, 'ffmpeg_executable', lambda: exe)
    frames = (torch.zeros(3, 16, 16) for _ in range(200))
    with pytest.raises(VideoError):
        write_video(str(tmp_path / 'clip.mp4'), frames, 200, fps=10)
    assert os.listdir(tmp_path) == []


def test_writer_context_removes_temp_on_error(tmp_path):
    with pytest.raises(KeyError):
        with VideoWriter(str(tmp_path / 'clip.mp4'), 16, 16, 10) as writer:
            writer.write(torch.zeros(3, 16, 16, dtype=torch.uint8))
            raise KeyError('stop')
    assert os.listdir(tmp_path) == []
