"""Style-interpolation videos, streamed frame by frame into ffmpeg.

Two videos, as in StarGAN v2's utils (Choi et al. 2020):
  video_ref.mp4     the sources' style slides from one reference to the next;
                    a column on the left scrolls the references past.
  video_latent.mp4  the style slides through random latent styles, target
                    domain after target domain.
Each frame shows every source above its translation. Transitions follow
upstream's ease-in-out (a sigmoid ramp, then a hold at the next style); the
video ends by holding its last frame.

Differences from upstream, all deliberate:
  * frames are computed one at a time and piped into ffmpeg, so memory does
    not grow with the length of the video (upstream holds every frame);
  * consecutive references are interpolated whatever their domains, so any
    reference set gives a video (upstream crashes when no two consecutive
    references share a domain);
  * pixel values are rounded half up to uint8 as torchvision's save_image does
    (upstream's video truncates), and frames are padded to even dimensions
    (H.264 with yuv420p, which browsers play, needs them);
  * the size is bounded whatever the folders hold: at most MAX_VIDEO_WIDTH
    pixels wide (max_video_sources) and MAX_VIDEO_FRAMES frames long
    (max_video_styles), so a large --val_batch_size cannot make a video that
    takes hours to render;
  * --fps is the rate of distinct frames (upstream encodes at 30 fps and
    halves the speed of a 25 fps stream, i.e. 12.5 distinct frames per second).
"""
import math
import os
import shutil
import tempfile

import torch
import torch.nn.functional as F_nn
from tqdm import tqdm

from core.utils.errors import UserError, deferred_signals
from core.utils.fileio import file_mode
from core.visualize import to_uint8

HOLD_FRACTION = 10 / 31    # upstream: 31 frames per transition, the last 10 hold the next style
SIGMOID_RANGE = 5.0        # upstream's ramp runs sigmoid(-5) ... sigmoid(4.5)
MAX_VIDEO_WIDTH = 4096     # widest frame that common browser H.264 decoders accept
MAX_VIDEO_FRAMES = 1000    # longest video (80 s at 12.5 fps; upstream's 32 references need 971 frames)
MAX_STDERR_CHARS = 2000    # tail of ffmpeg's error output quoted in messages


class VideoError(UserError):
    """ffmpeg is missing or failed; the message says why."""


# ----------------------------------------------------------------------------------------------
# Timing of the interpolation
# ----------------------------------------------------------------------------------------------

def hold_frames(num_frames):
    """Frames of a transition that hold the next style (10 of upstream's 31)."""
    return round(num_frames * HOLD_FRACTION)


def transition_alphas(num_frames):
    """Interpolation weights of one transition of `num_frames` frames (>= 2).

    0, then a sigmoid ramp from sigmoid(-5) upward, then 1 held. With 31
    frames this is exactly upstream's [0] + sigmoid(-5, -4.5, ..., 4.5) + [1] * 10.
    """
    hold = hold_frames(num_frames)
    ramp = num_frames - 1 - hold
    return ([0.0] + [1 / (1 + math.exp(SIGMOID_RANGE - 2 * SIGMOID_RANGE * k / ramp)) for k in range(ramp)]
            + [1.0] * hold)


def path_schedule(num_styles, num_frames):
    """(k_prev, k_next, alpha) per frame of a video through `num_styles` styles in order.

    One transition per consecutive pair, then the last frame held for
    hold_frames(num_frames) more frames (as upstream). A single style gives
    one frame plus the hold.
    """
    if num_styles == 1:
        steps = [(0, 0, 0.0)]
    else:
        alphas = transition_alphas(num_frames)
        steps = [(k, k + 1, alpha) for k in range(num_styles - 1) for alpha in alphas]
    return steps + [steps[-1]] * hold_frames(num_frames)


def num_video_frames(num_styles, num_frames):
    """Length of the video path_schedule describes."""
    return len(path_schedule(num_styles, num_frames))


def max_video_sources(img_size, ref_column):
    """How many source columns fit in MAX_VIDEO_WIDTH (beside the reference column if ref_column)."""
    extra = img_size + slide_margin(img_size) if ref_column else 0
    return max(1, (MAX_VIDEO_WIDTH - extra) // img_size)


def max_video_styles(num_frames):
    """How many styles a video may walk through with `num_frames` per transition (at least 2)."""
    return max(2, (MAX_VIDEO_FRAMES - hold_frames(num_frames)) // num_frames + 1)


def slide_margin(img_size):
    """Gap between the reference column and the sources (upstream: 32 px at 256 px)."""
    return img_size // 8


# ----------------------------------------------------------------------------------------------
# Frames (values in [-1, 1], on the device of the inputs)
# ----------------------------------------------------------------------------------------------

def source_strip(x_src, x_fake):
    """Every source above its translation, side by side: (N, 3, H, W) x 2 -> (3, 2H, N * W)."""
    pairs = torch.cat([x_src, x_fake], dim=2)                  # (N, 3, 2H, W)
    n, c, h2, w = pairs.shape
    return pairs.permute(1, 2, 0, 3).reshape(c, h2, n * w)    # (3, 2H, N * W)


def slide_column(x_prev, x_next, alpha, margin):
    """Upstream's sliding reference column: x_prev rises from the lower slot while x_next enters.

    x_prev, x_next (3, H, W) -> (3, 2H, W + margin) on a black canvas.
    """
    c, h, w = x_prev.shape
    canvas = x_prev.new_full((c, 2 * h, w + margin), -1.0)
    merged = torch.cat([x_prev, x_next], dim=1)   # (3, 2H, W)
    top = int(h * (1 - alpha))
    canvas[:, top:, :w] = merged[:, :2 * h - top]
    return canvas


@torch.no_grad()
def path_fakes(generator, x_src, styles, num_frames):
    """Yield the translation (N, 3, H, W) of x_src for every frame of path_schedule(K, num_frames).

    styles (K, style_dim) are walked through in order. `generator` needs
    run_encoder and run_decoder; the sources are encoded once, and a repeated
    schedule entry yields the previous tensor again instead of decoding it.
    """
    enc = generator.run_encoder(x_src)
    last_key, x_fake = None, None
    for key in path_schedule(styles.size(0), num_frames):
        if key != last_key:
            k_prev, k_next, alpha = key
            s = torch.lerp(styles[k_prev:k_prev + 1], styles[k_next:k_next + 1], alpha)   # (1, style_dim)
            x_fake = generator.run_decoder(enc, s)
            last_key = key
        yield x_fake


def strip_frames(x_src, fakes, num_styles, num_frames, x_ref=None, margin=0):
    """Yield video frames from the translations `fakes` of path_fakes (same num_styles, num_frames).

    Frames are (3, 2H, N * W): every source above its translation; with x_ref
    (K, 3, H, W) the references' slide column in front: (3, 2H, W + margin + N * W).
    A repeated translation yields the previous frame again.
    """
    last, frame = None, None
    for key, x_fake in zip(path_schedule(num_styles, num_frames), fakes):
        if x_fake is not last:
            frame = source_strip(x_src, x_fake)
            if x_ref is not None:
                k_prev, k_next, alpha = key
                frame = torch.cat([slide_column(x_ref[k_prev], x_ref[k_next], alpha, margin), frame], dim=2)
            last = x_fake
        yield frame


def style_path_frames(generator, x_src, styles, num_frames, x_ref=None, margin=0):
    """The frames (see strip_frames) of a video whose style walks through `styles` (K, style_dim) in order."""
    fakes = path_fakes(generator, x_src, styles, num_frames)
    return strip_frames(x_src, fakes, styles.size(0), num_frames, x_ref, margin)


# ----------------------------------------------------------------------------------------------
# Streaming writer
# ----------------------------------------------------------------------------------------------

def ffmpeg_executable():
    """`ffmpeg` on PATH, else the binary shipped by the imageio-ffmpeg wheel."""
    found = shutil.which('ffmpeg')
    if found:
        return found
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as err:
        raise VideoError(f'no ffmpeg executable: put ffmpeg on PATH or `pip install imageio-ffmpeg` ({err})') from None


class VideoWriter:
    """H.264 (libx264, yuv420p) MP4 written from uint8 frames piped into ffmpeg.

    Frames go to a temporary file next to `path`, renamed to `path` only when
    ffmpeg succeeds; on any failure (Ctrl-C and SIGTERM included) the temporary
    file is removed. Odd frame sizes are padded with black to even ones. Use as
    a context manager, or call open() and then close() or abort().
    """

    def __init__(self, path, width, height, fps):
        """Nothing starts here: open() (or entering the `with` block) makes the temporary file and starts ffmpeg."""
        self.path, self.fps = path, fps
        self.width, self.height = width + width % 2, height + height % 2
        self.frames = 0
        self.finished = False
        self.tmp = self.process = None

    def open(self):
        """Make the temporary file and start ffmpeg; returns self.

        Signals wait meanwhile (deferred_signals), so that when one arrives both are
        recorded on self and abort() removes them.
        """
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        with deferred_signals():
            fd, self.tmp = tempfile.mkstemp(prefix='.' + os.path.basename(self.path) + '.', suffix='.tmp', dir=folder)
            os.close(fd)
            try:
                self.process = self._start_ffmpeg(self.fps)
            except BaseException:
                self._remove_tmp()
                raise
        return self

    def _start_ffmpeg(self, fps):
        import ffmpeg
        stream = (ffmpeg.input('pipe:', format='rawvideo', pix_fmt='rgb24', s=f'{self.width}x{self.height}',
                               framerate=fps)
                  .output(self.tmp, format='mp4', vcodec='libx264', pix_fmt='yuv420p', movflags='+faststart')
                  .global_args('-hide_banner', '-loglevel', 'error')
                  .overwrite_output())
        exe = ffmpeg_executable()
        try:
            return stream.run_async(cmd=exe, pipe_stdin=True, pipe_stderr=True)
        except OSError as err:
            raise VideoError(f'cannot start ffmpeg ({exe}): {err}') from None

    def write(self, frame):
        """Append one frame: uint8 tensor (3, h, w) with h, w at most the video size, on any device."""
        pad_h, pad_w = self.height - frame.size(1), self.width - frame.size(2)
        if pad_h or pad_w:
            frame = F_nn.pad(frame, (0, pad_w, 0, pad_h))   # black on the right and bottom
        data = frame.permute(1, 2, 0).contiguous().cpu().numpy().tobytes()   # (H, W, 3) rgb24
        try:
            self.process.stdin.write(data)
        except (BrokenPipeError, OSError):
            self._fail('ffmpeg stopped accepting frames')
        self.frames += 1

    def close(self):
        """Finish encoding and move the file into place; VideoError if ffmpeg failed."""
        try:
            try:
                self.process.stdin.close()
            except OSError:
                pass
            errors = self.process.stderr.read().decode(errors='replace')
            status = self.process.wait()
        except BaseException:   # Ctrl-C or SIGTERM while ffmpeg finishes: no partial file stays
            self.abort()
            raise
        self.finished = True
        if status != 0 or self.frames == 0:
            self._remove_tmp()
            raise VideoError(f'ffmpeg could not write {self.path}: {errors[-MAX_STDERR_CHARS:].strip() or "no frames"}')
        os.chmod(self.tmp, file_mode())   # mkstemp makes 0600 files; give the usual permissions
        os.replace(self.tmp, self.path)

    def abort(self):
        """Stop ffmpeg and remove the partial file (does nothing once finished, or before open())."""
        if self.finished:
            return
        self.finished = True
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            for pipe in (self.process.stdin, self.process.stderr):
                try:
                    pipe.close()
                except OSError:
                    pass
        self._remove_tmp()

    def _fail(self, what):
        self.process.kill()
        errors = self.process.stderr.read().decode(errors='replace')
        self.abort()
        raise VideoError(f'{what} while writing {self.path}: {errors[-MAX_STDERR_CHARS:].strip()}')

    def _remove_tmp(self):
        if self.tmp is not None and os.path.exists(self.tmp):
            os.remove(self.tmp)

    def __enter__(self):
        try:
            return self.open()
        except BaseException:   # a signal that waited during open()
            self.abort()
            raise

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(path, frames, total, fps, desc=None):
    """Stream `total` frames ((3, H, W) in [-1, 1], all one size) from an iterator into an MP4."""
    writer = None
    try:
        for frame in tqdm(frames, total=total, desc=desc or os.path.basename(path), unit='frame',
                          disable=None, leave=False):
            if writer is None:
                writer = VideoWriter(path, frame.size(2), frame.size(1), fps)   # holds nothing yet
                writer.open()
            writer.write(to_uint8(frame))
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is None:
        raise VideoError(f'no frames to write to {path}')
    writer.close()
    return writer.frames
