"""download.sh: unknown targets fail loudly; the weight target checks SHA-256 without fetching what exists;
archives are checked against their recorded SHA-256 and their folder names before anything is extracted."""
import hashlib
import os
import subprocess
import zipfile

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


def test_no_target_prints_the_usage():
    result = run()
    assert result.returncode == 0 and result.stdout.startswith('usage: bash download.sh <target>')
    assert 'STARGAN_SHA256' in result.stdout


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


# ----------------------------------------------------------------------------------------------
# Archives: a crafted alps_seasons.zip placed where the script keeps its downloads ("already there")
# ----------------------------------------------------------------------------------------------

def _seasons_zip(downloads, folders):
    """data/downloads/alps_seasons.zip holding one image per folder name; returns its SHA-256."""
    downloads.mkdir(parents=True, exist_ok=True)
    path = downloads / 'alps_seasons.zip'
    with zipfile.ZipFile(path, 'w') as archive:
        for folder in folders:
            archive.writestr(f'alps_seasons/{folder}/0001.jpg', b'jpeg bytes of ' + folder.encode())
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _extracted(downloads):
    return sorted(p.name for p in downloads.iterdir() if p.name != 'alps_seasons.zip')


def test_an_archive_without_a_recorded_digest_is_not_extracted(tmp_path):
    downloads = tmp_path / 'downloads'
    digest = _seasons_zip(downloads, ['trainA_spring', 'testA_spring'])
    result = run('seasons', env={'STARGAN_DOWNLOADS': str(downloads)})
    assert result.returncode == 1 and 'already there' in result.stdout
    message = result.stderr.strip()
    assert message.count('\n') == 0 and 'no SHA-256 is recorded for alps_seasons.zip' in message
    assert f'run again with STARGAN_SHA256={digest}' in message and 'nothing was extracted' in message
    assert _extracted(downloads) == []


def test_a_wrong_checksum_is_one_line_and_nothing_is_extracted(tmp_path):
    downloads = tmp_path / 'downloads'
    digest = _seasons_zip(downloads, ['trainA_spring', 'testA_spring'])
    result = run('seasons', env={'STARGAN_DOWNLOADS': str(downloads), 'STARGAN_SHA256': '0' * 64})
    assert result.returncode == 1
    assert result.stderr.strip() == (f'error: {downloads}/alps_seasons.zip does not match its SHA-256 (expected '
                                     f'{"0" * 64}, got {digest}); nothing was extracted. Delete it and download '
                                     f'it again')
    assert _extracted(downloads) == []


def test_a_folder_that_names_no_domain_is_refused_before_anything_is_merged(tmp_path):
    """'train..' would become the domain '..', whose images would land one folder above the target."""
    downloads = tmp_path / 'downloads'
    digest = _seasons_zip(downloads, ['trainA_spring', 'train..', 'test_'])
    result = run('seasons', env={'STARGAN_DOWNLOADS': str(downloads), 'STARGAN_SHA256': digest})
    assert result.returncode == 1 and f'sha256 ok  {downloads}/alps_seasons.zip' in result.stdout
    assert result.stderr.strip() == ("error: the archive's folder 'train..' gives the domain name '..', which is "
                                     "not a folder name; nothing was merged")
    assert _extracted(downloads) == ['alps_seasons']   # unpacked for inspection, never merged
    assert not (downloads / 'seasons_by_domain').exists()
    assert not (downloads / '0001.jpg').exists() and not (tmp_path / 'train_0001.jpg').exists()
