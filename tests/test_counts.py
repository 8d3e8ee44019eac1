"""docs/testing.md's test counts are the tree's: what ``pytest --collect-only`` collects now
(``make counts`` writes them; see tests/counts.py)."""
import pytest

import counts
from adam_plugin import kernel


def test_the_sentence_is_read_and_written():
    text = 'Before. The quick tier holds 12 tests and the whole\nsuite 345, after.'
    assert counts.documented(text) == {'quick': 12, 'all': 345}
    assert counts.written(text, {'quick': 7, 'all': 8}) == \
        'Before. The quick tier holds 7 tests and the whole\nsuite 8, after.'
    with pytest.raises(ValueError, match='holds 0 sentences'):
        counts.documented('The quick tier has 12 tests.')


@pytest.mark.slow
def test_the_page_states_the_quick_tiers_count():
    assert counts.documented(counts.PAGE.read_text())['quick'] == counts.collected('quick'), \
        'docs/testing.md states another count of the quick tier: run make counts'


@pytest.mark.slow
def test_the_page_states_the_whole_suites_count():
    runs = [v for v in kernel.variants() if kernel.runs_here(v)] if kernel.LIBRARY else []
    if len(runs) != 3:
        pytest.skip(f'this CPU runs the kernel variants {runs}; docs/testing.md counts the '
                    'suite for a CPU that runs all three')
    assert counts.documented(counts.PAGE.read_text())['all'] == counts.collected('all'), \
        'docs/testing.md states another count of the whole suite: run make counts'
