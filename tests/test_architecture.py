"""The package's layout as docs/architecture.md tells it, checked against the code; and the
test suite's own rule: test modules share helpers through conftest.py and helper modules, never
by importing one another."""
import ast
import pathlib

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
