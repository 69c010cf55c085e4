"""bench/style_spread.py: its grey-level differences and the renderer's side (the model's side runs
the Translator, tested in test_translator.py; the script itself runs in the docs' --help check)."""
import numpy as np

from bench import style_spread
from core.data.synthetic import layout_seed


def test_mean_abs_is_in_grey_levels_and_pairwise_averages_every_pair():
    black, grey, white = (np.full((4, 4, 3), v, np.uint8) for v in (0, 100, 255))
    assert style_spread.mean_abs(black, white) == 255.0   # uint8 differences do not wrap around
    assert style_spread.pairwise([black, grey, white]) == (100 + 255 + 155) / 3


def test_renderer_styles_differ_within_a_season_and_more_between_seasons():
    seasons = ['autumn', 'spring', 'summer', 'winter']
    picked = [(None, 'summer', layout_seed('seasons', 'summer', 'val', i)) for i in range(2)]
    figures = style_spread.renderer_figures(picked, seasons, 'seasons', num_styles=3, size=16)
    assert 0 < figures['renderer_within'] < figures['renderer_between']
