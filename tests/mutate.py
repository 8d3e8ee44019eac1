"""Mutation testing where mutmut cannot reach: the compiled kernel and the launcher, and one
planted bug of each class of issue #30's audit.

Run from the repository's root with the development environment (``make .venv/.installed``);
``make mutants`` runs it after mutmut::

    .venv/bin/python tests/mutate.py                 # every mutant; prints the score
    .venv/bin/python tests/mutate.py --list          # the mutants, one a line
    .venv/bin/python tests/mutate.py ID...           # only these (ids or parts of names)
    .venv/bin/python tests/mutate.py --doc docs/mutants.md   # and writes the result there
    .venv/bin/python tests/mutate.py --resume LOG --doc docs/mutants.md
        # after tests were added: only the survivors of the full run whose output is LOG

The mutants: one bug of each class the audit of #30 planted by hand (:data:`ISSUE`), and
systematic ones generated from the sources: in the kernel's loops (:data:`KERNEL_REGIONS`)
each comparison flipped (``<`` and ``<=``, ``>`` and ``>=``, ``==`` and ``!=``), each integer
constant off by one, each ``if`` condition made always true and always false, each flag a
loop accumulates (``&=``, ``|=``) made to keep the last value only, each ``std::min`` and
``std::max`` bound dropped; in the launcher's functions the same, on Python's syntax tree.
A call of the kernel's ``prefetch_row`` (outside the regions, like the function) is not
mutated: it asks the memory for rows ahead and changes no value, so no test could tell a
mutant of it.

How: the files of the working tree (tracked and new, not ignored) are copied to a temporary
directory, once per job (``--jobs``, default 2: two mutants are tested at a time). The
kernel is built there once by ``setup.py build_ext``, whose compile and link commands are
recorded; each kernel mutant is compiled by those same commands. A mutant whose machine code
(the library's ``.text``, ``.rodata`` and ``.data``) equals the original's is reported as
such without running tests. Each mutant is applied to a copy alone and the quick tier
(``-m "not slow"``) of the test files that reach its code runs against that copy
(``PYTHONPATH``), in stages (:data:`TESTS`), stopping at the first failure, with
Hypothesis's ``mutate`` profile (tests/conftest.py: the same examples, no shrinking) and a
time limit of three times the stage's time on the unmutated tree, plus 2 minutes. A mutant is killed when a test fails (the first failing test
is reported), the tests crash or they run out of time; else it survived. Survivors that
are argued equivalent in :data:`EQUIVALENT` are reported with the argument.
"""
import argparse
import ast
import concurrent.futures
import dataclasses
import datetime
import hashlib
import os
import platform
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNEL = 'adam_plugin/_kernel.cpp'
LIBRARY = 'adam_plugin/libadam_kernel.so'
LAUNCHER = 'adam_plugin/scaleout/launch.py'

# The quick tier's files that reach each source, in stages run one after the other until
# one fails: the most discriminating first (and -x stops at the first failure), so a killed
# mutant rarely collects and runs the rest.
KERNEL_TESTS = [['tests/test_differential.py'],
                ['tests/test_kernel_nonfinite.py', 'tests/test_precision.py',
                 'tests/test_sparse.py', 'tests/test_fused.py', 'tests/test_yogi.py',
                 'tests/test_queued.py', 'tests/test_kernel_calls.py', 'tests/test_nonfinite.py',
                 'tests/test_properties.py', 'tests/test_weight_overflow.py',
                 'tests/test_checked_step.py', 'tests/test_batch_reuse.py']]
TESTS = {
    KERNEL: KERNEL_TESTS,
    'adam_plugin/kernel.py': KERNEL_TESTS,
    'adam_plugin/step_values.py': [['tests/test_differential.py'],
                                   ['tests/test_nonfinite.py', 'tests/test_validation.py']],
    'adam_plugin/options.py': [['tests/test_states_properties.py'],
                               ['tests/test_checkpoint_checked.py', 'tests/test_checkpoint.py']],
    'adam_plugin/checkpoint/__init__.py': [['tests/test_states_properties.py'],
                                           ['tests/test_checkpoint_allowed.py']],
    'adam_plugin/checkpoint/safe.py': [['tests/test_states_properties.py'],
                                       ['tests/test_checkpoint_bounded.py',
                                        'tests/test_checkpoint_attacks.py']],
    'adam_plugin/chapter/exercises.py': [['tests/test_chapter_formula.py'],
                                         ['tests/test_chapter.py']],
    LAUNCHER: [['tests/test_launcher_units.py'], ['tests/test_launch.py']],
}


@dataclasses.dataclass
class Mutant:
    path: str  # relative to the repository
    line: int  # 1-based: the first line changed
    old: str  # the lines as they are (one, or those of a condition over several)
    new: str  # the same lines mutated
    kind: str  # 'issue: ...', or the systematic family
    region: str  # the function it is in

    def apply(self, text):
        lines = text.splitlines(keepends=True)
        count = len(self.old.splitlines())
        assert ''.join(lines[self.line - 1:self.line - 1 + count]) == self.old, self
        lines[self.line - 1:self.line - 1 + count] = [self.new]
        return ''.join(lines)

    occurrence: int = 0  # of the same change in the same region (set by number())

    @property
    def id(self):
        text = (f'{self.path}\0{self.region}\0{self.old.strip()}\0{self.new.strip()}\0'
                f'{self.occurrence}')
        return hashlib.sha1(text.encode()).hexdigest()[:7]

    @property
    def name(self):
        return f'{os.path.basename(self.path)}:{self.region}: {self.new.strip()}'


# --- one bug of each class of #30, planted by hand --------------------------------------------
# (class, file, the text as it is, the text planted): the text occurs once in the file.
ISSUE = [
    ('1: float16 overflow in a block but the last not reported', KERNEL,
     'if (nonfinite_range(reinterpret_cast<const uint16_t *>(a.v + lo), 0, count))',
     'if (nonfinite_range(reinterpret_cast<const uint16_t *>(a.v + lo), 0, count) && '
     'lo + BLOCK >= n)'),
    ('2: lazy pieces that start inside a row write the wrong elements', KERNEL,
     'found |= variant.adam(span(p, rows[p][i] * length + j, at), k, count,',
     'found |= variant.adam(span(p, rows[p][i] * length, at), k, count,'),
    ('3: a lazy gradient of a 3-D weight steps the wrong rows', 'adam_plugin/kernel.py',
     'length = math.prod(shape[1:])',
     'length = shape[1] if len(shape) > 1 else 1'),
    ("4: Yogi's sign at g * g == v", KERNEL,
     'v = v + step2 * (C(g2 > v) - C(g2 < v));',
     'v = v + step2 * (C(g2 >= v) - C(g2 < v));'),
    ('5: the rescale_grad check remembered across dtypes', 'adam_plugin/step_values.py',
     'key = (values, tuple(map(type, values)), batch.distinct_dtypes)',
     'key = (values, tuple(map(type, values)))'),
    ('6: num_update below a per-device count loads', 'adam_plugin/options.py',
     "highest = max([count for device in state['_all_index_update_counts'].values()",
     "highest = max([count for device in list(state['_all_index_update_counts'].values())[:1]"),
    ('7: leaving safe_globals removes classes allowed before', 'adam_plugin/checkpoint/__init__.py',
     '_ALLOWED_CLASSES[:] = before',
     '_ALLOWED_CLASSES[:] = [c for c in _ALLOWED_CLASSES if c not in classes]'),
    ("8: the pre-scan's bound: depths propagated again", 'adam_plugin/checkpoint/safe.py',
     'if depth > nest.depth:',
     'if depth > nest.depth or nest.holders:'),
    ("9: adam_folded's epsilon divided", 'adam_plugin/chapter/exercises.py',
     'eps_t = eps_stable * root',
     'eps_t = eps_stable / root'),
]


def issue_mutants():
    out = []
    for kind, path, old, new in ISSUE:
        lines = read(path).splitlines(keepends=True)
        hits = [i for i, line in enumerate(lines) if old in line]
        if len(hits) != 1:
            raise SystemExit(f'mutate.py: {old!r} occurs {len(hits)} times in {path}, not once')
        at = hits[0]
        out.append(Mutant(path, at + 1, lines[at], lines[at].replace(old, new), f'issue {kind}',
                          'issue'))
    return out


# --- the kernel's loops, mutated systematically -----------------------------------------------

# Where each region starts (a line holding this text); it ends where the braces opened
# there close (a #define: where its lines stop ending with a backslash).
KERNEL_REGIONS = [
    'void for_slice(', 'constexpr int64_t CHUNK', 'void run(int64_t n, const int64_t *sizes',
    'inline C gradient(', 'inline C adam_element(', 'inline bool nonfinite_range(',
    'inline int adam_loop(', 'struct ScalarHalf {', 'struct F16cHalf {',
    'inline int adam_half(', 'inline int adam_span(', '#define VARIANT(',
    'constexpr bool host(', 'bool holds(void *handle', 'std::vector<void *> data_pointers(',
    'void run_items(int64_t count', 'struct Stepper {', 'void checked_step(int64_t n,',
    'int checked_adam(int64_t n,',
    'void step(int64_t n,', 'void check(int64_t n,', 'int adam(int64_t n,',
    'int finite(int64_t n,', 'void run_queued(', 'int queue(void *const *handles,',
    'int sparse_rows(void *handle', 'int64_t describe(int64_t n,',
]

COMPARISON = re.compile(r'(?<=[\w)\]]) (<=|>=|==|!=|<|>) (?=[\w(!\-*&])')
FLIPPED = {'<': '<=', '<=': '<', '>': '>=', '>=': '>', '==': '!=', '!=': '=='}
INTEGER = re.compile(r'(?<![\w.])(0x[0-9A-Fa-f]+|\d+)(u|ull)?(?![\w.])')
IF = re.compile(r'\bif (constexpr )?\(')
ACCUMULATE = re.compile(r'(\w+) ([&|])= ')


def code_of(line):
    """The code of a C++ line: what precedes a // comment (none of ours is in a string)."""
    return line.split('//')[0]


def regions(lines, starts):
    """``[(name, first, last)]``: 0-based line ranges of the regions that ``starts`` open."""
    out = []
    for start in starts:
        hits = [i for i, line in enumerate(lines) if start in line]
        if len(hits) != 1:
            raise SystemExit(f'mutate.py: {start!r} occurs {len(hits)} times in {KERNEL}')
        first = i = hits[0]
        if start.startswith('#define'):
            while lines[i].rstrip().endswith('\\'):
                i += 1
        elif start.startswith('constexpr int64_t'):
            pass
        else:
            depth, opened = 0, False
            while not (opened and depth == 0):
                code = code_of(lines[i])
                depth += code.count('{') - code.count('}')
                opened = opened or '{' in code
                i += 1
            i -= 1
        name = re.search(r'(\w+)\s*[({]', start) or re.search(r'(\w+)$', start)
        out.append((name.group(1), first, i))
    return out


def matching(text, open_at):
    """The index of the parenthesis that closes the one at ``open_at``."""
    depth = 0
    for i in range(open_at, len(text)):
        depth += {'(': 1, ')': -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise ValueError(text)


def split_arguments(text):
    """The top-level arguments of ``text`` (between parentheses, without them)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {'(': 1, ')': -1, '<': 0, '>': 0}.get(ch, 0)
        if ch == ',' and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]


def line_mutations(code):
    """``[(family, mutated code)]`` of one line of C++ code."""
    out = []
    for match in COMPARISON.finditer(code):
        out.append(('comparison flipped', code[:match.start(1)] + FLIPPED[match.group(1)]
                    + code[match.end(1):]))
    if not code.lstrip().startswith('#include'):
        for match in INTEGER.finditer(code):
            digits = match.group(1)
            value = int(digits, 16 if digits.startswith('0x') else 10)
            new = hex(value + 1) if digits.startswith('0x') else str(value + 1)
            out.append(('constant off by one', code[:match.start(1)] + new + code[match.end(1):]))
    for match in ACCUMULATE.finditer(code):
        out.append(('accumulated flag keeps the last value only',
                    code[:match.start(2)] + code[match.end(2):]))
    for bound in ('std::min', 'std::max'):
        at = code.find(bound + '(')
        while at >= 0:
            open_at = code.index('(', at)
            close = matching(code, open_at)
            arguments = split_arguments(code[open_at + 1:close])
            if len(arguments) == 2:
                for keep in arguments:
                    out.append((f'{bound} bound dropped',
                                code[:at] + '(' + keep.strip() + ')' + code[close + 1:]))
            at = code.find(bound + '(', close)
    return out


def kernel_mutants():
    lines = read(KERNEL).splitlines(keepends=True)
    out = []
    for region, first, last in regions(lines, KERNEL_REGIONS):
        for i in range(first, last + 1):
            line = lines[i]
            code = code_of(line)
            if (not code.strip() or code.lstrip().startswith(('//', '#include'))
                    or 'prefetch_row' in code):  # changes no value (the docstring)
                continue
            comment = line[len(code):]
            for family, mutated in line_mutations(code.rstrip('\n')):
                new = mutated + (comment if comment else '\n')
                if not new.endswith('\n'):
                    new += '\n'
                out.append(Mutant(KERNEL, i + 1, line, new, family, region))
            for match in IF.finditer(code):  # the condition may go on over the next lines
                end = i
                text = code
                while True:
                    try:
                        close = matching(text, match.end() - 1)
                        break
                    except ValueError:
                        end += 1
                        text += code_of(lines[end])
                old = ''.join(lines[i:end + 1])
                for value in ('true', 'false'):
                    new = text[:match.end()] + value + text[close:]
                    new = new if new.endswith('\n') else new + '\n'
                    out.append(Mutant(KERNEL, i + 1, old, new, f'if always {value}', region))
    return out


# --- the launcher, mutated on Python's syntax tree ----------------------------------------------

AST_COMPARISON = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
                  ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In,
                  ast.Is: ast.IsNot, ast.IsNot: ast.Is}


class _Mutations(ast.NodeVisitor):
    """Every single-node change of a function's body: ``(family, node, replacement)``."""

    def __init__(self):
        self.found = []

    def visit_Compare(self, node):
        for i, op in enumerate(node.ops):
            if type(op) in AST_COMPARISON:
                new = ast.Compare(node.left, list(node.ops), node.comparators)
                new.ops[i] = AST_COMPARISON[type(op)]()
                self.found.append(('comparison flipped', node, new))
        self.generic_visit(node)

    def visit_Constant(self, node):
        if type(node.value) in (int, float) and not isinstance(node.value, bool):
            self.found.append(('constant off by one', node, ast.Constant(node.value + 1)))

    def visit_If(self, node):
        self._condition(node)

    def visit_While(self, node):
        self._condition(node)

    def visit_IfExp(self, node):
        self._condition(node)

    def _condition(self, node):
        for value in (True, False):
            self.found.append((f'condition always {value}', node.test, ast.Constant(value)))
        self.generic_visit(node)

    def visit_BoolOp(self, node):
        other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        self.found.append(('and/or swapped', node, ast.BoolOp(other, node.values)))
        self.generic_visit(node)


def python_mutants(path):
    """Single-node mutants of the functions of ``path`` (its module-level strings, the code
    its processes run, are not mutated)."""
    source = read(path)
    lines = source.splitlines(keepends=True)
    tree = ast.parse(source)
    out = []
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        finder = _Mutations()
        for statement in function.body:
            finder.visit(statement)
        for family, node, replacement in finder.found:
            if node.lineno != node.end_lineno:
                continue  # a change within one line keeps the mutant a one-line diff
            line = lines[node.lineno - 1]
            start = len(line.encode()[:node.col_offset].decode())
            end = len(line.encode()[:node.end_col_offset].decode())
            new = line[:start] + ast.unparse(replacement) + line[end:]
            if new != line:
                out.append(Mutant(path, node.lineno, line, new, family, function.name))
    return dedupe(out)


def dedupe(mutants):
    seen, out = set(), []
    for mutant in mutants:
        key = (mutant.path, mutant.line, mutant.new)
        if key not in seen:
            seen.add(key)
            out.append(mutant)
    return out


def number(mutants):
    """Tell apart the same change made at several places of one region (ids stay unique
    and, while a line's text and region stay, stable)."""
    seen = {}
    for mutant in mutants:
        key = (mutant.path, mutant.region, mutant.old.strip(), mutant.new.strip())
        mutant.occurrence = seen.get(key, 0)
        seen[key] = mutant.occurrence + 1
    return mutants


def all_mutants():
    return number(dedupe(issue_mutants() + kernel_mutants()) + python_mutants(LAUNCHER))


# --- survivors argued equivalent ------------------------------------------------------------------
# (region, the line as it is, the line mutated), stripped -> why no test can tell the mutant
# from the original. Each is still run; the report says "equivalent (argued)" and gives the
# reason when it survives. main() checks that each names a mutant that exists.
FOR_SLICE = 'for (; p < n && offsets[p] < end; ++p) {'
LO_HI = 'if (lo < hi) body(p, lo, hi);'
CLIP = 'return g > clip ? clip : (g < -clip ? -clip : g);'
HOLDS = 'if (get_shape(handle, &ndim, &dims) != 0 || ndim < 0 || get_dtype(handle, &dtype) != 0 ||'
INITIAL = 'int ndim = 0, dtype = -1, storage = -1;'
VECTOR = 'for (; i + 8 <= n; i += 8)'
POINTERS = 'if (pointers.empty() && n > 0) return -1;'
WHOLE_PIECE = 'if (sizes[p] > 0 && sizes[p] <= size) pieces.push_back({p, 0, sizes[p], WHOLE});'
CHECK_PIECE = 'pieces.push_back({p, c * size, std::min(sizes[p], (c + 1) * size), CHECK});'
QUEUE_DEVICES = 'int device = 0, id = 0, grad_device = 0, grad_id = 0;'
DESCRIBE_START = 'int ndim = 0, dtype = -1, storage = -1, device = 0, id = 0;'
EQUIVALENT = {
    # for_slice: the parameters of a piece [begin, end) of the row
    ('for_slice', FOR_SLICE, 'for (; p <= n && offsets[p] < end; ++p) {'):
        'p reaches n only if offsets[n], the end of the row, is below end, and no piece ends '
        'past the row: the second test ends the loop there as before',
    ('for_slice', FOR_SLICE, 'for (; p < n && offsets[p] <= end; ++p) {'):
        'a parameter that starts exactly at end gets lo == hi == 0, and the body is not '
        'called (lo < hi)',
    ('for_slice', LO_HI, 'if (lo <= hi) body(p, lo, hi);'):
        'lo == hi only for a parameter of no elements (a lazy gradient of no rows, a skipped '
        'parameter) or one starting at end: the body then steps and checks nothing, its loops '
        'run zero times',
    ('for_slice', LO_HI, 'if (true) body(p, lo, hi);'):
        'the loop visits parameters that end after begin and start before end, so lo <= hi '
        'always; lo == hi as for "lo <= hi"',
    # run: the row cut into pieces
    ('run', 'std::vector<int64_t> offsets(n + 1, 0);', 'std::vector<int64_t> offsets(n + 1, 1);'):
        'the row starts at element 1 instead of 0: every parameter keeps its own elements '
        '(lo and hi are taken relative to its start), only the pieces are cut one element '
        'further into it, and results do not depend on where pieces are cut',
    ('run', 'for_slice(offsets, c * piece, std::min(total, (c + 1) * piece), body);',
     'for_slice(offsets, c * piece, ((c + 1) * piece), body);'):
        "the last piece ends past the row: for_slice clips each part to its parameter's end",
    # gradient: clipping
    ('gradient', CLIP, 'return g >= clip ? clip : (g < -clip ? -clip : g);'):
        'at g == clip both give clip, which is g (clip > 0: no signed zero); NaN fails both',
    ('gradient', CLIP, 'return g > clip ? clip : (g <= -clip ? -clip : g);'):
        'at g == -clip both give -clip, which is g; NaN fails both',
    # adam_element: AMSGrad's maximum
    ('adam_element', 'if (AMSGRAD) {  // a template argument: the plain loop never touches vmax',
     'if (true) {'):
        'the AMSGrad branch taken without AMSGrad: vmax is then 0 (adam_loop passes T(0)) and '
        'v >= 0 (a second moment; Yogi lowers v by less than v), so max(vmax, v) is v, NaN '
        'included (0 > NaN is false), and vmax is not stored',
    ('adam_element', 'vmax = vmax > v ? vmax : v;', 'vmax = vmax >= v ? vmax : v;'):
        'at vmax == v both give the same value; a NaN v fails both comparisons and is taken',
    # adam_half: float16 in blocks
    ('adam_half', 'constexpr int64_t BLOCK = 1024;', 'constexpr int64_t BLOCK = 1025;'):
        'blocks of 1025 elements: each element is computed alike whatever block it is in, and '
        "every block's check of its second moments is kept (overflow |=)",
    ('adam_half', 'for (int64_t lo = 0; lo < n; lo += BLOCK) {',
     'for (int64_t lo = 0; lo <= n; lo += BLOCK) {'):
        'the one block more (when n is a multiple of BLOCK, or 0) has count 0: nothing is '
        'converted, stepped or checked in it',
    # F16cHalf: eight at a time, then one at a time
    ('F16cHalf', VECTOR, 'for (; i + 8 < n; i += 8)'):
        'the last eight are converted by the scalar tail instead, which rounds as F16C does '
        '(to nearest even)',
    ('F16cHalf', VECTOR, 'for (; i + 9 <= n; i += 8)'):
        'as for "i + 8 < n": up to eight more elements go to the scalar tail, same rounding',
    # holds: what a queued step takes
    ('holds', INITIAL, 'int ndim = 1, dtype = -1, storage = -1;'):
        'ndim is written by MXNet before it is read (else the function returns false first)',
    ('holds', INITIAL, 'int ndim = 0, dtype = -2, storage = -1;'):
        'dtype is written by MXNet before it is read (else the function returns false first)',
    ('holds', INITIAL, 'int ndim = 0, dtype = -1, storage = -2;'):
        'storage is written by MXNet before it is read (else the function returns false first)',
    ('holds', HOLDS,
     'if (get_shape(handle, &ndim, &dims) != 0 || ndim <= 0 || get_dtype(handle, &dtype) != 0 ||'):
        'a 0-d array (a shape of () under NumPy semantics; a Trainer has none) would not be '
        'queued: MyAdam then steps it on the calling thread, to the same numbers',
    ('holds', HOLDS,
     'if (get_shape(handle, &ndim, &dims) != 0 || ndim < 1 || get_dtype(handle, &dtype) != 0 ||'):
        'as for "ndim <= 0"',
    # adam: MXNet's errors become a status for check_call
    ('adam', 'if (wait_all() != 0) return -1;  // no engine operation reads or writes any of them',
     'if (wait_all() != 0) return -2;  // no engine operation reads or writes any of them'):
        "another non-zero status: check_call raises MXNet's error for any",
    # checked_step: the list of pieces, each parameter's checks before its steps
    ('checked_step', WHOLE_PIECE, WHOLE_PIECE.replace('sizes[p] > 0', 'sizes[p] >= 0')):
        'a parameter of no elements gets a piece [0, 0): its check reads nothing and finds '
        'nothing, its step runs its loops zero times',
    ('checked_step', CHECK_PIECE, CHECK_PIECE.replace('(c + 1)', '(c + 2)')):
        "each check piece ends one piece later (or at the parameter's end): the pieces "
        'overlap, so the same gradient is read more than once and the same flag results',
    ('checked_step', CHECK_PIECE, CHECK_PIECE.replace('std::min(sizes[p], (c + 1) * size)',
                                                      '(sizes[p])')):
        "each check piece runs to the parameter's end: as for \"(c + 2)\", more reading of "
        'the same gradient, the same flag',
    ('checked_adam', 'if (wait_all() != 0) return -1;', 'if (wait_all() != 0) return -2;'):
        "another non-zero status: check_call raises MXNet's error for any",
    # queue: the context and the checks of the arrays, before the step is pushed
    **{('queue', QUEUE_DEVICES, QUEUE_DEVICES.replace(f' {name} = 0', f' {name} = 1')):
       f'{name} is written before it is read: MXNDArrayGetContext sets both of its outputs '
       'whenever it returns 0, and the function returns -1 before reading them otherwise'
       for name in ('device', 'id', 'grad_device', 'grad_id')},
    **{('sparse_rows', f'if ({call}) != 0) return -1;', f'if ({call}) != 0) return -2;'):
       "kernel.sparse_rows passes any negative status to check_call, which raises MXNet's "
       'error for -2 as for -1'
       for call in ('wait_to_read(handle', 'to_dlpack(handle, &view', 'call_dlpack_deleter(view')},
    ('sparse_rows', 'size_t size = 0;', 'size_t size = 1;'):
        'MXNDArraySaveRawBytes writes size when it succeeds; when it fails, the function '
        'returns before size is read',
    **{('describe', DESCRIBE_START, DESCRIBE_START.replace(before, after)):
       f'{before.split()[0]} is written before it is read: each of MXNet\'s getters sets '
       'its output whenever it returns 0, and the function returns -1 before reading them '
       'otherwise'
       for before, after in (('ndim = 0', 'ndim = 1'), ('dtype = -1', 'dtype = -2'),
                             ('storage = -1', 'storage = -2'), ('device = 0', 'device = 1'),
                             ('id = 0', 'id = 1'))},
}

# Survivors that are not equivalent but that no test can observe, keyed as EQUIVALENT is.
# Reported as "survived (unobservable, argued)".
UNOBSERVABLE = {
    ('describe', 'for (int i = 0; i < ndim; ++i) at[5 + i] = dims[i];',
     'for (int i = 0; i <= ndim; ++i) at[5 + i] = dims[i];'):
        "a one-element overrun: it reads one size past MXNet's shape buffer and writes it "
        "where the next array's values start (written over next) or past the values "
        'returned, one past the buffer when they fill it: no value a test reads changes. A '
        'memory checker would see it, the tests cannot',
    ('describe', 'return -1;', 'return -2;'):
        "describe then reads as 'not described' (None: CheckedLayouts reads MXNet's "
        "properties) instead of raising MXNet's error; MXNet's getters of dtype, storage, "
        'context and shape fail only for a handle that is not an array, which Python never '
        'hands over (a freed one crashes either way)',
    ('ScalarHalf', 'for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(in[i]);',
     'for (int64_t i = 0; i <= n; ++i) out[i] = static_cast<float>(in[i]);'):
        'a one-element overrun: it reads the float16 element after the block (the next '
        "one of the array, or two bytes past its end) and writes one float past the block's "
        'buffer; in this build that float lands on the next buffer, which is widened right '
        'after (or, for the master copy, not read): no value a test reads changes. A memory '
        'checker (AddressSanitizer) would see it, the tests cannot',
    ('F16cHalf', 'for (; i < n; ++i) out[i] = static_cast<float>(in[i]);',
     'for (; i <= n; ++i) out[i] = static_cast<float>(in[i]);'):
        "the same overrun in F16C's tail",
    ('sparse_rows', 'if (call_dlpack_deleter(view) != 0) return -1;', 'if (false) return -1;'):
        "the DLPack view's release not checked: MXNDArrayCallDLPackDeleter fails only when the "
        "deleter it calls throws, and MXNet's (set by NDArray::ToDLPack: it deletes the view's "
        'NDArrayDLManager, which drops one reference to the array) does not: unreachable from '
        'the tests',
    ('sparse_rows', 'constexpr int32_t ROW_SPARSE = 1, INT64 = 6, MAX_NDIM = 32;',
     'constexpr int32_t ROW_SPARSE = 1, INT64 = 6, MAX_NDIM = 33;'):
        'MXNet makes no array of more than 32 dimensions, so no serialization the tests can '
        'make holds a shape of 33 (those of 32 are tested)',
    ('sparse_rows', 'if (size - at < sizeof field) return false;', 'if (false) return false;'):
        "the bound of each header field: MXNet's serialization of a row_sparse array always "
        'holds its whole header (its values and rows follow it), so no field ends past it; '
        'the check is for a serialization MXNet would not write',
    ('sparse_rows',
     'if (!read(ndim) || ndim < 1 || ndim > MAX_NDIM || size - at < 8 * size_t(ndim))',
     'if (!read(ndim) || ndim < 1 || ndim > MAX_NDIM || size - at <= 8 * size_t(ndim))'):
        "differs only when a shape's sizes end exactly at the end of the serialization, which "
        'MXNet never writes: more header fields, the values and the rows follow',
    ('sparse_rows', '(size - at) / 8 < uint64_t(stored))', '(size - at) / 9 < uint64_t(stored))'):
        'what follows the header in MXNet\'s serialization holds, per stored row, its 8-byte '
        'index and at least one byte of values: at least 9 bytes a row, so the stricter '
        'bound refuses no serialization MXNet writes',
    ('sparse_rows', 'std::memcpy(&row, first + 8 * i, 8);', 'std::memcpy(&row, first + 8 * i, 9);'):
        'copies one byte past the 8-byte row into the stack frame (undefined behaviour): in '
        'this build no value a test reads changes, and the row read is the same. A memory '
        'checker (AddressSanitizer) would see it, the tests cannot',
    **{key: why for region in ('adam', 'checked_adam', 'finite') for key, why in (
        ((region, POINTERS, 'if (pointers.empty() && n >= 0) return -1;'),
         'differs only for a call of no parameters, which kernel.HandleTable never makes (a '
         'step '
         'of none returns before the call)'),
        ((region, POINTERS, 'if (pointers.empty() && n > 1) return -1;'),
         'differs only when MXNet refuses a data pointer (MXNDArrayGetData fails), which it '
         'does for no array the dispatch hands the kernel: unreachable from the tests'),
        ((region, POINTERS, 'if (pointers.empty() && n > 0) return -2;'),
         "unreachable as above; and check_call raises MXNet's error for any non-zero status"),
        ((region, POINTERS, 'if (false) return -1;'),
         'the refusal of a data pointer not checked: unreachable as above'))},
    ('queue', 'return -1;', 'return -2;'):
        "a failing call of MXNet's (MXNDArrayGetContext, MXNDArrayGetData or "
        'MXEnginePushSyncND, each of which fails for no array the dispatch hands the '
        'kernel) reported as an array the step does not take: unreachable from the tests',
    ('queue', 'if (pointers.empty()) return -1;', 'if (pointers.empty()) return -2;'):
        "as for \"return -2;\": MXNDArrayGetData fails for no array the dispatch hands the "
        'kernel, and check_call raises MXNet\'s error for any non-zero status',
    ('queue', 'if (pointers.empty()) return -1;', 'if (false) return -1;'):
        'a data pointer MXNet refused not checked: MXNDArrayGetData fails for no array the '
        'dispatch hands the kernel, unreachable from the tests',
    ('queue', 'nullptr, 0, "adam_plugin_step") != 0) {', 'nullptr, 1, "adam_plugin_step") != 0) {'):
        "the queued step's priority in MXNet's engine, 1 instead of 0: it orders operations "
        'that are ready at the same time, not what any computes; what the step waits for and '
        'what waits for it (its read and written arrays) stay the same',
}


def argued(mutant):
    """``(status, why)`` for a survivor argued equivalent or unobservable, else None."""
    key = (mutant.region, mutant.old.strip(), mutant.new.strip())
    if key in EQUIVALENT:
        return 'equivalent (argued)', EQUIVALENT[key]
    if key in UNOBSERVABLE:
        return 'survived (unobservable, argued)', UNOBSERVABLE[key]
    return None


# --- running ---------------------------------------------------------------------------------------

def read(path, root=ROOT):
    with open(os.path.join(root, path)) as f:
        return f.read()


def copy_tree(destination):
    files = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard'],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for path in files:
        if not os.path.exists(os.path.join(ROOT, path)):
            continue  # deleted in the working tree
        target = os.path.join(destination, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, path), target)


def build_commands(tree):
    """Build the kernel in ``tree`` with setup.py; return its compile and link commands."""
    done = subprocess.run([sys.executable, 'setup.py', 'build_ext', '--inplace', '--force'],
                          cwd=tree, capture_output=True, text=True)
    if done.returncode != 0 or not os.path.exists(os.path.join(tree, LIBRARY)):
        raise SystemExit(f'mutate.py: setup.py could not build the kernel:\n{done.stderr}')
    commands = [shlex.split(line) for line in done.stdout.splitlines() + done.stderr.splitlines()
                if re.match(r'\S*(g\+\+|gcc|c\+\+|clang\+\+|cc) ', line)]
    compile_, link = [c for c in commands if '-c' in c], [c for c in commands if '-c' not in c]
    if len(compile_) != 1 or len(link) != 1:
        raise SystemExit(f'mutate.py: expected one compile and one link command, found {commands}')
    return compile_[0], link[0]


def build_mutant(tree, commands, source, out_dir):
    """Compile ``source`` (a kernel's text) into ``out_dir``/libadam_kernel.so with setup.py's
    own commands; returns its path, or None with the compiler's error."""
    os.makedirs(out_dir, exist_ok=True)
    src, obj, lib = (os.path.join(out_dir, name) for name in
                     ('_kernel.cpp', '_kernel.o', 'libadam_kernel.so'))
    with open(src, 'w') as f:
        f.write(source)
    compile_, link = (list(c) for c in commands)
    original_obj = compile_[compile_.index('-o') + 1]
    compile_[compile_.index('-c') + 1] = src
    compile_[compile_.index('-o') + 1] = obj
    link = [obj if token == original_obj else token for token in link]
    link[link.index('-o') + 1] = lib
    for command in (compile_, link):
        done = subprocess.run(command, cwd=tree, capture_output=True, text=True)
        if done.returncode != 0:
            return None, done.stderr
    return lib, ''


def machine_code(library):
    """The bytes of the library's code and constant sections."""
    out = b''
    for section in ('.text', '.rodata', '.data'):
        with tempfile.NamedTemporaryFile() as dump:
            subprocess.run(['objcopy', '-O', 'binary', f'--only-section={section}', library,
                            dump.name], check=True, capture_output=True)
            out += section.encode() + dump.read()
    return out


def run_tests(tree, files, timeout):
    """The quick tier of ``files`` in ``tree``, stopping at the first failure: (status,
    the first failing test or what ended the run, seconds)."""
    env = dict(os.environ, PYTHONPATH=tree, PYTHONDONTWRITEBYTECODE='1')
    command = [sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider',
               '-m', 'not slow', '--hypothesis-profile', 'mutate', '-rf',
               '-W', 'ignore::pytest.PytestUnraisableExceptionWarning', *files]
    start = time.monotonic()
    proc = subprocess.Popen(command, cwd=tree, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return 'killed (time out)', f'no result in {timeout:.0f} s', time.monotonic() - start
    seconds = time.monotonic() - start
    failed = re.findall(r'^FAILED (\S+)', out, re.M)
    if proc.returncode == 0:
        return 'survived', '', seconds
    if failed:
        return 'killed', failed[0], seconds
    if proc.returncode < 0 or 'Fatal Python error' in out:
        return 'killed (crash)', f'the tests crashed (status {proc.returncode})', seconds
    errors = re.findall(r'^ERROR (\S+)', out, re.M)
    return 'killed', (errors[0] + ' (error)') if errors else out.strip().splitlines()[-1], seconds


@dataclasses.dataclass
class Result:
    mutant: Mutant
    status: str
    by: str
    seconds: float


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('only', nargs='*', help='mutant ids, or text their names contain')
    parser.add_argument('--list', action='store_true', help='list the mutants and exit')
    parser.add_argument('--doc', help='write the result into this Markdown file, between '
                                      'its markers')
    parser.add_argument('--keep', action='store_true', help='keep the temporary trees')
    parser.add_argument('--jobs', type=int, default=2,
                        help='mutants tested at a time, each in its own tree (default 2)')
    parser.add_argument('--resume', metavar='LOG',
                        help="the output of an earlier full run: its mutants killed, of the same "
                             "machine code or argued are kept, the survivors run again")
    parser.add_argument('--again', metavar='TEXT', action='append', default=[],
                        help='with --resume: also run again the kept mutants whose killing '
                             'test names TEXT (a test changed since that run)')
    args = parser.parse_args(argv)

    mutants = all_mutants()
    stale = (set(EQUIVALENT) | set(UNOBSERVABLE)) - {
        (m.region, m.old.strip(), m.new.strip()) for m in mutants}
    if stale:
        raise SystemExit(f'mutate.py: EQUIVALENT names mutants that no longer exist: {stale}')
    if args.only:
        mutants = [m for m in mutants if m.id in args.only
                   or any(text in m.name or text in m.kind for text in args.only)]
    if args.list:
        for m in mutants:
            print(f'{m.id}  {m.kind:45}  {m.path}:{m.line}: {m.new.strip()}')
        print(f'{len(mutants)} mutants')
        return 0

    kept, before = resumed(args.resume) if args.resume else ({}, None)
    kept = {id_: row for id_, row in kept.items()
            if not any(text in row[1] for text in args.again)}
    started, tested = time.monotonic(), version()
    workspace = tempfile.mkdtemp(prefix='adam-plugin-mutate-')
    try:
        again = [m for m in mutants if m.id not in kept]
        done = {r.mutant.id: r for r in run_all(workspace, again, max(1, args.jobs))}
    finally:
        if args.keep:
            print(f'kept {workspace}')
        else:
            shutil.rmtree(workspace, ignore_errors=True)
    results = [done[m.id] if m.id in done else Result(m, *kept[m.id]) for m in mutants]
    elapsed = time.monotonic() - started
    report = render(results, elapsed, whole=not args.only, tested=tested,
                    resumed=(len(again), before) if args.resume else None)
    print(report)
    if args.doc:
        write_doc(args.doc, report)
    return 1 if any(r.status == 'survived' for r in results) else 0


def run_all(workspace, mutants, jobs):
    """Run ``mutants``, ``jobs`` at a time, each in a copy of the tree of its own."""
    trees = [os.path.join(workspace, f'tree{k}') for k in range(jobs)]
    copy_tree(trees[0])
    commands = build_commands(trees[0])
    original = machine_code(os.path.join(trees[0], LIBRARY))
    shutil.copy2(os.path.join(trees[0], LIBRARY), os.path.join(trees[0], 'original.so'))
    for tree in trees[1:]:
        shutil.copytree(trees[0], tree, symlinks=True)
    baselines = {}  # a stage's files -> its seconds on the unmutated tree
    for path in sorted({m.path for m in mutants}):
        for stage in TESTS[path]:
            if tuple(stage) not in baselines:
                status, by, seconds = run_tests(trees[0], stage, timeout=3600)
                if status != 'survived':
                    raise SystemExit(f'mutate.py: the unmutated tree fails {" ".join(stage)}: {by}')
                baselines[tuple(stage)] = seconds
                print(f'baseline {" ".join(stage)}: {seconds:.0f} s', flush=True)
    kernel_source = read(KERNEL, trees[0])

    def test(tree, path):
        """Each stage of ``path``'s tests, within 3 times its baseline and 2 minutes."""
        total = 0.0
        for stage in TESTS[path]:
            status, by, seconds = run_tests(tree, stage, 3 * baselines[tuple(stage)] + 120)
            total += seconds
            if status != 'survived':
                break
        return status, by, total

    def one(m, tree):
        if m.path == KERNEL:
            library, error = build_mutant(tree, commands, m.apply(kernel_source),
                                          os.path.join(tree, 'mutants', m.id))
            if library is None:
                return Result(m, 'killed (does not compile)', error.strip()[-200:], 0)
            if machine_code(library) == original:
                return Result(m, 'equivalent (same machine code)', '', 0)
            shutil.copy2(library, os.path.join(tree, LIBRARY))
            try:
                status, by, seconds = test(tree, m.path)
            finally:
                shutil.copy2(os.path.join(tree, 'original.so'), os.path.join(tree, LIBRARY))
        else:
            target = os.path.join(tree, m.path)
            text = read(m.path, tree)
            with open(target, 'w') as f:
                f.write(m.apply(text))
            try:
                status, by, seconds = test(tree, m.path)
            finally:
                with open(target, 'w') as f:
                    f.write(text)
        if status == 'survived' and argued(m):
            status, by = argued(m)
        return Result(m, status, by, seconds)

    free = queue.Queue()
    for tree in trees:
        free.put(tree)

    def task(m):
        tree = free.get()
        try:
            return one(m, tree)
        finally:
            free.put(tree)

    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(task, m) for m in mutants]:
            results.append(future.result())
            report_one(results[-1])
    return results


def resumed(log):
    """From the output of a full run: ``({id: (status, by, seconds)}`` of its mutants killed,
    of the original's machine code or argued (equivalent, unobservable), ``(its commit, the
    minutes it took)``)."""
    kept, run, lines = {}, None, open(log).read().splitlines()
    for i, line in enumerate(lines):
        status = line[:32].strip()
        if status.startswith('killed') or status.startswith('equivalent') or status.endswith(
                'argued)'):
            following = lines[i + 1] if i + 1 < len(lines) else ''
            by = following.strip() if following.startswith(' ' * 33) else ''
            kept[line[33:40]] = (status, by, 0.0)
        found = re.match(r'`tests/mutate.py` on (\w+).*, (\d+) min: \d+ mutants\.', line)
        if found:
            run = found.group(1), float(found.group(2))
    if run is None:
        raise SystemExit(f'mutate.py: {log} is not the output of a whole run')
    return kept, run


def report_one(result):
    m = result.mutant
    print(f'{result.status:32} {m.id} {m.path}:{m.line} [{m.kind}] {m.new.strip()[:90]}'
          + (f'\n{"":33}{result.by}' if result.by else ''), flush=True)


def version():
    """The commit the run tests, and whether the tree it copies differs from it (taken when
    the run starts: the repository may move on while it runs)."""
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return commit, bool(dirty)


def render(results, elapsed, whole, tested, resumed=None):
    """The Markdown report: the score, the issue's classes, the survivors. ``tested``: the
    :func:`version` run; ``resumed``: (mutants run again, (commit, minutes) of the full run
    before)."""
    commit, dirty = tested
    counts = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    cpu = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo')
                if line.startswith('model name')), platform.processor())
    lines = [f'`tests/mutate.py`{"" if whole else " (a selection)"} on {commit}'
             f'{" with uncommitted changes" if dirty else ""}, '
             f'{datetime.date.today().isoformat()}, {os.cpu_count()}-core {cpu}, '
             f'{elapsed / 60:.0f} min: {len(results)} mutants.'
             + (f' A resumed run: the full run on {resumed[1][0]} ({resumed[1][1]:.0f} min) '
                f'found the others as they are given here; the {resumed[0]} that are new '
                'since, had survived there or were killed only by a test changed since were '
                f'run again on {commit}.' if resumed else ''), '',
             '| ' + ' | '.join(sorted(counts)) + ' |', '|' + '---|' * len(counts),
             '| ' + ' | '.join(str(counts[k]) for k in sorted(counts)) + ' |', '']
    issue = [r for r in results if r.mutant.kind.startswith('issue')]
    if issue:
        lines += ['The classes of bugs of #30, one planted bug each:', '',
                  '| class | status | the first test that failed |', '|---|---|---|']
        lines += [f'| {r.mutant.kind[6:]} | {r.status} | `{r.by}` |' for r in issue]
        lines.append('')
    families = {}
    for r in results:
        key = (os.path.basename(r.mutant.path), r.mutant.kind if not r.mutant.kind.startswith(
            'issue') else 'issue')
        done = families.setdefault(key, [0, 0])
        done[0] += 1
        done[1] += r.status.startswith('killed') or r.status.startswith('equivalent')
    lines += ['| file | family | mutants | killed or equivalent |', '|---|---|---|---|']
    lines += [f'| {f} | {k} | {n} | {d} |' for (f, k), (n, d) in sorted(families.items())]
    lines.append('')
    left = [r for r in results if r.status.startswith(('survived', 'equivalent'))]
    if left:
        lines += ['Survivors and equivalent mutants:', '']
        for r in left:
            m = r.mutant
            lines.append(f'- `{m.id}` {m.path}:{m.line} ({m.region}, {m.kind}): '
                         f'`{m.old.strip()}` -> `{m.new.strip()}`: {r.status}'
                         + (f'. {r.by}' if r.by else ''))
    return '\n'.join(lines)


BEGIN, END = '<!-- tests/mutate.py: begin -->', '<!-- tests/mutate.py: end -->'


def write_doc(path, report):
    text = read(path)
    if BEGIN not in text or END not in text:
        raise SystemExit(f'mutate.py: {path} has no {BEGIN} ... {END} markers')
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(os.path.join(ROOT, path), 'w') as f:
        f.write(f'{head}{BEGIN}\n{report}\n{END}{tail}')


if __name__ == '__main__':
    sys.exit(main())
