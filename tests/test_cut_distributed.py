"""The CUT family in two processes (torchrun, gloo on the CPU) against one process with the same global batch.

After one iteration each process has averaged its gradients with the other's, so
the Adam moments (1 - beta1) * g of every parameter equal the single-process ones
to float tolerance, and the logged losses (averaged over the processes) equal the
single-process values. Parameters whose true gradient is zero (conv biases right
before an instance norm) hold only rounding noise and are skipped.
"""
import json

from test_cut_training import cut_flags
from test_distributed import torchrun
from torch import nn

from core.checkpoint import ckpt_path
from core.cut.networks import NLayerDiscriminator, ResnetGenerator
from core.utils.fileio import safe_load
from main import main


def normalised_biases(net):
    """Names of the conv biases that an instance norm follows: their true gradient is zero."""
    names = set()
    for prefix, module in net.named_modules():
        if isinstance(module, nn.Sequential):
            for i, (a, b) in enumerate(zip(module, list(module)[1:])):
                if isinstance(a, nn.Conv2d) and isinstance(b, nn.InstanceNorm2d):
                    names.add(f'{prefix}.{i}.bias')
    return names


def parameter_names(net):
    """Parameter names in parameters() order, the order Adam keys its state by."""
    return [name for name, _ in net.named_parameters()]


def flags(data, run):
    """PatchNCE and SRC (a sum over images, rescaled per process) with the identity term; batch 2 = one step."""
    return cut_flags(data, run, '--domains', 'summer,winter', '--batch_size', '2', '--max_dataset_size', '2',
                     '--n_epochs', '1', '--n_epochs_decay', '0', '--patch_loss', 'src=0.05')


def test_two_processes_train_like_one(seasons32, tmp_path):
    single, multi = tmp_path / 'single', tmp_path / 'multi'
    assert main(flags(seasons32, single)) == 0
    torchrun(flags(seasons32, multi))
    optims = [safe_load(ckpt_path(str(run / 'run'), 1, 'optims')) for run in (single, multi)]
    nets = {'G': ResnetGenerator(ngf=4, n_blocks=6), 'D': NLayerDiscriminator(ndf=4)}
    checked = 0
    for net in ('G', 'D', 'F'):
        names = parameter_names(nets[net]) if net in nets else None
        skip = normalised_biases(nets[net]) if net in nets else set()
        for pid, state in optims[0][net]['state'].items():
            m1, m2 = state['exp_avg'], optims[1][net]['state'][pid]['exp_avg']
            if names and names[pid] in skip:   # true gradient zero: rounding noise only
                continue
            assert (m1 - m2).abs().max() <= 1e-4 * m1.abs().max(), (net, pid)
            checked += 1
    assert checked > 20
    logs = [json.loads((run / 'run' / 'stats.jsonl').read_text().splitlines()[0]) for run in (single, multi)]
    for key in ('D/real', 'D/fake', 'G/GAN', 'G/patchnce', 'G/idt/patchnce', 'G/src'):
        assert abs(logs[1][key] - logs[0][key]) <= 1e-5 * abs(logs[0][key]) + 1e-7, key
