"""The module structure: no import cycle (in-function imports included), and the config stays light."""
import subprocess
import sys

from tools.import_graph import ROOT, cycles, import_graph, layers, report


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_project_has_no_import_cycle():
    graph = import_graph()
    assert {'main', 'core.config', 'core.trainer', 'metrics.eval'} <= set(graph)
    assert cycles(graph) == []
    assert set(layers(graph)) == set(graph)   # every module has a layer


def test_an_import_inside_a_function_closes_a_cycle(tmp_path):
    _write(tmp_path / 'main.py', 'import core.a\n')
    _write(tmp_path / 'core' / '__init__.py', '')
    _write(tmp_path / 'core' / 'a.py', 'def f():\n    from core import b\n    return b\n')
    _write(tmp_path / 'core' / 'b.py', 'from core.a import f\n')
    _write(tmp_path / 'core' / 'c.py', 'from . import b\n')   # relative imports resolve too
    graph = import_graph(str(tmp_path))
    assert graph['core.a'] == ['core.b'] and graph['core.c'] == ['core.b']
    assert cycles(graph) == [['core.a', 'core.b']]
    assert 'cycle: core.a <-> core.b' in report(str(tmp_path))


def _imports_outside(graph, package, allowed):
    """{module of `package`: project modules it imports that lie outside `allowed` packages}."""
    inside = lambda m, pkg: m == pkg or m.startswith(pkg + '.')
    return {m: [i for i in imports if not any(inside(i, a) for a in allowed)]
            for m, imports in graph.items() if inside(m, package)}


def test_core_utils_imports_nothing_of_the_project_outside_itself():
    graph = import_graph()
    found = _imports_outside(graph, 'core.utils', ['core.utils'])
    assert len(found) >= 8 and all(v == [] for v in found.values()), found


def test_core_data_imports_only_itself_and_core_utils():
    graph = import_graph()
    found = _imports_outside(graph, 'core.data', ['core.data', 'core.utils'])
    assert len(found) >= 5 and all(v == [] for v in found.values()), found


def test_the_layering_check_catches_an_upward_import(tmp_path):
    _write(tmp_path / 'main.py', '')
    for pkg in ('core', 'core/utils', 'core/data'):
        _write(tmp_path / pkg / '__init__.py', '')
    _write(tmp_path / 'core' / 'config.py', '')
    _write(tmp_path / 'core' / 'utils' / 'fileio.py', 'def f():\n    from core import config\n')
    _write(tmp_path / 'core' / 'data' / 'images.py', 'from core.utils import fileio\n')
    graph = import_graph(str(tmp_path))
    assert _imports_outside(graph, 'core.utils', ['core.utils'])['core.utils.fileio'] == ['core.config']
    assert _imports_outside(graph, 'core.data', ['core.data', 'core.utils'])['core.data.images'] == []


def test_leaf_modules_import_no_project_module_but_errors():
    graph = import_graph()
    for leaf in ('core.utils.fileio', 'core.data.images', 'core.utils.errors', 'core.utils.seeding', 'core.schedules'):
        assert set(graph[leaf]) <= {'core.utils.errors'}, leaf


def test_importing_the_config_loads_no_metrics_module():
    code = ('import sys, core.config; '
            'print(sorted(m for m in sys.modules if m == "metrics" or m.startswith("metrics.")))')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]'


def test_the_parser_has_every_plugin_flag_without_loading_torchvision():
    """--help and --dry_run read every metric's flags, but no metric loads its networks' code to declare them."""
    code = ('import sys, core.config; flags = {a.dest for a in core.config.build_parser()._actions}; '
            'print("fid_protocol" in flags, "gcl_pooling_num" in flags, "torchvision" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ['True', 'True', 'False']


def test_the_graph_command_prints_layers_and_exits_zero():
    out = subprocess.run([sys.executable, '-m', 'tools.import_graph'], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.startswith('layer 0') and out.stdout.rstrip().endswith('0 cycle(s)')
