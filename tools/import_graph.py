"""The project's module graph, read from the source (AST), with layers, line counts and cycles.

    python -m tools.import_graph            modules by layer, each with its line count and imports
    python -m tools.import_graph --edges    one 'importer -> imported' line per edge

Every import counts: top-level ones and those inside functions. A module's
layer is 0 if it imports no project module, else one more than the highest
layer it imports; a cycle has no layer and is listed (exit status 1).
"""
import argparse
import ast
import os
import sys

PACKAGES = ('core', 'metrics')   # plus main.py; bench/, tests/ and tools/ import the project, never the reverse
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def project_modules(root=ROOT):
    """{module name: file path} of main.py and every module of the project's packages."""
    modules = {'main': os.path.join(root, 'main.py')}
    for package in PACKAGES:
        for dirpath, _, filenames in os.walk(os.path.join(root, package)):
            for name in sorted(filenames):
                if name.endswith('.py'):
                    rel = os.path.relpath(os.path.join(dirpath, name), root)[:-3]
                    module = rel.replace(os.sep, '.')
                    modules[module[:-len('.__init__')] if module.endswith('.__init__') else module] = \
                        os.path.join(dirpath, name)
    return modules


def _imported_modules(tree, module, is_package, modules):
    """Project modules that `module` imports (the whole tree: inside functions too)."""
    package = module if is_package else module.rpartition('.')[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:   # relative import: climb level - 1 packages from this one
                parts = package.split('.')
                base = '.'.join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            # 'from core import contrastive' imports the module core.contrastive, not core's names
            submodules = [f'{base}.{alias.name}' for alias in node.names if f'{base}.{alias.name}' in modules]
            yield from submodules or ([base] if base in modules else [])


def import_graph(root=ROOT):
    """{module: sorted project modules it imports}."""
    modules = project_modules(root)
    graph = {}
    for module, path in modules.items():
        with open(path, encoding='utf-8') as f:
            tree = ast.parse(f.read(), path)
        found = _imported_modules(tree, module, path.endswith('__init__.py'), modules)
        graph[module] = sorted(set(found) - {module})
    return graph


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(1000, 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def layers(graph):
    """{module: layer} for the modules outside cycles (0 = imports no project module)."""
    layer = {}
    remaining = dict(graph)
    while remaining:
        ready = [m for m, deps in remaining.items() if all(d in layer for d in deps)]
        if not ready:
            break   # the rest are in or above a cycle
        for m in ready:
            layer[m] = 1 + max((layer[d] for d in remaining[m]), default=-1)
            del remaining[m]
    return layer


def _line_count(path):
    with open(path, encoding='utf-8') as f:
        return sum(1 for _ in f)


def report(root=ROOT, edges=False):
    """The printed graph, as lines."""
    graph, modules = import_graph(root), project_modules(root)
    if edges:
        return [f'{m} -> {d}' for m in sorted(graph) for d in graph[m]]
    layer = layers(graph)
    lines = []
    for level in range(max(layer.values(), default=-1) + 1):
        lines.append(f'layer {level}')
        for m in sorted(m for m in layer if layer[m] == level):
            lines.append(f'  {m:34s} {_line_count(modules[m]):5d}  -> {", ".join(graph[m]) or "-"}')
    loops = cycles(graph)
    unplaced = sorted(set(graph) - set(layer))
    for component in loops:
        lines.append('cycle: ' + ' <-> '.join(component))
    if unplaced:
        lines.append('not layered (in or above a cycle): ' + ', '.join(unplaced))
    total = sum(_line_count(p) for p in modules.values())
    lines.append(f'{len(graph)} modules, {total} lines, '
                 f'{sum(len(d) for d in graph.values())} imports, {len(loops)} cycle(s)')
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--edges', action='store_true', help="print 'importer -> imported' lines only")
    args = parser.parse_args(argv)
    print('\n'.join(report(edges=args.edges)))
    return 1 if cycles(import_graph()) else 0


if __name__ == '__main__':
    sys.exit(main())
