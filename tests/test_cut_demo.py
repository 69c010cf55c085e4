"""--mode demo for the CUT family: data, training, translations and the quality figures with their baselines."""
import contextlib
import functools
import io
import re

import pytest
import torch
from torch import nn

import core.cut.demo
import metrics.classifier
from core.config import parse_config
from core.cut.demo import quality_scores
from main import main

VAL_IMAGES = 6


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    """A tiny demo run (6 train and val images per domain, 1 epoch, 4-channel networks): (root, argv, output)."""
    root = tmp_path_factory.mktemp('cutdemo')
    argv = ['--mode', 'demo', '--model', 'cut', '--dataroot', str(root / 'data'), '--checkpoints_dir', str(root),
            '--results_dir', str(root / 'results'), '--ngf', '4', '--ndf', '4', '--n_epochs', '1',
            '--n_epochs_decay', '0', '--max_dataset_size', '3', '--seed', '1']
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.setattr(core.cut.demo, 'DEMO_TRAIN_PER_DOMAIN', 6)
        patch.setattr(core.cut.demo, 'DEMO_VAL_PER_DOMAIN', VAL_IMAGES)
        patch.setattr(metrics.classifier, 'train_domain_classifier',   # a quicker classifier for the test
                      functools.partial(metrics.classifier.train_domain_classifier, steps=40))
        assert main(argv) == 0
        assert main(argv) == 0   # a second run reuses the data and the finished run
    return root, argv, out.getvalue()


def test_the_demo_trains_translates_and_prints_the_quality_figures(demo_run):
    root, argv, out = demo_run
    acc = re.search(r'domain_acc ([0-9.]+) +\(inputs unchanged ([0-9.]+), chance 0\.25, real images ([0-9.]+)\)', out)
    structure = re.search(r'structure +([0-9.-]+) +\(input unchanged ([0-9.]+), perfect 1\)', out)
    assert acc and structure, out
    assert 0 <= float(acc.group(1)) <= 1 and float(acc.group(2)) <= 0.25 and float(acc.group(3)) > 0.25
    fakes = list((root / 'results' / 'demo' / 'val_latest' / 'images' / 'fake_B').iterdir())
    assert len(fakes) == VAL_IMAGES   # every summer val image (--max_dataset_size limits training only)
    assert (root / 'demo' / 'latest_net_G.pth').is_file() and 'nothing to do' in out


class Unchanged(nn.Module):
    def forward(self, x):
        return x


def test_quality_of_returning_the_input_equals_its_baselines(demo_run):
    cfg = parse_config(demo_run[1])
    scores = quality_scores(Unchanged(), cfg, torch.device('cpu'))
    assert scores['structure'] == pytest.approx(scores['identity_structure'])
    assert scores['domain_acc'] == scores['domain_acc_input'] and scores['structure_ground_truth'] == 1.0
    assert scores['identity_structure'] < 0.99   # summer and winter renderings of a layout differ
