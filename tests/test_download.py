"""download.sh: unknown targets fail loudly; the weight target checks SHA-256 without fetching what exists."""
import os
import subprocess

from conftest import ROOT

SCRIPT = os.path.join(ROOT, 'download.sh')


def run(*args, env=None):
    return subprocess.run(['bash', SCRIPT, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_unknown_target_fails_with_the_list_of_targets():
    result = run('no-such-target')
    assert result.returncode == 1
    assert "error: unknown target 'no-such-target'" in result.stderr
    assert 'metric-weights' in result.stderr and 'synthetic-seasons' in result.stderr
    assert run().returncode == 1


def test_weather_without_archive_prints_the_manual_steps():
    result = run('weather')
    assert result.returncode == 0
    assert 'ieee-dataport.org' in result.stdout and 'bash download.sh weather PATH/TO/THE/ARCHIVE.zip' in result.stdout


def test_metric_weights_reject_a_file_with_the_wrong_hash(tmp_path):
    for name in ('inception_v3_google-0cc3c7bd.pth', 'pt_inception-2015-12-05-6726825d.pth',
                 'alexnet-owt-7be5be79.pth'):
        (tmp_path / name).write_bytes(b'not the weights')
    result = run('metric-weights', env={'STARGAN_WEIGHTS_DIR': str(tmp_path)})
    assert result.returncode == 1
    assert result.stdout.count('already there') == 3            # nothing is downloaded again
    assert 'does not match its SHA-256' in result.stderr and 'bash download.sh metric-weights' in result.stderr


def test_the_celeba_hq_network_is_refused_and_not_listed():
    """It needs --w_hpf 1 (the FAN high-pass path), which is not implemented: fail before any download."""
    for target in ('pretrained-stargan-v2-celeba-hq', 'pretrained-network-celeba-hq'):
        result = run(target)
        assert result.returncode == 1 and 'downloading' not in result.stdout
        assert f'error: {target} is not offered' in result.stderr and '--w_hpf 1' in result.stderr
    usage = run('help').stdout
    assert 'celeba-hq-dataset' in usage and 'pretrained-stargan-v2-afhq' in usage
    assert 'pretrained-stargan-v2-celeba-hq' not in usage and 'pretrained-network-celeba-hq' not in usage
