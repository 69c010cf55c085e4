"""--mode export: the EMA networks of a checkpoint as ONNX files, for onnxruntime and other runtimes.

--out DIR receives, for a StarGAN v2 model (docs/export.md describes every field and runs an example):
  generator.onnx        (x_src, s_trg) -> x_fake; any batch, any height and width that are
                        multiples of model.json's generator_size_multiple
  mapping_network.onnx  (z_trg, y_trg) -> s_trg; any batch
  style_encoder.onnx    (x_ref, y_ref) -> s_ref; any batch, img_size x img_size images
  model.json            domain names, sizes, the pixel normalisation, the inputs and outputs of
                        each file, and the per-domain average style (the centre of --psi)
and for a one-sided CUT-family model (--model cut, the --name/--epoch generator):
  generator.onnx        x_src -> x_fake (A -> B); any batch, any height and width that are multiples of 4
  model.json            format cut-onnx/1, family, netG, ngf, crop_size, domain names (A, B), the pixel
                        normalisation, and the file's input and output

The networks are traced on the CPU by PyTorch's TorchScript-based exporter at
opset 17. With torch 2.14 the torch.export-based exporter (dynamo=True) gives the
same numbers, but took about 10x longer (20-50 s against 3-4 s for a 32 px
generator on a busy 2-core CPU), needs the onnxscript package, and accepts a free
height and width only when declared as multiples of the down-sampling factor; the
TorchScript one works unchanged on every torch this project supports (>= 2.1).

Every network is exported and checked before anything is written; each file is
then written atomically, model.json last, so a failure leaves no partial file and
a model.json always describes complete ONNX files.
"""
import importlib.util
import io
import json
import os
import re
import time
import warnings

import numpy as np
import torch
from tqdm import tqdm

from core.families import family_of
from core.inference import domain_averages, load_model
from core.model import encoder_plan

from core.utils.errors import UserError
from core.utils.fileio import atomic_write_bytes, atomic_write_text, sha256_file

OPSET = 17
META_FILE = 'model.json'
FORMAT = 'stargan-v2-onnx/1'   # bumped when model.json or the files' inputs change meaning
CUT_FORMAT = 'cut-onnx/1'      # the same, for the one-sided CUT family's model.json

# Warnings of the TorchScript exporter that say nothing about our networks, as (message, module) filters:
#  - it and its internals are deprecated in favour of the dynamo exporter (the module docstring says why we keep it);
#  - InstanceNorm without running statistics normalises by the input's own statistics in eval mode too,
#    which is exactly ONNX InstanceNormalization;
#  - the domain index of the mapping network and style encoder is never negative (docs/export.md);
#  - torch.nn's own checks of channel counts and spatial sizes are traced as constants, as they should be.
HARMLESS_WARNINGS = ((r'.*legacy TorchScript-based ONNX export', ''), ('', r'torch\.onnx\.'),
                     (r".*operator 'instance_norm' is set to train=True", ''),
                     (r'.*aten::index operator of advanced indexing', ''),
                     (r'Converting a tensor to a Python boolean', r'torch\.nn\.'))

# Pixels of every image input and output (upstream ToTensor + Normalize(0.5, 0.5); core.visualize.quantize).
PIXELS = {
    'layout': 'NCHW', 'channel_order': 'RGB', 'dtype': 'float32', 'range': [-1.0, 1.0],
    'from_uint8': 'x = u8 / 127.5 - 1',
    'to_uint8': 'u8 = floor(clip((x + 1) * 127.5 + 0.5, 0, 255))   (outputs are unbounded: clip)',
    'resize': 'training squashed every image to img_size x img_size, bilinear, ignoring the aspect ratio; '
              'the style encoder needs exactly that size',
}
# The CUT family's test transform (core.cut.data.eval_transform with the default --preprocess).
CUT_PIXELS = {**PIXELS,
              'to_uint8': 'u8 = floor(clip((x + 1) * 127.5 + 0.5, 0, 255))   (rounded, as the Python API; CUT\'s '
                          'released results truncate: floor((x + 1) / 2 * 255))',
              'resize': 'CUT resized every test image to crop_size x crop_size, bicubic, ignoring the aspect ratio; '
                        'any multiple of 4 runs'}


class ExportError(UserError):
    """A package that --mode export needs is not installed."""


def onnx_missing_message():
    return ('--mode export needs the onnx package, which is not installed; run pip install onnx '
            '(requirements.txt pins the tested version)')


def export_errors(cfg):
    """Problems of --mode export's inputs that show before any work (core.checks): --out, the onnx package."""
    errs = [] if cfg.out else ['--mode export needs --out DIR, the folder to write the ONNX files into']
    if importlib.util.find_spec('onnx') is None:
        errs.append(onnx_missing_message())
    return errs


# ----------------------------------------------------------------------------------------------
# What each file takes and returns: one table drives the example inputs, the dynamic axes and model.json
# ----------------------------------------------------------------------------------------------

def network_specs(meta):
    """{network: {'inputs'|'outputs': {tensor name: (shape, dtype)}}}; named axes are dynamic."""
    image = (['batch', 3, 'height', 'width'], 'float32')
    if meta['family'] == 'cut':   # one image in, one out: no styles
        return {'generator': {'inputs': {'x_src': image}, 'outputs': {'x_fake': image}}}
    S = meta['img_size']
    style, domain = (['batch', meta['style_dim']], 'float32'), (['batch'], 'int64')
    return {
        # s_trg has batch N or 1: one style for every source.
        'generator': {'inputs': {'x_src': image, 's_trg': (['style_batch', meta['style_dim']], 'float32')},
                      'outputs': {'x_fake': image}},
        'mapping_network': {'inputs': {'z_trg': (['batch', meta['latent_dim']], 'float32'), 'y_trg': domain},
                            'outputs': {'s_trg': style}},
        'style_encoder': {'inputs': {'x_ref': (['batch', 3, S, S], 'float32'), 'y_ref': domain},
                          'outputs': {'s_ref': style}},
    }


def _example(shape, dtype, meta, sizes, gen):
    """A random input of `shape` with its named axes set from `sizes` (domain ids for int64)."""
    dims = [sizes[d] if isinstance(d, str) else d for d in shape]
    if dtype == 'int64':
        return torch.randint(0, meta['num_domains'], dims, generator=gen)
    return torch.rand(dims, generator=gen) * 2 - 1   # images in [-1, 1]; styles and z of that scale


def example_inputs(meta, name, sizes, seed=0):
    """{input name: tensor} for network `name`, axis sizes from `sizes` (e.g. {'batch': 2, ...})."""
    gen = torch.Generator().manual_seed(seed)
    inputs = network_specs(meta)[name]['inputs']
    return {k: _example(shape, dtype, meta, sizes, gen) for k, (shape, dtype) in inputs.items()}


def training_sizes(meta, batch=2):
    """Axis sizes of the examples that trace and check the networks: images of the training size."""
    side = meta['crop_size'] if meta['family'] == 'cut' else meta['img_size']
    return {'batch': batch, 'style_batch': batch, 'height': side, 'width': side}


def _dynamic_axes(spec):
    tensors = {**spec['inputs'], **spec['outputs']}
    return {k: {i: d for i, d in enumerate(shape) if isinstance(d, str)} for k, (shape, _) in tensors.items()}


def model_meta(nets, cfg, path, step):
    """The contents of model.json for the networks of a loaded checkpoint (see docs/export.md)."""
    meta = {'format': FORMAT, 'family': 'stargan-v2', 'arch': cfg.arch, 'img_size': cfg.img_size,
            'num_domains': cfg.num_domains,
            'domain_names': list(cfg.facts.domain_names) if cfg.facts.domain_names else None,
            'latent_dim': cfg.latent_dim, 'style_dim': cfg.style_dim,
            'generator_size_multiple': 2 ** encoder_plan(cfg.arch, cfg.img_size).num_down,
            'checkpoint': os.path.basename(path), 'step': step, 'opset': OPSET, 'pixels': PIXELS}
    # (num_domains, style_dim): the centres --psi uses
    s_avg = domain_averages(nets.mapping_network, cfg.latent_dim, cfg.seed, torch.device('cpu'))
    meta['style_average'] = [[float(str(v)) for v in row] for row in s_avg.numpy()]   # shortest float32 text
    return _with_networks(meta)


def one_sided_meta(model):
    """The contents of model.json for a core.cut.translator.OneSidedTranslator (see docs/export.md)."""
    cfg = model.cfg
    meta = {'format': CUT_FORMAT, 'family': model.family, 'netG': cfg.netG, 'ngf': cfg.ngf,
            'crop_size': model.img_size, 'domain_names': model.domains, 'generator_size_multiple': model.size_multiple,
            'checkpoint': os.path.basename(model.path), 'epoch': model.epoch, 'opset': OPSET, 'pixels': CUT_PIXELS}
    return _with_networks(meta)


def _with_networks(meta):
    """meta with its 'networks' entry: each network's file, inputs and outputs."""
    return {**meta, 'networks': {name: {'file': name + '.onnx', 'inputs': _describe(spec['inputs']),
                                        'outputs': _describe(spec['outputs'])}
                                 for name, spec in network_specs(meta).items()}}


def _describe(tensors):
    return {name: {'shape': shape, 'dtype': dtype} for name, (shape, dtype) in tensors.items()}


# ----------------------------------------------------------------------------------------------
# Exporting and checking
# ----------------------------------------------------------------------------------------------

def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise ExportError(onnx_missing_message()) from None
    return onnx


def onnx_bytes(net, meta, name):
    """The serialised ONNX model of network `name` (checked by onnx.checker)."""
    onnx = _import_onnx()
    spec = network_specs(meta)[name]
    inputs = example_inputs(meta, name, training_sizes(meta))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        for message, module in HARMLESS_WARNINGS:
            warnings.filterwarnings('ignore', message=message, module=module)
        torch.onnx.export(net, tuple(inputs.values()), buffer, dynamo=False, opset_version=OPSET,
                          input_names=list(spec['inputs']), output_names=list(spec['outputs']),
                          dynamic_axes=_dynamic_axes(spec))
    model = onnx.load_from_string(buffer.getvalue())
    model.doc_string = _doc_string(meta, name)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _doc_string(meta, name):
    if meta['family'] == 'cut':
        return f'CUT {name} ({meta["netG"]}, ngf {meta["ngf"]}, {meta["crop_size"]} px); see model.json'
    return f'StarGAN v2 {name} ({meta["arch"]}, {meta["img_size"]} px); see model.json'


def max_abs_difference(net, data, meta, name, sizes):
    """max |onnxruntime - PyTorch| of network `name` on random inputs of `sizes`; None without onnxruntime."""
    if importlib.util.find_spec('onnxruntime') is None:
        return None
    import onnxruntime
    inputs = example_inputs(meta, name, sizes, seed=1)
    session = onnxruntime.InferenceSession(data, providers=['CPUExecutionProvider'])
    out = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    with torch.no_grad():
        ref = net(*inputs.values()).numpy()
    return float(np.abs(out - ref).max())


def json_text(obj):
    """JSON indented by 2, each innermost list (shape, names, a style code) on one line.

    Only whitespace around newlines changes, and JSON strings hold no raw newline, so values are untouched.
    """
    def one_line(match):
        text = re.sub(r'\[\s*\n\s*', '[', match.group())
        return re.sub(r'\s*\n\s*', ' ', re.sub(r'\s*\n\s*\]', ']', text))
    return re.sub(r'\[[^\[\]{}]*\]', one_line, json.dumps(obj, indent=2)) + '\n'


def export_networks(nets, meta, out_dir):
    """Write the ONNX file of every network of meta['networks'] and model.json into out_dir.

    nets: {network: module} (CPU, eval mode), e.g. generator, mapping_network, style_encoder. Returns
    {network: (path, max |onnxruntime - PyTorch| at the training size, or None)}.
    """
    _import_onnx()
    exported = {}
    for name in tqdm(meta['networks'], desc='export', unit='net', disable=None, leave=False):
        data = onnx_bytes(nets[name], meta, name)
        exported[name] = data, max_abs_difference(nets[name], data, meta, name, training_sizes(meta, batch=3))
    written = {}
    for name, (data, diff) in exported.items():
        path = os.path.join(out_dir, meta['networks'][name]['file'])
        atomic_write_bytes(path, data)
        written[name] = path, diff
    files = {name: {**meta['networks'][name], 'sha256': sha256_file(path)} for name, (path, _) in written.items()}
    atomic_write_text(os.path.join(out_dir, META_FILE), json_text({**meta, 'networks': files}))
    return written


def _stargan_networks(cfg):
    """(nets, model.json contents) of StarGAN v2's --checkpoint (or --checkpoint_dir/--resume_iter)."""
    model = load_model(cfg, torch.device('cpu'))
    return model.nets, model_meta(model.nets, model.cfg, model.path, model.step)


def _one_sided_networks(cfg):
    """(nets, model.json contents) of the CUT family's --checkpoints_dir/--name/--epoch generator."""
    from core.cut.translator import OneSidedTranslator   # the CUT family's modules load for its models only
    model = OneSidedTranslator.from_config(cfg.replace(device='cpu'))
    return {'generator': model.generator}, one_sided_meta(model)


def export(cfg):
    """--mode export: the networks of the command line's model into --out (StarGAN v2: the EMA generator,
    mapping network and style encoder; CUT: the generator)."""
    _import_onnx()
    start = time.perf_counter()
    nets, meta = (_one_sided_networks if family_of(cfg).name == 'cut' else _stargan_networks)(cfg)
    written = export_networks(nets, meta, cfg.out)
    for name, (path, diff) in written.items():
        check = f'max |onnxruntime - PyTorch| {diff:.2g}' if diff is not None else 'onnxruntime not installed: not run'
        print(f'  {os.path.basename(path):22s} {os.path.getsize(path) / 2 ** 20:8.2f} MiB   {check}')
    print(f'export: {len(written)} networks and {META_FILE} -> {cfg.out} in {time.perf_counter() - start:.1f} s')
    return written
