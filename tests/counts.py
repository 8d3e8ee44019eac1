"""The test counts docs/testing.md states, measured: ``pytest --collect-only`` of the quick
tier (``-m "not slow"``) and of the whole suite, in this Python.

``python tests/counts.py`` prints the collected and the documented counts and exits 1 when
they differ; ``--write`` (``make counts``) writes the collected ones into docs/testing.md.
``tests/test_counts.py`` runs the comparison in the slow tier.

The whole suite's count depends on the CPU: the kernel's parity tests run once per variant
of its loops the CPU runs. docs/testing.md states it for a CPU that runs all three.
"""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE = ROOT / 'docs' / 'testing.md'
# The sentence of docs/testing.md that holds the counts: (quick tier, whole suite).
SENTENCE = re.compile(r'(The quick tier holds\s+)(\d+)(\s+tests and the whole\s+suite\s+)(\d+)')
TIERS = {'quick': ['-m', 'not slow'], 'all': []}
COLLECTED = re.compile(r'^(?:(\d+)/)?(\d+) tests? collected', re.MULTILINE)


def collected(tier):
    """How many tests pytest collects for ``tier`` (a key of TIERS), run from the root."""
    done = subprocess.run([sys.executable, '-m', 'pytest', '--collect-only', '-q',
                           '-p', 'no:cacheprovider', *TIERS[tier]],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    found = COLLECTED.search(done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f'pytest --collect-only failed ({done.returncode}):\n'
                           + done.stdout[-3000:] + done.stderr[-3000:])
    return int(found.group(1) or found.group(2))


def documented(text):
    """``{'quick': n, 'all': n}`` as the page's sentence states them."""
    found = SENTENCE.findall(text)
    if len(found) != 1:
        raise ValueError(f'{PAGE.name} holds {len(found)} sentences "The quick tier holds N '
                         'tests and the whole suite M", not one')
    return {'quick': int(found[0][1]), 'all': int(found[0][3])}


def written(text, counts):
    """``text`` with the sentence's counts replaced by ``counts``."""
    return SENTENCE.sub(lambda m: f"{m.group(1)}{counts['quick']}{m.group(3)}{counts['all']}",
                        text)


def main(argv):
    counts = {tier: collected(tier) for tier in TIERS}
    text = PAGE.read_text()
    stated = documented(text)
    print(f"collected: quick {counts['quick']}, all {counts['all']}; "
          f"{PAGE.relative_to(ROOT)} states quick {stated['quick']}, all {stated['all']}")
    if argv == ['--write']:
        PAGE.write_text(written(text, counts))
        return 0
    if argv:
        print('usage: python tests/counts.py [--write]', file=sys.stderr)
        return 2
    return 0 if counts == stated else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
