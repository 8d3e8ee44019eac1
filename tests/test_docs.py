"""The README and docs/*.md cannot rot: their Python blocks run, their links resolve,
the README fits a first screen or two, and the API reference builds without a warning.

Conventions (docs/testing.md states them for writers):
- A page's Python blocks (fences opened with ``python``) run in order in one fresh
  Python process, each on its own: in a fresh namespace and an empty working directory
  of its own, so every example runs as a reader would paste it alone.
- A block that cannot run here starts with the line ``# not runnable: REASON``.
- Every ``python -m adam_plugin...`` command of a shell block (``sh``) parses: its
  module's argparse accepts its arguments (the command itself does not run).
- Links are checked by GitHub's rules for heading anchors.
- Every module of the package lists its public names in ``__all__`` or says "Internal:"
  in its docstring, and the pages name public names only.
"""
import ast
import importlib
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / 'README.md'
PAGES = [README, *sorted((ROOT / 'docs').glob('*.md'))]
README_MAX_LINES = 150
PYTHON_INFO = ('python', 'py', 'python3')
NOT_RUNNABLE = re.compile(r'#\s*not runnable\b:?(.*)', re.IGNORECASE)
FENCE = re.compile(r'^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)')
HEADING = re.compile(r'^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$')
LINK = re.compile(r'!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)')
REFERENCE_DEF = re.compile(r'^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)')
SCHEME = re.compile(r'^[a-zA-Z][a-zA-Z0-9+.-]*:')
DOTTED = re.compile(r'\badam_plugin(?:\.[A-Za-z_]\w*)+')
INTERNAL = re.compile(r'^Internal:', re.MULTILINE)
# Pages whose blocks take under ~2 s on the quiet 2-core machine (MXNet's import is about
# 1 s of it); the others run in the slow tier.
QUICK_PAGES = ('README.md', 'checkpoints.md', 'gluon-toolkits.md', 'speed.md')
# Public modules the API reference documents; each one's __all__ must appear there in full.
REFERENCE_MODULES = (
    'adam_plugin', 'adam_plugin.textbook', 'adam_plugin.checkpoint', 'adam_plugin.kernel',
    'adam_plugin.distributed', 'adam_plugin.chapter.reference', 'adam_plugin.chapter.linreg',
    'adam_plugin.chapter.exercises', 'adam_plugin.chapter.probes', 'adam_plugin.chapter.plots',
    'adam_plugin.chapter.cli', 'adam_plugin.scaleout.launch')


class Block:
    """One fenced code block: its info word, its first code line (1-based) and its code."""

    def __init__(self, info, line, code):
        self.info, self.line, self.code = info, line, code

    @property
    def is_python(self):
        return self.info.lower() in PYTHON_INFO

    @property
    def not_runnable(self):
        """The reason given by a first line ``# not runnable: REASON``, or None."""
        first = self.code.lstrip('\n').split('\n', 1)[0]
        match = NOT_RUNNABLE.match(first.strip())
        return None if match is None else match.group(1).strip()


def split(text):
    """``(blocks, prose_lines)``: the fenced blocks, and the other lines as ``(number, line)``."""
    blocks, prose, fence = [], [], None
    for number, line in enumerate(text.split('\n'), 1):
        match = FENCE.match(line)
        if fence is None:
            if match:
                fence, info, start, code = match.group(1), match.group(2), number + 1, []
            else:
                prose.append((number, line))
        elif match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) \
                and not match.group(2) and line.strip() == match.group(1):
            blocks.append(Block(info, start, '\n'.join(code)))
            fence = None
        else:
            code.append(line)
    if fence is not None:
        raise AssertionError(f'a code fence opened at line {start - 1} is never closed')
    return blocks, prose


def slug(heading):
    """GitHub's anchor for a heading's text: the rendered text (code spans, links and
    emphasis reduced to their text), lower-cased, every character that is not a letter,
    digit, ``_``, ``-`` or space removed, every space made ``-``."""
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', heading)
    text = text.replace('`', '').replace('*', '')
    text = re.sub(r'<[^>]+>', '', text)
    return re.sub(r'[^\w\- ]', '', text.lower()).replace(' ', '-')


def anchors(text):
    """Every anchor of a Markdown page's headings, repeats numbered ``-1``, ``-2``, ..."""
    seen, found = {}, set()
    for _, line in split(text)[1]:
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f'{base}-{count}')
    return found


def links(text):
    """``(line number, target)`` of every link and image outside code (blocks and spans)."""
    found = []
    for number, line in split(text)[1]:
        line = re.sub(r'(`+).*?\1', '', line)  # code spans
        found += [(number, target) for target in LINK.findall(line)]
        match = REFERENCE_DEF.match(line)
        if match:
            found.append((number, match.group(1)))
    return found


def broken_links(page, root=ROOT):
    """What is wrong with each internal link of ``page``, as messages (none: all fine)."""
    problems = []
    for number, target in links(page.read_text()):
        where = f'{page.relative_to(root)}:{number}: {target!r}'
        if SCHEME.match(target):
            continue  # an outside address: not checked here (no network)
        path, _, anchor = target.partition('#')
        dest = (page.parent / path).resolve() if path else page
        if root not in dest.parents and dest != root:
            problems.append(f'{where} points outside the repository')
        elif not dest.exists():
            problems.append(f'{where}: no such file')
        elif anchor and dest.suffix != '.md':
            problems.append(f'{where}: anchors are checked in Markdown pages only')
        elif anchor and anchor not in anchors(dest.read_text()):
            problems.append(f'{where}: no heading of {dest.relative_to(root)} has that anchor')
    return problems


# The block runner: each block on its own, in a fresh namespace and a working directory of
# its own (a block that needs another's names or files fails), compiled as lines of its page,
# so a traceback names the page and the line.
RUNNER = """\
import json, os, sys
for number, block in enumerate(json.load(sys.stdin)):
    os.mkdir(f'block{number}')
    os.chdir(f'block{number}')
    code = compile('\\n' * (block['line'] - 1) + block['code'], block['page'], 'exec')
    exec(code, {'__name__': '__main__'})
    os.chdir('..')
"""


def run_blocks(page, blocks, cwd):
    """Run each of ``blocks`` of ``page`` on its own (see RUNNER), in order in one fresh
    Python, under ``cwd``; the process."""
    payload = [{'page': str(page), 'line': b.line, 'code': b.code} for b in blocks]
    return subprocess.run([sys.executable, '-c', RUNNER], input=json.dumps(payload), cwd=cwd,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, 'MPLBACKEND': 'Agg'})


def python_blocks(page):
    return [b for b in split(page.read_text())[0] if b.is_python]


def page_param(page):
    marks = () if page.name in QUICK_PAGES else (pytest.mark.slow,)
    return pytest.param(page, id=page.name, marks=marks)


# --- the checker's own rules, on made-up pages (so a broken checker cannot pass vacuously)

def test_slug_follows_githubs_rules():
    assert slug('Where epsilon goes: pick `epsilon_mode` first') == \
        'where-epsilon-goes-pick-epsilon_mode-first'
    assert slug('Scale-out: several devices, processes and machines') == \
        'scale-out-several-devices-processes-and-machines'
    assert slug("The chapter's experiment, and parity") == 'the-chapters-experiment-and-parity'
    assert slug('One host: `python -m adam_plugin.scaleout.launch`') == \
        'one-host-python--m-adam_pluginscaleoutlaunch'
    assert slug('[Speed](docs/speed.md) and **more**') == 'speed-and-more'
    assert anchors('# A\n## A\n```\n# A\n```\n### A?\n') == {'a', 'a-1', 'a-2'}


def test_the_checker_finds_planted_breakage(tmp_path):
    (tmp_path / 'other.md').write_text('# Its heading\n')
    page = tmp_path / 'page.md'
    page.write_text('# Top\n[ok](other.md#its-heading) [ok](#top) [out](https://example.org)\n'
                    '[a](missing.md) [b](other.md#nope) [c](#nope) ![d](missing.png)\n'
                    '`[not a link](missing.md)`\n```sh\n[not a link](missing.md)\n```\n'
                    '[e]: also-missing.md\n')
    problems = broken_links(page, root=tmp_path)
    assert [p.split(': ', 1)[1].split("'")[1] for p in problems] == [
        'missing.md', 'other.md#nope', '#nope', 'missing.png', 'also-missing.md']


def test_blocks_and_the_not_runnable_marker():
    blocks, _ = split('x\n```python\na = 1\n```\n````py\n# not runnable: needs X\n```\n````\n'
                      '```sh\nls\n```\n~~~python\n# Not runnable\n~~~\n')
    assert [(b.info, b.line, b.is_python, b.not_runnable) for b in blocks] == [
        ('python', 3, True, None), ('py', 6, True, 'needs X'), ('sh', 10, False, None),
        ('python', 13, True, '')]
    with pytest.raises(AssertionError, match='never closed'):
        split('```python\na = 1\n')


def test_a_block_does_not_see_another_blocks_names_or_files(tmp_path):
    page = tmp_path / 'page.md'
    page.write_text('```python\nx = 1\nopen("f", "w").close()\n```\n\n'
                    '```python\nimport os\nassert not os.path.exists("f")\nx\n```\n')
    done = run_blocks(page, python_blocks(page), tmp_path)
    assert done.returncode != 0
    assert f'File "{page}", line 9' in done.stderr and "NameError: name 'x'" in done.stderr


def test_a_failing_block_fails_at_its_line(tmp_path):
    page = tmp_path / 'page.md'
    page.write_text('text\n\n```python\nx = 1\n```\n\n```python\nassert x == 2\n```\n')
    done = run_blocks(page, python_blocks(page), tmp_path)
    assert done.returncode != 0
    assert f'File "{page}", line 8' in done.stderr


# --- the real pages

def test_there_are_pages_and_blocks():
    names = {page.name for page in PAGES}
    assert {'README.md', 'speed.md', 'scale-out.md', 'mxnet-modes.md', 'checkpoints.md',
            'testing.md', 'gluon-toolkits.md'} <= names
    assert python_blocks(README), 'the README has no Python block: nothing would run'


def test_readme_fits():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f'README.md has {lines} lines, at most {README_MAX_LINES}'


# An absolute path of a machine's file system (where a clone or a venv lay), in prose or code.
MACHINE_PATH = re.compile(r'(?<![\w.~])/(?:work|home|root|tmp|mnt|srv|Users|opt)/\S*')


def test_the_machine_path_check_finds_one():
    assert MACHINE_PATH.findall('`git clone /work/main /tmp/mut6` ~/x ./tmp/y a/home/b') == [
        '/work/main', '/tmp/mut6`']


# A development log's words: who did what in which work session. Pages state results.
DEVELOPMENT_LOG = re.compile(r'\b(?:I|we)\s+(?:did|found|tried|could|saw|think|measured|ran)\b'
                             r'|\bsessions?\b', re.IGNORECASE)


def test_the_development_log_check_finds_one():
    assert DEVELOPMENT_LOG.search('I did not find out why') and DEVELOPMENT_LOG.search(
        "the eighth session's 0.97") and not DEVELOPMENT_LOG.search('the run gave 0.97')


@pytest.mark.parametrize('page', PAGES, ids=[p.name for p in PAGES])
def test_pages_hold_no_path_of_a_machine_and_no_development_log(page):
    lines = list(enumerate(page.read_text().split('\n'), 1))
    paths = [(number, path) for number, line in lines for path in MACHINE_PATH.findall(line)]
    assert not paths, f'{page.name} names paths of a machine: {paths}'
    log = [(number, found.group(0)) for number, line in lines
           for found in DEVELOPMENT_LOG.finditer(line)]
    assert not log, f'{page.name} reads as a development log: {log}'


@pytest.mark.parametrize('page', PAGES, ids=[p.name for p in PAGES])
def test_links_resolve(page):
    assert not broken_links(page), '\n'.join(broken_links(page))


def runnable(page):
    return [b for b in python_blocks(page) if b.not_runnable is None]


NOT_RUNNABLE_BLOCKS = [pytest.param(page, block, id=f'{page.name}:{block.line}')
                       for page in PAGES for block in python_blocks(page)
                       if block.not_runnable is not None]


@pytest.mark.parametrize('page', [page_param(p) for p in PAGES if runnable(p)])
def test_python_blocks_run(page, tmp_path):
    done = run_blocks(page, runnable(page), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize('page, block', NOT_RUNNABLE_BLOCKS)
def test_not_runnable_block(page, block):
    """Each block marked not runnable is reported as a skip with its reason, which it must give."""
    assert block.not_runnable, f'{page.name}:{block.line}: "# not runnable:" needs a reason'
    pytest.skip(f'{page.name}:{block.line}: not runnable: {block.not_runnable}')


SHELL_INFO = ('sh', 'bash', 'shell', 'console')
COMMAND = re.compile(r'^(?:\S*/)?python3? -m (adam_plugin[\w.]*)\b')
# Runs each command's module with argparse made to stop after parsing: an unknown flag or a
# bad value exits 2, as it would for the user; a good command line exits 0 unrun.
PARSE_ONLY = """\
import argparse, json, runpy, sys
parse = argparse.ArgumentParser.parse_args
def parse_only(self, args=None, namespace=None):
    parse(self, args, namespace)
    raise SystemExit(0)
argparse.ArgumentParser.parse_args = parse_only
codes = []
for argv in json.load(sys.stdin):
    sys.argv = argv
    try:
        runpy.run_module(argv[0], run_name='__main__', alter_sys=True)
        codes.append('ran past argparse')
    except SystemExit as done:
        codes.append(done.code)
print(json.dumps(codes))
"""


def commands(page):
    """``(line, argv)`` of each ``python -m adam_plugin...`` line in the page's shell blocks."""
    found = []
    for block in split(page.read_text())[0]:
        if block.info.lower() in SHELL_INFO:
            for offset, line in enumerate(block.code.split('\n')):
                if COMMAND.match(line.strip()):
                    argv = shlex.split(line.strip(), comments=True)
                    found.append((block.line + offset, argv[argv.index('-m') + 1:]))
    return found


def parse_commands(argvs):
    """The exit code of parsing each argv (``[module, arg, ...]``), as ``PARSE_ONLY`` saw it."""
    done = subprocess.run([sys.executable, '-c', PARSE_ONLY], input=json.dumps(argvs),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_command_lines_parse():
    """Each page's commands parse; two made-up bad ones in the same run show the check bites."""
    found = [(page, line, argv) for page in PAGES for line, argv in commands(page)]
    assert len(found) >= 5, 'the pages show fewer commands than expected: is COMMAND right?'
    planted = [['adam_plugin', 'linreg', '--no-such-flag'], ['adam_plugin', 'nonesuch']]
    codes = parse_commands([argv for _, _, argv in found] + planted)
    assert codes[len(found):] == [2, 2], 'the parse-only run does not catch bad command lines'
    bad = [f'{page.name}:{line}: {shlex.join(argv)} -> {code}'
           for (page, line, argv), code in zip(found, codes[:len(found)], strict=True) if code != 0]
    assert not bad, 'command lines their module refuses:\n' + '\n'.join(bad)


def marking(path):
    """``(internal, all)`` of a module's source: does its docstring have an ``Internal:``
    line, and the names its ``__all__`` lists (None without one). Read, not imported:
    importing a ``__main__`` module would run it."""
    tree = ast.parse(path.read_text())
    internal = bool(INTERNAL.search(ast.get_docstring(tree) or ''))
    names = [ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
             and [getattr(t, 'id', None) for t in node.targets] == ['__all__']]
    return internal, (names[0] if names else None)


def public(dotted):
    """Is ``adam_plugin.x.y`` a public module, or a name in a public module's ``__all__``?"""
    parts = dotted.split('.')
    for cut in range(len(parts), 0, -1):
        path = ROOT.joinpath(*parts[:cut])
        source = path / '__init__.py' if path.is_dir() else path.with_suffix('.py')
        if source.exists():
            internal, names = marking(source)
            rest = parts[cut:]
            return not internal and (not rest or names is not None and rest[0] in names)
    return False


MODULES = sorted((ROOT / 'adam_plugin').rglob('*.py'))


@pytest.mark.parametrize('path', MODULES, ids=[str(m.relative_to(ROOT)) for m in MODULES])
def test_every_module_is_public_or_says_it_is_internal(path):
    internal, names = marking(path)
    assert internal != (names is not None), (
        f'{path.relative_to(ROOT)}: a public module lists its names in __all__, an internal '
        f'one says "Internal:" in its docstring; it has exactly one of the two')
    if names is not None and path.name != '__main__.py':
        module = importlib.import_module('.'.join(path.relative_to(ROOT).with_suffix('').parts)
                                         .removesuffix('.__init__'))
        for name in names:
            assert hasattr(module, name) or importlib.import_module(f'{module.__name__}.{name}')


@pytest.mark.parametrize('page', PAGES, ids=[p.name for p in PAGES])
def test_pages_name_public_api_only(page):
    named = set(DOTTED.findall(page.read_text()))
    assert not {n for n in named if not public(n)}, \
        f'{page.name} sends users to names that are not public: {sorted(n for n in named if not public(n))}'


def test_the_public_api_check_knows_internal_names():
    assert public('adam_plugin.MyAdam') and public('adam_plugin.kernel.use_variant')
    assert public('adam_plugin.scaleout.launch') and public('adam_plugin.chapter')
    assert not public('adam_plugin.dispatch.route') and not public('adam_plugin.dispatch')
    assert not public('adam_plugin.kernel.HandleTable') and not public('adam_plugin.textbook._rule')
    assert not public('adam_plugin.checkpoint.safe') and not public('adam_plugin.nonesuch')


# --- the API reference

def test_myyogi_shows_its_real_signature():
    """help(MyYogi) and the reference show MyAdam's parameters with MyYogi's defaults."""
    import inspect

    from adam_plugin import MyAdam, MyYogi
    yogi, adam = inspect.signature(MyYogi), inspect.signature(MyAdam)
    assert list(yogi.parameters) == list(adam.parameters)
    changed = {name: p.default for name, p in yogi.parameters.items()
               if p.default != adam.parameters[name].default}
    assert changed == {'epsilon': 1e-3, 'yogi': True}
    assert MyYogi(0.1, 0.8).beta1 == 0.8 and MyYogi().epsilon == 1e-3  # as the signature says


def test_make_docs_needs_mxnet_the_package_and_its_docs_extra_only():
    """``make docs`` builds in a venv of its own: MXNet and this tree with the ``docs``
    extra (Sphinx, numpydoc), not the test venv."""
    import tomllib

    from installed import planned
    installs = [line for line in planned('docs').splitlines()
                if ' -m pip install ' in line and '--upgrade pip' not in line]
    assert installs == ['.venv-docs/bin/python -m pip install --quiet -c requirements.txt mxnet '
                        '".[docs]"'], installs
    extras = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project'][
        'optional-dependencies']
    assert extras['docs'] == ['sphinx', 'numpydoc']


def reference_entries(html):
    """``{id: (signature, description)}`` of every documented name of the page: the
    signature's text without spaces, the description's with single ones."""
    import html as entities

    def text(fragment, gap):
        return entities.unescape(gap.join(re.sub(r'<[^>]+>', ' ', fragment).split()))

    entries = {}
    entry = r'<dt class="sig sig-object py" id="([^"]+)">(.*?)</dt>\s*<dd>(.*?)</dd>'
    for match in re.finditer(entry, html, re.DOTALL):
        entries[match.group(1)] = (text(match.group(2), ''), text(match.group(3), ' '))
    return entries


def test_reference_entries_are_read():
    html = ('<dt class="sig sig-object py" id="m.f"><span>m.f</span>(<em>x=1</em>)</dt>\n'
            '<dd><p>Does a &amp; b.</p></dd>')
    assert reference_entries(html) == {'m.f': ('m.f(x=1)', 'Does a & b.')}


@pytest.mark.slow
def test_api_reference_builds_without_warnings(tmp_path):
    """``make docs``'s build: nitpicky (every cross-reference leads to a page of it), warnings
    as errors; every public name is in it, with its real signature and a description."""
    done = subprocess.run([sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-E', '-q',
                           '-b', 'html', str(ROOT / 'docs' / 'api'), str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    entries = reference_entries((tmp_path / 'index.html').read_text())
    documented = set(entries)
    for name in REFERENCE_MODULES:
        module = importlib.import_module(name)
        missing = {f'{name}.{member}' for member in module.__all__} - documented
        assert not missing, f'public names missing from the API reference: {sorted(missing)}'
        public_entries = {f'{name}.{member}': entries.get(f'{name}.{member}')
                          for member in module.__all__}
        empty = sorted(n for n, (_, description) in public_entries.items() if not description)
        assert not empty, f'public names documented without a word: {empty}'
        vague = sorted(n for n, (signature, _) in public_entries.items()
                       if '(*args,**kwargs)' in signature)
        assert not vague, f'public names shown as (*args, **kwargs): {vague}'
    assert 'epsilon=0.001' in entries['adam_plugin.MyYogi'][0]
    internal = {d for d in documented if re.search(
        r'\.(dispatch|deferred|_warn|safe|rawarray|mxnet_internals|counts|step_values|engine)\.',
        d)}
    assert not internal, f'internal names in the API reference: {sorted(internal)}'
