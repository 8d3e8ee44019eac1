"""Set-up as a newcomer meets it: what the Makefile's targets run, pip on a Python the
package does not support, and ``import adam_plugin`` beside a NumPy MXNet cannot use.

The Makefile's targets are read with ``make -n -B`` (print every command a run from
scratch would make, run none): a real run takes minutes.
"""
import glob
import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

import adam_plugin
from installed import ROOT, installed_only, installed_wheel, planned


def test_make_quick_builds_no_horovod_and_needs_no_cmake():
    """Horovod's tests are all slow: the quick tier installs the wheel and runs pytest only."""
    commands = planned('quick')
    assert re.search(r'-m pytest .*-m "not slow"', commands), commands  # it did read the plan
    assert 'horovod' not in commands.lower() and 'cmake' not in commands


def test_make_lint_runs_ruff_from_the_test_venv_and_ci_lints_before_testing():
    """ruff as the test extra installs it (pinned by requirements.txt), over the whole tree."""
    commands = planned('lint').splitlines()
    assert [line for line in commands if 'ruff check' in line] == ['.venv-test/bin/ruff check .']
    assert any('-c requirements.txt' in line and '[chapter,test]' in line for line in commands)
    assert re.search(r'^ruff==', (ROOT / 'requirements.txt').read_text(), re.M)
    ci = [line for line in (ROOT / '.ci' / 'run').read_text().splitlines()
          if line.startswith('make ')]
    assert ci.index('make lint') < ci.index('make test'), ci


@pytest.mark.parametrize('target', ['test', 'horovod'])
def test_make_test_and_make_horovod_build_horovod(target):
    commands = planned(target)
    build = commands.find('-r requirements-horovod.txt')
    assert build != -1 and 'HOROVOD_WITH_MXNET=1' in commands, commands
    tests = commands.find('-m pytest')
    assert (tests == -1) if target == 'horovod' else (tests > build)


def test_make_demo_installs_the_chapter_extra_only_and_leaves_git_status_clean():
    commands = planned('demo').splitlines()
    assert [line for line in commands if ' -m pip install ' in line and '.[' in line] == [
        '.venv-demo/bin/python -m pip install --quiet -c requirements.txt mxnet -e ".[chapter]"']
    (venv,) = [line.split(' -m venv ')[1] for line in commands if ' -m venv ' in line]
    (run,) = [shlex.split(line) for line in commands if ' -m adam_plugin ' in line]
    figure = run[run.index('--plot') + 1]

    def git(*args):
        return subprocess.run(['git', '-C', str(ROOT), *args], capture_output=True, text=True)

    assert git('ls-files', '--error-unmatch', figure).returncode == 1, f'{figure} is tracked'
    for written in (figure, f'{venv}/bin/python'):
        assert git('check-ignore', '-q', written).returncode == 0, f'{written} is not ignored'


@pytest.mark.parametrize('target', ['dev', '.venv/.installed', 'mutants'])
def test_development_and_mutants_get_the_editable_tree_with_the_test_extra(target):
    commands = planned(target)
    assert ('.venv/bin/python -m pip install --quiet -c requirements.txt mxnet -e ".[test]"'
            in commands.splitlines()), commands


# --- pip on a Python the package does not support ----------------------------------------------

def python_3_12():
    """A Python 3.12 that runs: ``python3.12`` on PATH, else one of pyenv's versions."""
    pyenv = os.environ.get('PYENV_ROOT', os.path.expanduser('~/.pyenv'))
    found = glob.glob(os.path.join(pyenv, 'versions', '3.12*', 'bin', 'python3.12'))
    for python in [shutil.which('python3.12'), *sorted(found)]:
        if python and subprocess.run([python, '-c', 'import sys; sys.exit(sys.version_info[:2] '
                                      '!= (3, 12))'], capture_output=True).returncode == 0:
            return python
    pytest.skip('no Python 3.12 here (none on PATH nor in pyenv)')


def pip_install_on_3_12(tmp_path, what):
    """``pip install --dry-run WHAT`` with Python 3.12's own pip, in a fresh venv."""
    venv = tmp_path / 'venv'
    subprocess.run([python_3_12(), '-m', 'venv', str(venv)], check=True, capture_output=True)
    return subprocess.run([str(venv / 'bin' / 'python'), '-m', 'pip', 'install', '--dry-run',
                           str(what)], capture_output=True, text=True, timeout=600)


def assert_refused_for_its_python(install):
    """pip stops at requires-python, naming the Python, before it fetches or builds NumPy
    (numpy<1.24 has no wheels for 3.12; its sdist fails to build there, for distutils)."""
    assert install.returncode != 0
    assert "ERROR: Package 'adam-plugin' requires a different Python: 3.12" in install.stderr, (
        install.stdout + install.stderr)
    assert 'numpy' not in (install.stdout + install.stderr).lower()


@pytest.mark.slow
def test_pip_install_of_the_source_tree_on_python_3_12_says_the_python_is_unsupported(tmp_path):
    source = tmp_path / 'adam_plugin-source'
    shutil.copytree(ROOT / 'adam_plugin', source / 'adam_plugin',
                    ignore=shutil.ignore_patterns('*.so', '__pycache__'))
    for name in ('pyproject.toml', 'setup.py', 'README.md', 'LICENSE'):
        shutil.copy(ROOT / name, source / name)
    assert_refused_for_its_python(pip_install_on_3_12(tmp_path, source))


@installed_only
@pytest.mark.slow
def test_pip_install_of_the_wheel_on_python_3_12_says_the_python_is_unsupported(tmp_path):
    assert_refused_for_its_python(pip_install_on_3_12(tmp_path, installed_wheel()))


# --- import adam_plugin beside a NumPy that MXNet cannot use ----------------------------------

@pytest.mark.slow
def test_import_under_numpy_1_26_says_which_numpy_to_install(tmp_path):
    """What ``pip install mxnet`` alone gives: MXNet beside NumPy 1.26, where
    ``import mxnet`` fails on ``np.bool``. A real venv (pip's cache makes it seconds)."""
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True)
    python = venv / 'bin' / 'python'
    subprocess.run([sys.executable, '-m', 'pip', '--python', str(python), 'install', '--quiet',
                    f"mxnet=={importlib.metadata.version('mxnet')}", 'numpy==1.26.*'],
                   check=True, capture_output=True, timeout=600)
    (tmp_path / 'path').mkdir()
    (tmp_path / 'path' / 'adam_plugin').symlink_to(os.path.dirname(adam_plugin.__file__))
    child = subprocess.run([str(python), '-c', 'import adam_plugin'], cwd=tmp_path,
                           capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(tmp_path / 'path')))
    assert child.returncode == 1
    assert "module 'numpy' has no attribute 'bool'" in child.stderr  # the cause, shown above
    assert re.fullmatch(
        r"ImportError: adam_plugin needs MXNet 1\.x, which cannot be imported with NumPy "
        r"1\.26\.\d+: every MXNet 1\.x release uses np\.bool, which NumPy 1\.24 removed\. "
        r"Install a NumPy it can use: pip install 'numpy<1\.24'\.",
        child.stderr.strip().splitlines()[-1]), child.stderr


@pytest.mark.slow
@pytest.mark.parametrize('command', [
    ['-m', 'adam_plugin', 'moments'],
    ['-m', 'adam_plugin', 'sweep', '--quiet', '--epochs', '1'],
    ['-m', 'adam_plugin.checkpoint', 'inspect', os.path.join(ROOT, 'tests', 'states',
                                                             'main_1303d99.states')],
    ['-m', 'adam_plugin.checkpoint', 'inspect', '--json',
     os.path.join(ROOT, 'tests', 'states', 'main_1303d99.states')],
], ids=lambda command: ' '.join(command[1:3]))
def test_a_command_whose_reader_went_away_ends_quietly_with_141(command):
    """``python -m adam_plugin moments | head -1``: when the reader of the output has gone
    away (here before the command writes anything), the command ends with a shell's
    SIGPIPE status, 141, and no traceback."""
    reader, writer = os.pipe()
    os.close(reader)
    with open(writer, 'wb') as output:
        done = subprocess.run([sys.executable, *command], stdout=output, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT, timeout=300)
    assert 'Traceback' not in done.stderr, done.stderr
    assert done.returncode == 141, done.stderr
