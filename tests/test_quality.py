"""The CPU quality benchmark: classifier, structure measure, scores of known translators, the command line."""
import importlib.util
import json
import os

import pytest
import torch
from munch import Munch

import metrics.benchmark as B
import metrics.classifier as C
import metrics.structure as S
from conftest import ROOT, tiny_flags
from core.config import parse_config
from core.data.images import list_domains
from core.trainer import train
from metrics.eval import evaluate_nets
from metrics.registry import build_metrics


def read_json(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope='module')
def qcfg(seasons32, tmp_path_factory):
    cache = tmp_path_factory.mktemp('quality')
    return parse_config(tiny_flags(seasons32, cache, '--fid_stats_dir', str(cache / 'cache'))[2:]
                        + ['--mode', 'eval', '--num_outs_per_domain', '2'])


@pytest.fixture(scope='module')
def classifier(qcfg):
    return C.load_or_train_classifier(qcfg, 'cpu')


def test_classifier_learns_the_domains_and_is_cached(qcfg, classifier, monkeypatch):
    assert classifier.val_acc >= 0.9
    assert os.path.isfile(classifier.path) and 'domain_classifier_v1_32px_' in classifier.path
    monkeypatch.setattr(C, 'train_domain_classifier', lambda *a, **k: pytest.fail('trained again'))
    again = C.load_or_train_classifier(qcfg, 'cpu')
    assert again.path == classifier.path and again.val_acc == classifier.val_acc


def test_edge_agreement_tracks_the_layout_not_the_colours():
    from core.data.synthetic import layout_seed, render_scene

    def image(index, domain):
        pixels = render_scene(layout_seed('seasons', 'summer', 'val', index), 'seasons', domain, 64)
        return torch.from_numpy(pixels).permute(2, 0, 1).float().unsqueeze(0) / 127.5 - 1
    gt = image(0, 'winter')
    same_layout = S.edge_agreement(image(0, 'summer'), gt).item()
    other_layout = S.edge_agreement(image(1, 'winter'), gt).item()
    assert S.edge_agreement(gt, gt).item() == pytest.approx(1.0)
    assert same_layout > other_layout + 0.2


class Oracle(torch.nn.Module):
    """Translates every val image into the ground-truth rendering of its layout (style = one-hot domain)."""

    def __init__(self, cfg, x_val, paths, names, params):
        super().__init__()
        self.cfg, self.x_val, self.paths, self.names, self.params = cfg, x_val, paths, names, params

    def forward(self, x_src, s):
        out = []
        for x, y_trg in zip(x_src, s.argmax(1).tolist()):
            k = next(i for i, v in enumerate(self.x_val) if torch.equal(v, x))
            src = os.path.basename(os.path.dirname(self.paths[k]))
            out.append(S.ground_truth(self.params, self.paths[k], src, self.names[y_trg], self.cfg.img_size))
        return torch.stack(out)


def stub_nets(generator, num_domains):
    one_hot = torch.nn.functional.one_hot
    return Munch(generator=generator,
                 mapping_network=lambda z, y: one_hot(y, num_domains).float(),
                 style_encoder=lambda x, y: one_hot(y, num_domains).float())


def test_scores_of_known_translators(qcfg, classifier):
    names = list_domains(qcfg.val_img_dir)
    x_val, _, paths = C.load_tree(qcfg.val_img_dir, qcfg.img_size)
    params = S.synthetic_params(qcfg.val_img_dir)
    oracle = B.quality_scores(stub_nets(Oracle(qcfg, x_val, paths, names, params), 4), qcfg, 'cpu', classifier)
    identity = B.quality_scores(stub_nets(lambda x, s: x, 4), qcfg, 'cpu', classifier)
    assert oracle['structure_ground_truth'] == 1.0 and oracle['num_translations'] == 2 * 12 * 3
    assert oracle['structure'] == pytest.approx(1.0) and oracle['domain_acc'] >= 0.9
    assert identity['domain_acc'] <= 0.1                   # it stays in the source domain
    assert 0.3 < identity['structure'] < oracle['structure']
    # returning the input scores exactly the identity baseline printed beside every structure figure
    assert identity['structure'] == pytest.approx(identity['identity_structure'], abs=1e-9)
    assert oracle['identity_structure'] == pytest.approx(identity['identity_structure'], abs=1e-9)
    assert identity['diversity'] == 0.0 and oracle['diversity'] == 0.0   # one output whatever the style
    assert oracle['domain_acc_chance'] == 0.25
    assert set(oracle) >= {'domain_acc_latent', 'domain_acc_reference', 'domain_acc', 'structure'}
    assert all(isinstance(v, float) for v in oracle.values())


def real_target_nets(x_val, y_val, img_size):
    """Outputs are real val images of the target domain: the reference image itself (reference
    mode) or one picked by z (latent mode); the source is ignored."""
    def generator(x, s):
        return s.view(-1, 3, img_size, img_size).expand(len(x), -1, -1, -1)

    def mapping_network(z, y):
        members = [torch.nonzero(y_val == t).flatten() for t in y.tolist()]
        pick = [m[int(abs(v) * 1000) % len(m)] for m, v in zip(members, z[:, 0].tolist())]
        return x_val[torch.stack(pick)].flatten(1)
    return Munch(generator=generator, mapping_network=mapping_network,
                 style_encoder=lambda x, y: x.flatten(1))


def test_real_target_images_score_the_real_data_reference_points(qcfg, classifier):
    x_val, y_val, _ = C.load_tree(qcfg.val_img_dir, qcfg.img_size)
    scores = B.quality_scores(real_target_nets(x_val, y_val, qcfg.img_size), qcfg, 'cpu', classifier)
    assert classifier.val_acc == 1.0   # so every real image of the target domain is a hit
    assert scores['domain_acc'] == scores['classifier_val_acc'] == 1.0
    # 3 val images per domain, fewer than DIVERSITY_STYLES: the references are all of them, so the
    # outputs of one source spread exactly as the real images of the domain do
    assert scores['diversity_reference'] == pytest.approx(1.0, abs=1e-6)
    assert 0.3 < scores['diversity_latent'] <= 1.5 and scores['real_spread'] > 0


def test_diversity_measures():
    x = torch.rand(6, 3, 32, 32) * 2 - 1
    features = B.StyleFeatures()
    assert torch.equal(features(x), B.StyleFeatures()(x))   # fixed by its seed
    constant = features(x[:1]).expand(5, -1).unsqueeze(1)    # (K, 1, d): one source, five equal outputs
    assert B.mean_pairwise_distance(constant).item() == 0.0
    pair = torch.tensor([[[0., 0.]], [[3., 4.]]])            # (2, 1, 2)
    assert B.mean_pairwise_distance(pair).item() == 5.0


def test_scores_train_the_classifier_when_none_is_given(qcfg, tmp_path):
    """As bench/ablation.py calls it: quality_scores(nets_ema, cfg, device) alone."""
    cfg = qcfg.replace(fid_stats_dir=str(tmp_path / 'fresh'))
    scores = B.quality_scores(stub_nets(lambda x, s: x, 4), cfg, 'cpu')
    assert scores['classifier_val_acc'] >= 0.9 and scores['domain_acc'] <= 0.1
    assert len(os.listdir(tmp_path / 'fresh')) == 1


def test_benchmark_command_line_on_a_trained_checkpoint(seasons32, tmp_path, capsys, classifier):
    train(parse_config(tiny_flags(seasons32, tmp_path, '--total_iters', '2', '--sample_every', '0')))
    spec = importlib.util.spec_from_file_location('bench_quality', os.path.join(ROOT, 'bench', 'quality.py'))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    flags = tiny_flags(seasons32, tmp_path)[2:] + ['--resume_iter', 'latest', '--classifier', classifier.path]
    assert bench.main(flags) == 0
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    values = dict(part.split('=') for part in last.split())
    assert list(values) == ['domain_acc', 'structure', 'diversity', 'identity_structure']
    acc, structure, diversity, identity = (float(v) for v in values.values())
    assert 0 <= acc <= 1 and -1 <= structure <= 1 and diversity >= 0 and -1 <= identity <= 1
    assert 'chance 0.250' in out and 'input unchanged' in out and 'real data 1.000' in out
    assert bench.main(flags + ['--val_img_dir', str(tmp_path / 'nowhere')]) == 1


def test_domain_acc_and_structure_as_eval_metrics_score_the_shared_outputs(qcfg, classifier):
    """--metrics domain_acc,structure: per task, from eval's own outputs (identity translator)."""
    cfg = qcfg.replace(metrics=('domain_acc', 'structure'))
    nets = stub_nets(Munch(run_encoder=lambda x: x, run_decoder=lambda enc, s: enc), 4)
    metrics = build_metrics(cfg, 'cpu')   # the classifier comes from the cache the fixture filled
    assert metrics[0].classifier.path == classifier.path
    means = evaluate_nets(nets, cfg, 3, 'cpu', metrics)
    assert sorted(means) == ['domain_acc_latent/mean', 'domain_acc_reference/mean',
                             'structure_latent/mean', 'structure_reference/mean']
    assert means['domain_acc_latent/mean'] <= 0.1 and 0.3 < means['structure_latent/mean'] < 1
    names = list_domains(cfg.val_img_dir)
    body = read_json(os.path.join(cfg.eval_dir, 'structure_00003_reference.json'))
    assert list(body)[:12] == [f'structure_reference/{s}2{t}' for t in names for s in names if s != t]
    assert body['ground_truth'] is True   # the synthetic data renders every layout in every domain
    acc = read_json(os.path.join(cfg.eval_dir, 'domain_acc_00003_latent.json'))
    assert acc['classifier_val_acc'] == classifier.val_acc and acc['classifier'] == os.path.basename(classifier.path)


def test_bench_scripts_read_the_demo_model_unless_told_otherwise():
    from core.config import parse_config
    from core.demo import demo_model_flags
    assert demo_model_flags([]) == ['--preset', 'demo', '--resume_iter', 'latest']
    step = parse_config(['--mode', 'sample'] + demo_model_flags(['--resume_iter', '300']))
    assert step.preset == 'demo' and step.resume_iter == 300 and step.img_size == 32   # the demo run, step 300
    assert demo_model_flags(['--checkpoint', 'x.ckpt']) == ['--checkpoint', 'x.ckpt']
    assert demo_model_flags(['--preset=seasons']) == ['--preset=seasons', '--resume_iter', 'latest']
    assert demo_model_flags(['--checkpoint_dir', 'ck', '--resume_iter', '5']) == ['--checkpoint_dir', 'ck',
                                                                                 '--resume_iter', '5']
