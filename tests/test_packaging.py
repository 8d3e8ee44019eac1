"""The package as it is installed: the wheel's contents, its dependencies, the portable kernel."""
import importlib.metadata
import json
import os
import pathlib
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

import pytest

import adam_plugin
from adam_plugin import _mxnet, kernel
from installed import ROOT, installed_only, installed_wheel


@installed_only
def test_the_suite_imports_the_installed_wheel():
    """Not the source tree: neither here nor in the subprocesses the tests start."""
    site_packages = pathlib.Path(sysconfig.get_paths()['purelib']).resolve()
    here = pathlib.Path(adam_plugin.__file__).resolve()
    assert here.is_relative_to(site_packages), here
    child = subprocess.run([sys.executable, '-c', 'import adam_plugin; print(adam_plugin.__file__)'],
                           cwd=ROOT, capture_output=True, text=True, check=True)
    assert pathlib.Path(child.stdout.strip()).resolve() == here
    origin = json.loads(importlib.metadata.distribution('adam_plugin').read_text('direct_url.json'))
    assert origin['url'].endswith('.whl'), origin  # pip's record: installed from a wheel file


@installed_only
def test_the_wheel_is_manylinux_and_auditwheel_accepts_it():
    """Tagged with the most compatible manylinux tag its kernel allows, as `auditwheel show` finds it."""
    wheel = installed_wheel()
    platforms = wheel.stem.split('-')[-1].split('.')  # name-version-py3-none-PLATFORM[.PLATFORM]
    assert platforms and all(re.fullmatch(r'manylinux_\d+_\d+_x86_64|manylinux\d+_x86_64', p)
                             for p in platforms), wheel.name
    auditwheel = os.path.join(os.path.dirname(sys.executable), 'auditwheel')
    show = subprocess.run([auditwheel, 'show', str(wheel)], capture_output=True, text=True)
    assert show.returncode == 0, show.stdout + show.stderr
    found = re.search(r'consistent\s+with\s+the\s+following\s+platform\s+tag:\s+"([\w.]+)"',
                      show.stdout)
    assert found and found.group(1) in platforms, show.stdout
    tags = importlib.metadata.distribution('adam_plugin').read_text('WHEEL').splitlines()
    assert sorted(t for t in tags if t.startswith('Tag:')) == sorted(
        f'Tag: py3-none-{p}' for p in platforms)


@installed_only
def test_the_wheel_requires_no_mxnet():
    """Its METADATA: pip must not put the CPU mxnet over the user's GPU (or other) build."""
    with zipfile.ZipFile(installed_wheel()) as wheel:
        metadata = next(wheel.read(n).decode() for n in wheel.namelist()
                        if n.endswith('.dist-info/METADATA'))
    requires = [line for line in metadata.splitlines() if line.startswith('Requires-Dist:')]
    assert any(line.startswith('Requires-Dist: numpy') for line in requires), requires
    assert not [line for line in requires if re.match(r'Requires-Dist: mxnet\b', line)]


@installed_only
@pytest.mark.slow
def test_installing_the_sdist_compiles_the_kernel(tmp_path):
    """The sdist `make test` built beside the wheel: the kernel's source, no binary; pip compiles it."""
    (sdist,) = installed_wheel().parent.glob('adam_plugin-*.tar.gz')
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    assert any(n.endswith('/adam_plugin/_kernel.cpp') for n in names), names
    assert not [n for n in names if n.endswith('.so')]
    install = subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps', '--no-build-isolation',
         '--target', str(tmp_path / 'site'), str(sdist)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    library = kernel.load(str(tmp_path / 'site' / 'adam_plugin' / 'libadam_kernel.so'))
    assert library is not None and library.variants().decode().split() == ['avx512f', 'avx2', 'baseline']


@installed_only
def test_the_wheel_holds_every_module_and_the_kernel():
    installed = {f.as_posix() for f in importlib.metadata.files('adam_plugin')}  # pip's RECORD
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / 'adam_plugin').rglob('*.py')}
    assert {'adam_plugin/chapter/plots.py', 'adam_plugin/scaleout/launch.py'} <= modules
    assert modules - installed == set()
    assert 'adam_plugin/libadam_kernel.so' in installed


# A Python that cannot import the chapter's plotting and progress-bar packages.
WITHOUT_CHAPTER_EXTRA = '''
import sys

class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in ('matplotlib', 'tqdm'):
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)

sys.meta_path.insert(0, Missing())
'''

OPTIMIZER_ALONE = WITHOUT_CHAPTER_EXTRA + '''
import mxnet as mx
import adam_plugin, adam_plugin.checkpoint, adam_plugin.distributed, adam_plugin.scaleout.launch
opt = mx.optimizer.create('myadam', learning_rate=0.1)
weight = mx.nd.ones((3,))
opt.update(0, weight, mx.nd.ones((3,)), opt.create_state(0, weight))
print(weight.asnumpy().tolist())
'''


@pytest.mark.slow
def test_the_optimizer_needs_neither_matplotlib_nor_tqdm():
    def run(code):
        return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)

    alone = run(OPTIMIZER_ALONE)
    assert alone.returncode == 0, alone.stderr
    assert json.loads(alone.stdout.splitlines()[-1]) == pytest.approx([0.9] * 3)
    chapter = run(WITHOUT_CHAPTER_EXTRA + 'import adam_plugin.chapter.plots')
    assert "No module named 'matplotlib" in chapter.stderr  # the blocker above works


def test_matplotlib_and_tqdm_are_the_chapter_extra():
    requires = importlib.metadata.requires('adam_plugin')
    plain = {re.split('[<>=; ]', r)[0] for r in requires if 'extra ==' not in r}
    chapter = {re.split('[<>=; ]', r)[0] for r in requires if 'extra == "chapter"' in r}
    assert plain == {'numpy'}  # no mxnet: users install the MXNet build of their choice
    assert chapter == {'matplotlib', 'tqdm'}


# --- MXNet, checked at import (the metadata names none) ----------------------------------------

def fake_mxnet(folder, init, version):
    """A package ``mxnet`` in ``folder``: ``__init__.py`` runs ``init``; ``libinfo`` says ``version``."""
    (folder / 'mxnet').mkdir()
    (folder / 'mxnet' / '__init__.py').write_text(init)
    (folder / 'mxnet' / 'libinfo.py').write_text(f'__version__ = {version!r}\n')
    return folder


NO_MXNET = '''
import sys

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] == 'mxnet':
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)

sys.meta_path.insert(0, Blocked())
'''

# (what the Python finds, its mxnet's __init__ and libinfo version, lines stderr must hold)
IMPORT_ERRORS = [
    ('no mxnet', None, None,
     ["ImportError: adam_plugin needs MXNet 1.x", "no module named 'mxnet'", 'mxnet (CPU)',
      'mxnet-cu102 ... mxnet-cu117', 'mxnet-mkl', 'mxnet-native', 'pip install mxnet==1.9.1']),
    ('mxnet 1.5.1', 'from . import libinfo\n', '1.5.1',
     ['ImportError: adam_plugin needs MXNet >=1.7.0,<2 but found MXNet 1.5.1',
      "pip install 'mxnet>=1.7.0,<2'"]),
    ('mxnet 2.0.0.beta1', 'from . import libinfo\n', '2.0.0.beta1',
     ['ImportError: adam_plugin needs MXNet >=1.7.0,<2 but found MXNet 2.0.0.beta1']),
    # An MXNet that fails to import for a reason of its own keeps its own error.
    ('a broken mxnet', 'import a_library_mxnet_lacks\n', '1.9.1',
     ["ModuleNotFoundError: No module named 'a_library_mxnet_lacks'"]),
]


@pytest.mark.parametrize('init, version, expected', [row[1:] for row in IMPORT_ERRORS],
                         ids=[row[0] for row in IMPORT_ERRORS])
def test_import_without_a_supported_mxnet_says_what_to_install(tmp_path, init, version, expected):
    env = dict(os.environ)
    if init is None:
        code = NO_MXNET + 'import adam_plugin'
    else:
        code = 'import adam_plugin'
        env['PYTHONPATH'] = os.pathsep.join(
            [str(fake_mxnet(tmp_path, init, version)), env.get('PYTHONPATH', '')])
    child = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env)
    assert child.returncode == 1
    last = child.stderr.strip().splitlines()[-1]
    assert [e for e in expected if e not in last] == [], child.stderr


@pytest.mark.parametrize('version', ['1.7.0', '1.8.0', '1.9.1', '1.9.2.dev0'])
def test_the_supported_releases_pass_the_check(version):
    _mxnet.require(version)


@pytest.mark.parametrize('version', ['0.12.1', '1.5.1', '1.6.0', '1.6.99', '2.0.0', '2.1.0'])
def test_other_releases_fail_the_check(version):
    with pytest.raises(ImportError, match=f'found MXNet {re.escape(version)}'):
        _mxnet.require(version)


def test_one_version():
    assert importlib.metadata.version('adam_plugin') == adam_plugin.__version__


# --- the portable kernel, read with objdump ----------------------------------------------------

LOOPS = ['adam<float, float, float>', 'adam<double, double, double>', 'adam<_Float16, float, float>',
         'adam<_Float16, _Float16, float>', 'nonfinite<unsigned short>', 'nonfinite<unsigned int>',
         'nonfinite<unsigned long>']
# A variant's copy of a loop, as objdump -C names it:
# (anonymous namespace)::avx2::adam<float, float, float>(...
LOOP_FUNCTION = re.compile(r'\(anonymous namespace\)::(\w+)::(\w+<[\w ,]+>)\(')
WIDE_REGISTER = re.compile(r'%(ymm|zmm)\d+|%k[0-7]\b')


def functions(path):
    """{function name: [instruction, ...]} of the library's code, by ``objdump -d``."""
    listing = subprocess.run(['objdump', '-d', '-C', '--no-show-raw-insn', path],
                             capture_output=True, text=True, check=True).stdout
    found, current = {}, None
    for line in listing.splitlines():
        header = re.match(r'[0-9a-f]+ <(.*)>:$', line)
        if header:
            current = found.setdefault(header.group(1), [])
        elif current is not None and '\t' in line:
            current.append(line.split('\t')[-1].strip())
    return found


def is_avx(instruction):
    """A VEX- or EVEX-encoded instruction (AVX, AVX2, AVX-512), or one on their registers."""
    return instruction.startswith('v') or bool(WIDE_REGISTER.search(instruction))


def test_the_kernel_has_each_loop_per_variant_and_no_avx_elsewhere():
    assert kernel.variants() == ['avx512f', 'avx2', 'baseline'], 'not the portable build'
    code = functions(kernel.LIBRARY._name)
    loops = {}  # (variant, loop) -> instructions
    for name, instructions in code.items():
        match = LOOP_FUNCTION.search(name)
        if match and match.group(1) in kernel.variants() and name.startswith(('void', 'bool', 'int')):
            loops[match.groups()] = instructions
    assert set(loops) == {(v, loop) for v in kernel.variants() for loop in LOOPS}
    for loop in LOOPS:
        assert not any(map(is_avx, loops['baseline', loop])), loop
        assert any('%ymm' in i for i in loops['avx2', loop]), loop
        # AVX-512F has no 16-bit integer operations (AVX512BW has): the float16 check is
        # as wide as AVX2 there
        wide = '%ymm' if loop == 'nonfinite<unsigned short>' else '%zmm'
        assert any(wide in i for i in loops['avx512f', loop]), loop
    chosen_at_run_time = {id(loops[v, loop]) for v in ('avx2', 'avx512f') for loop in LOOPS}
    # F16cHalf's conversions (AVX2 and F16C) are called by the AVX variants' float16 loops only
    chosen_at_run_time |= {id(instructions) for name, instructions in code.items()
                           if name.startswith('(anonymous namespace)::F16cHalf::')}
    elsewhere = {name: [i for i in instructions if is_avx(i)] for name, instructions in code.items()
                 if id(instructions) not in chosen_at_run_time}
    assert {name: found for name, found in elsewhere.items() if found} == {}
    assert len(code) > len(loops)  # there was an elsewhere to look at


def test_the_lazy_steps_ask_the_memory_for_their_rows_ahead():
    """Each storage's step and checked step holds prefetch_row's prefetches: GCC drops a call
    of a function that only prefetches (as one without effects) unless it is inlined."""
    code = functions(kernel.LIBRARY._name)
    storages = [loop[len('adam<'):-1] for loop in LOOPS if loop.startswith('adam<')]
    assert len(storages) == 4
    for storage in storages:
        for step in ('step', 'checked_step'):
            assert any(f'::{step}<{storage}>(' in name
                       and any(i.startswith('prefetch') for i in instructions)
                       for name, instructions in code.items()), (step, storage)
