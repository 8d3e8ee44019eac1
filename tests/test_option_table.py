"""Every place that restates MyAdam's option table (``adam_plugin.options.OPTIONS``) agrees
with it: the fields of ``textbook.Step``."""
import pytest

from adam_plugin import options
from adam_plugin.textbook import Step


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
