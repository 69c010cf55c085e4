"""bench/ablation.py: configuration selection, tables, and a tiny end-to-end run with a stand-in quality metric."""
import csv
import io
import sys
import types

import pytest

from bench import ablation
from core.utils.errors import UserError


def test_select_configs_and_additions():
    assert [n for n, _, _ in ablation.select_configs('all')] == list(ablation.CONFIGS)
    chosen = ablation.select_configs('none, patchgcl', ["gcl-clean=--patch_loss patchgcl=0.5 --gcl_self_loops clean"])
    assert [n for n, _, _ in chosen] == ['none', 'patchgcl', 'gcl-clean']
    assert chosen[2][2] == ['--patch_loss', 'patchgcl=0.5', '--gcl_self_loops', 'clean']
    with pytest.raises(UserError, match='unknown nope'):
        ablation.select_configs('none,nope')
    with pytest.raises(UserError, match='own name'):
        ablation.select_configs('put', ['put=--patch_loss dce=1'])
    with pytest.raises(UserError, match='NAME='):
        ablation.select_configs('put', ['--patch_loss dce=1'])


def test_every_builtin_configuration_is_a_valid_run():
    from core.config import parse_config
    args, extra = ablation.parse_args(['--steps', '10'])
    for name, _, flags in ablation.select_configs('all'):
        cfg = parse_config(ablation.run_flags(args, 'data', 'runs/' + name, flags, extra))
        assert cfg.total_iters == 10 and cfg.seed == 777 and cfg.img_size == 32
        assert bool(cfg.patch_losses) == (name != 'none')
    combined = parse_config(ablation.run_flags(args, 'data', 'r', ablation.CONFIGS['src+hdce+patchgcl'][1],
                                               ['--n_patch', '8']))
    assert [n for n, _ in combined.patch_losses] == ['src', 'hdce', 'patchgcl'] and combined.n_patch == 8


def test_tables_render_missing_values():
    rows = [{'config': 'a', 'seed': 7, 'patch_losses': 'put=1', 'median_s_per_iter': 0.25, 'peak_rss_mb': 700.5,
             'train_mem_mb': None, 'plugin_params': 0, 'finite': True, 'domain_acc': 0.5, 'status': 'ok'},
            {'config': 'b', 'seed': 7, 'status': 'failed: error: x'}]
    parsed = list(csv.DictReader(io.StringIO(ablation.table_csv(rows))))
    assert list(parsed[0]) == list(ablation.COLUMNS)
    assert parsed[0]['median_s_per_iter'] == '0.25' and parsed[0]['train_mem_mb'] == ''
    assert parsed[1]['status'] == 'failed: error: x' and parsed[1]['median_s_per_iter'] == ''
    md = ablation.table_markdown(rows, {'steps': 3}, ['a note'])
    assert '| a | 7 | put=1 | 0.2500 | 700 | n/a | 0 | yes | n/a | n/a | 0.5000 | n/a | n/a | n/a | ok |' in md
    assert '| a | put=1 | 1/1 | 0.250 ± 0.000 | 0.500 ± 0.000 | n/a | n/a | n/a |' in md
    assert '| b | n/a | 0/1 | n/a |' in md
    assert md.count('\n|') == 8 and md.rstrip().endswith('- a note')


def test_mean_and_std_over_seeds():
    rows = [{'config': 'x', 'status': 'ok', 'domain_acc': v, 'structure': 0.5} for v in (0.5, 0.7, 0.9)]
    rows.append({'config': 'x', 'status': 'failed: error: y'})
    summary = ablation.summary_rows(rows)[0]
    assert summary['seeds'] == '3/4' and summary['domain_acc'] == '0.700 ± 0.200'
    assert summary['structure'] == '0.500 ± 0.000' and summary['diversity'] == 'n/a'
    args, _ = ablation.parse_args(['--seed', '5', '--seeds', '3'])
    assert ablation.training_seeds(args) == [5, 6, 7] and args.steps == 600


def test_tiny_ablation_end_to_end(tmp_path, monkeypatch, capsys):
    calls = []

    def quality_scores(nets_ema, cfg, device, classifier=None):
        calls.append(cfg.patch_losses)
        assert {'generator', 'mapping_network', 'style_encoder'} <= set(nets_ema)
        assert cfg.facts.domain_names == ('autumn', 'spring', 'summer', 'winter') and device.type == 'cpu'
        params = sum(p.numel() for p in nets_ema.generator.parameters())
        return {'domain_acc_latent': 0.25, 'domain_acc_reference': 0.5, 'domain_acc': 0.375,
                'structure': float(params)}

    monkeypatch.setitem(sys.modules, 'metrics.benchmark', types.SimpleNamespace(quality_scores=quality_scores))
    out = tmp_path / 'abl'
    argv = ['--configs', 'put', '--add', f"broken=--val_img_dir {tmp_path / 'missing'}", '--steps', '3',
            '--num_train', '2', '--num_val', '2', '--batch_size', '2', '--out_dir', str(out), '--n_patch', '8',
            '--seeds', '2']
    assert ablation.main(argv) == 0
    rows = list(csv.DictReader(io.StringIO((out / 'ablation.csv').read_text())))
    assert [(r['config'], r['seed']) for r in rows] == [('put', '777'), ('put', '778'), ('broken', '777'),
                                                        ('broken', '778')]
    put, put2, broken = rows[:3]
    assert put2['status'] == 'ok' and put2['finite'] == 'True'
    assert put['status'] == 'ok' and put['finite'] == 'True' and put['patch_losses'] == 'put=1'
    assert float(put['median_s_per_iter']) > 0 and float(put['peak_rss_mb']) > 0
    assert put['domain_acc'] == '0.375' and float(put['structure']) > 1000
    assert broken['status'].startswith('failed: error: --val_img_dir') and broken['domain_acc'] == ''
    assert calls == [(('put', 1.0),)] * 2                   # only finished runs are scored
    assert (out / 'runs' / 'put' / 'seed778' / 'checkpoints' / '000003_nets_ema.ckpt').is_file()
    stats_jsonl = (out / 'runs' / 'put' / 'seed777' / 'checkpoints' / 'stats.jsonl').read_text()
    assert stats_jsonl.count('\n') == 3 and '"lambda_ds"' in stats_jsonl   # logged by core.trainer.train
    md = (out / 'ablation.md').read_text()
    assert '| put | put=1 | 2/2 |' in md and '| broken | n/a | 0/2 |' in md and 'extra flags: --n_patch 8' in md
    assert 'wall time of this invocation: ' in md and 'training time of all runs: ' in md and 'seeds: 777, 778' in md
    assert '[1/4] put seed 777: ok' in capsys.readouterr().out

    # --reuse keeps the finished runs of the same flags, retries the failed ones, retrains changed ones
    ckpt = out / 'runs' / 'put' / 'seed777' / 'checkpoints' / '000003_nets_ema.ckpt'
    before = ckpt.stat().st_mtime_ns
    assert ablation.main(argv + ['--reuse']) == 0
    printed = capsys.readouterr().out
    assert '[1/4] put seed 777: ok' in printed and printed.count('(finished earlier, reused)') == 2
    assert ckpt.stat().st_mtime_ns == before and calls == [(('put', 1.0),)] * 4   # kept, but scored again
    rows = list(csv.DictReader(io.StringIO((out / 'ablation.csv').read_text())))
    assert rows[0]['median_s_per_iter'] == put['median_s_per_iter'] and rows[2]['status'].startswith('failed')
    changed = [a if a != '8' else '4' for a in argv[:argv.index('--seeds')]] + ['--seeds', '1', '--reuse']
    assert ablation.main(changed) == 0                     # --n_patch 4: not the same run, trained again
    assert 'reused' not in capsys.readouterr().out and ckpt.stat().st_mtime_ns != before


def test_bad_flags_stop_before_any_training(tmp_path, capsys):
    assert ablation.main(['--configs', 'put', '--put_negatives', '0', '--out_dir', str(tmp_path / 'abl')]) == 1
    err = capsys.readouterr().err
    assert 'configuration put' in err and '--put_negatives' in err
    assert not (tmp_path / 'abl').exists()


def test_cut_family_configurations_are_valid_runs():
    from core.config import parse_config
    args, extra = ablation.parse_args(['--family', 'cut', '--steps', '120'])
    assert (args.batch_size, args.num_train, args.num_val, args.out_dir) == (1, 60, 32, 'expr/ablation-cut')
    expected = {'none': (), 'patchnce': ('patchnce',), 'dce': ('dce',), 'src+hdce': ('src', 'hdce'),
                'put': ('put',), 'patchgcl': ('patchgcl',)}
    for name, _, flags in ablation.select_configs('all', (), ablation.CUT_CONFIGS):
        cfg = parse_config(ablation.run_flags(args, 'data', 'runs/' + name, flags, extra))
        assert cfg.model == 'cut' and cfg.seed == 777 and cfg.crop_size == 32 and cfg.batch_size == 1
        assert tuple(n for n, _ in cfg.patch_losses) == expected[name], name
        assert cfg.identity == (name != 'none') and (cfg.n_epochs, cfg.n_epochs_decay) == (2, 0)
        assert cfg.checkpoint_dir == 'runs/' + name + '/checkpoints' and cfg.domains == 'summer,winter'
    hsrc = parse_config(ablation.run_flags(args, 'data', 'r', ablation.CUT_CONFIGS['src+hdce'][1], extra))
    assert hsrc.patch_losses == (('src', 0.1), ('hdce', 1.0)) and hsrc.use_curriculum and hsrc.HDCE_gamma == 50
    assert parse_config(ablation.run_flags(args, 'data', 'r', ablation.CUT_CONFIGS['put'][1], extra)).put_negatives == 5
    with pytest.raises(UserError, match='unknown src$|unknown src;'):
        ablation.select_configs('src', (), ablation.CUT_CONFIGS)


def test_cut_family_steps_are_whole_epochs(tmp_path, capsys):
    assert ablation.main(['--family', 'cut', '--configs', 'put', '--steps', '50', '--out_dir', str(tmp_path)]) == 1
    assert '--steps 50' in capsys.readouterr().err and not (tmp_path / 'runs').exists()


def test_tiny_cut_ablation_end_to_end(tmp_path, monkeypatch):
    calls = []

    def quality_scores(G, cfg, device):
        calls.append((cfg.patch_losses, cfg.checkpoints_dir, cfg.seed))
        assert type(G).__name__ == 'ResnetGenerator' and not G.training
        return {'domain_acc': 0.5, 'domain_acc_input': 0.0, 'classifier_val_acc': 1.0, 'structure': 0.25,
                'identity_structure': 0.3, 'num_translations': 2.0}

    monkeypatch.setattr(ablation.FAMILIES['cut'], 'scorer', lambda: quality_scores)
    out = tmp_path / 'abl'
    assert ablation.main(['--family', 'cut', '--configs', 'src+hdce', '--steps', '2', '--num_train', '2',
                          '--num_val', '2', '--seeds', '1', '--out_dir', str(out), '--num_patches', '8']) == 0
    rows = list(csv.DictReader(io.StringIO((out / 'ablation.csv').read_text())))
    assert list(rows[0]) == list(ablation.FAMILIES['cut'].columns) and len(rows) == 1
    row = rows[0]
    assert row['status'] == 'ok' and row['finite'] == 'True' and row['patch_losses'] == 'src=0.1 + hdce=1'
    assert float(row['median_s_per_iter']) > 0 and row['domain_acc'] == '0.5' and row['identity_structure'] == '0.3'
    assert calls == [((('src', 0.1), ('hdce', 1.0)), str(out), 777)]   # one classifier cache for every run
    assert (out / 'runs' / 'src+hdce' / 'seed777' / 'checkpoints' / 'latest_net_G.pth').is_file()
    md = (out / 'ablation.md').read_text()
    assert '# Patch-loss ablation of the CUT family' in md and 'family: cut' in md
    assert '| src+hdce | src=0.1 + hdce=1 | 1/1 |' in md and 'extra flags: --num_patches 8' in md
