"""Every place that restates MyAdam's option table (``adam_plugin.options.OPTIONS``) agrees
with it: the README's signature and options table, the validation paragraph of docs/rule.md,
the defaults the pages state, and the fields of ``textbook.Step``. (The command line's flags:
tests/test_cli_sweep.py; the kernel's constant columns: tests/test_fused.py.)"""
import ast
import inspect
import pathlib
import re

import mxnet as mx
import pytest

import adam_plugin
from adam_plugin import options
from adam_plugin.textbook import Step

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / 'README.md').read_text()
PAGES = {path.name: path.read_text() for path in [ROOT / 'README.md',
                                                  *sorted((ROOT / 'docs').glob('*.md'))]}
NAMES = [option.name for option in options.OPTIONS]


def section(text, heading):
    """The lines of ``text`` under the Markdown heading ``heading``, up to the next heading."""
    body = text.split(f'\n{heading}\n', 1)[1]
    return re.split(r'\n#{1,6} ', body, maxsplit=1)[0]


def test_the_readmes_signature_is_myadams():
    """The README's ``MyAdam(...)`` line: every parameter of ``inspect.signature(MyAdam)``,
    in order, with its default."""
    written = re.match(r'\s*`(MyAdam\(.*?\))`', section(README, '## Options'),
                       flags=re.DOTALL).group(1)  # the section's first line
    call = ast.parse(written.replace('\n', ' '), mode='eval').body
    assert [k.arg for k in call.keywords] == [*NAMES, None], 'the options, then **kwargs'
    assert call.keywords[-1].value.id == 'kwargs'
    readme = {k.arg: ast.literal_eval(k.value) for k in call.keywords[:-1]}
    signature = inspect.signature(adam_plugin.MyAdam).parameters
    assert list(signature) == [*readme, 'kwargs']
    for name, default in readme.items():
        assert (default, type(default)) == (signature[name].default,
                                            type(signature[name].default)), name
    assert signature['kwargs'].kind is inspect.Parameter.VAR_KEYWORD


def test_the_readmes_options_table_names_every_option_and_nothing_else():
    """Its first column names each option (``amsgrad=True``, ``beta1``, ``beta2``: by name);
    any other name there must be a keyword of ``mx.optimizer.Optimizer``."""
    rows = [line for line in section(README, '## Options').splitlines()
            if line.startswith('| ')]
    assert rows[0].startswith('| `MyAdam` | meaning |')
    named = {name for row in rows[1:]
             for name in re.findall(r'`(\w+)(?:=[^`]*)?`', row.split(' | ')[0])}
    optimizer_keywords = set(inspect.signature(mx.optimizer.Optimizer.__init__).parameters)
    assert set(NAMES) - named == set(), 'options the table leaves out'
    assert named - set(NAMES) - optimizer_keywords == set(), 'names that are not keywords'


# docs/rule.md's paragraph on bad values: each range it states -> a value it says is refused
# and one at the edge it does not refuse.
RANGES = {'< 0': (-1.0, 0.0), '<= 0': (0.0, 1e-3), 'not > 0': (0.0, 1e-3),
          'outside [0, 1)': (1.0, 0.0)}


def bad_values_paragraph():
    text = ' '.join(section(PAGES['rule.md'], '## What "same" means, and bad values').split())
    return text.split('Bad hyperparameters raise', 1)[1].split('`Trainer.set_learning_rate`')[0]


def test_docs_rule_names_every_option_among_the_bad_values():
    named = set(re.findall(r'`(\w+)`', bad_values_paragraph()))
    assert set(NAMES) - named == set()


def test_docs_rule_lists_the_flags_and_the_choices_as_the_table_has_them():
    text = bad_values_paragraph()
    (flags,) = re.findall(r'The flags (.*?) take `True`, `False`, `1` or `0`', text)
    assert re.findall(r'`(\w+)`', flags) == [o.name for o in options.OPTIONS
                                             if o.check is options.flag]
    (choices,) = re.findall(r'an unknown (`\w+`(?: or `\w+`)*)', text)
    assert re.findall(r'`(\w+)`', choices) == [o.name for o in options.OPTIONS
                                               if hasattr(o.check, 'choices')]


def test_docs_rule_states_each_range_as_myadam_checks_it():
    claims = re.findall(r'`(\w+)`(?:/`(\w+)`)? (' + '|'.join(map(re.escape, RANGES)) + ')',
                        bad_values_paragraph())
    assert {name for claim in claims for name in claim[:2] if name} == {
        'learning_rate', 'beta1', 'beta2', 'epsilon', 'wd', 'clip_gradient', 'rescale_grad'}
    for *names, relation in claims:
        refused, accepted = RANGES[relation]
        for name in filter(None, names):
            with pytest.raises(ValueError, match=rf'^Invalid {name}: {refused!r} '):
                adam_plugin.MyAdam(**{name: refused})
            assert adam_plugin.MyAdam(**{name: accepted}) is not None


def prose(text):
    """The page without its code blocks, each run of white space made one space."""
    return ' '.join(re.sub(r'^```.*?^```', '', text, flags=re.DOTALL | re.MULTILINE).split())


# How the pages state an option's default: "the default `nonfinite='skip'`",
# "`nonfinite='skip'` (the default)", "`max_skips` bad updates in a row (default 50",
# a table's row "| `max_skips` | with `'skip'`, raise ... (default 50".
DEFAULTS = [re.compile(r"the default `(\w+)=([^`]+)`"),
            re.compile(r"`(\w+)=([^`]+)` \(the default\)"),
            re.compile(r"`(\w+)`[^`.|]*(?:`[^`]*`[^`.|]*)?\(default ([^,;)]+)"),
            re.compile(r"\| `(\w+)` \|[^|]*?\(default ([^,;)]+)")]


def marked_defaults(text):
    """``(column, value)`` of each Markdown table's row whose first cell is
    ``| `VALUE` (default) |``, ``column`` the header of that first column (`` `NAME` ``)."""
    found, column = [], None
    for line in text.splitlines():
        if not line.startswith('|'):
            column = None
            continue
        first = line.strip('|').split('|')[0].strip()
        if column is None:
            column = first.strip('`')
        elif re.fullmatch(r'`[^`]+` \(default\)', first):
            found.append((column, first.split('`')[1]))
    return found


def test_the_defaults_the_pages_state_are_the_tables():
    stated = [(page, *found) for page, text in PAGES.items()
              for found in [found for pattern in DEFAULTS for found in pattern.findall(prose(text))]
              + marked_defaults(text) if found[0] in NAMES]
    assert {(page, name) for page, name, _ in stated} >= {
        ('README.md', 'max_skips'), ('README.md', 'epsilon_mode'), ('rule.md', 'max_skips'),
        ('rule.md', 'nonfinite'), ('rule.md', 'epsilon_mode')}, stated
    default = {option.name: option.default for option in options.OPTIONS}
    for page, name, value in stated:
        assert ast.literal_eval(value) == default[name], (page, name, value)


def test_textbook_steps_fields_are_options():
    """After ``t``: ``lr``, ``wd``, then the rule's options, each by the attribute MyAdam
    keeps it in (MyAdam fills a Step from those attributes)."""
    keys = {option.key for option in options.OPTIONS}
    assert Step._fields[:3] == ('t', 'lr', 'wd')
    assert set(Step._fields[1:]) <= keys
    options.check_step_fields(Step._fields)


@pytest.mark.parametrize('fields, message', [
    (Step._fields + ('momentum',), r"\('momentum': no option's\)$"),
    (('t', 'wd', 'lr') + Step._fields[3:], r"; not \('t', 'wd', 'lr', "),
    (Step._fields[1:], r"; not \('lr', 'wd', "),
])
def test_a_step_with_a_field_that_is_no_option_is_refused(fields, message):
    with pytest.raises(TypeError, match=r"^textbook\.Step's fields must be 't', 'lr', 'wd', "
                                        r"then options of .*" + message):
        options.check_step_fields(fields)
