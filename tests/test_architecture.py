"""The package's layout as docs/architecture.md tells it, checked against the code; and the
test suite's own rule: test modules share helpers through conftest.py and helper modules, never
by importing one another."""
import ast
import pathlib
import re

TESTS = pathlib.Path(__file__).resolve().parent


def imported_modules(path):
    """The top-level names of the modules ``path`` imports, anywhere in it (functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module.split('.')[0])
    return found


def test_no_test_module_imports_another_or_conftest():
    test_modules = {path.stem for path in TESTS.glob('test_*.py')}
    assert 'test_architecture' in test_modules  # it did find the suite
    imports = {path.name: sorted(imported_modules(path) & (test_modules | {'conftest'}))
               for path in TESTS.rglob('*.py')}
    assert {name: found for name, found in imports.items() if found} == {}


# --- docs/architecture.md's table of modules -------------------------------------------------

ROOT = TESTS.parent
PACKAGE = ROOT / 'adam_plugin'
ROW = re.compile(r'^\| `([\w/]+\.py)` \|.*\| (yes|no) \|$')


def documented_modules():
    """Module path (under adam_plugin/) -> does the table say it imports mxnet_internals?"""
    rows = [ROW.match(line) for line in (ROOT / 'docs' / 'architecture.md').read_text()
            .splitlines() if line.startswith('| `')]
    assert all(rows), 'a row of the table is not "| `path.py` | ... | yes or no |"'
    return {row[1]: row[2] == 'yes' for row in rows}


def package_imports(path):
    """The package's modules ``path`` imports, as dotted names (``adam_plugin.x.y``)."""
    package = dotted(path).split('.')
    if path.name != '__init__.py':
        package = package[:-1]  # a relative import starts from the module's package
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = '.'.join(base + ([node.module] if node.module else []))
            if module.split('.')[0] == 'adam_plugin':
                found.add(module)
                found.update(f'{module}.{alias.name}' for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split('.')[0] == 'adam_plugin')
    return found


def dotted(path):
    return '.'.join(path.relative_to(ROOT).with_suffix('').parts).removesuffix('.__init__')


MODULES = {dotted(path): path for path in sorted(PACKAGE.rglob('*.py'))}
IMPORTS = {name: {m for m in package_imports(path) if m in MODULES}
           for name, path in MODULES.items()}


def test_the_table_names_every_module_of_the_package():
    assert sorted(documented_modules()) == sorted(
        str(path.relative_to(PACKAGE)) for path in MODULES.values())


def test_the_table_says_which_modules_import_mxnet_internals():
    internals = 'adam_plugin.mxnet_internals'
    importing = {str(MODULES[name].relative_to(PACKAGE)) for name, imported in IMPORTS.items()
                 if internals in imported and not name.startswith(internals)}
    assert {'optimizer.py', 'dispatch.py'} <= importing  # the reading of imports works
    assert {path for path, yes in documented_modules().items() if yes} == importing


def test_the_imports_between_modules_have_no_cycle():
    # a module's own package (its __init__) is where Python finds it: no edge of ours
    edges = {name: {m for m in imported if m != name and not name.startswith(m + '.')}
             for name, imported in IMPORTS.items()}
    assert 'adam_plugin.dispatch' in edges['adam_plugin.optimizer']  # the reading works
    done, on_path = set(), []

    def visit(name):
        if name in on_path:
            raise AssertionError(' -> '.join(on_path[on_path.index(name):] + [name]))
        if name not in done:
            on_path.append(name)
            for other in sorted(edges[name]):
                visit(other)
            on_path.pop()
            done.add(name)
    for name in sorted(edges):
        visit(name)
