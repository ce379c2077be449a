"""The chat-template sandbox against templates written to exhaust it (issue 16 item 18, tried again as
an attacker would): every way to make a big value or a long loop meets a bound, as a located error."""

from __future__ import annotations

import time

import pytest


def _render(source: str):
    from tuneforge.data.template_sandbox import BoundedSandbox

    return BoundedSandbox().from_string(source).render(messages=[{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    "source, says",
    [
        # loops over anything but range() were not counted: hours
        ("{% set s = 'x' * 100000 %}{% for c in s %}{% for d in s %}{% endfor %}{% endfor %}", "iterations"),
        # a macro calling itself: Python's RecursionError, an internal error
        ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "nested more than"),
        ("{% for a in [1] recursive %}{{ loop([1]) }}{% endfor %}", "nested more than"),
        # under the size bound each time, thousands of times
        ("{% for i in range(3000) %}{% set y = 'x' * 30000000 %}{% endfor %}", "iterations"),
        ("{% for i in range(3000) %}{% set y = 'x'|center(30000000) %}{% endfor %}", "iterations"),
        # folded while compiling (20 took 2.3 GB before a rendering began)
        ("{% set a = 'x'|center(30000000) %}" * 20, "iterations"),
        # a precision is a width too: 1 GB
        ("{{ '%.1000000000f' % 1.0 }}", "width of millions"),
        ("{{ '%(a).1000000000d' % {'a': 1} }}", "width of millions"),
        ("{{ '%.1000000000f'|format(1.0) }}", "width of millions"),
        # the separators alone: 100 million characters
        ("{{ range(100000)|join('x' * 1000) }}", "join would make"),
        ("{{ ('x' * 1000).join(range(100000)|map('string')|list) }}", "join would make"),
    ],
)
def test_a_template_past_a_bound_is_refused_quickly_and_small(source, says):
    from tuneforge.data.template_sandbox import TemplateBoundError

    started = time.monotonic()
    with pytest.raises(TemplateBoundError, match=says):
        _render(source)
    assert time.monotonic() - started < 10


def test_honest_templates_render_as_before():
    source = (
        "{% macro r(n) %}{{ n }}{% if n < 5 %},{{ r(n + 1) }}{% endif %}{% endmacro %}{{ r(1) }}|"
        "{% for m in messages %}{{ loop.index }}:{{ m.content }}{% if loop.last %}!{% endif %}{% endfor %}|"
        "{% for x in 'ab' if x != 'a' %}{{ x }}{% else %}none{% endfor %}|{{ [1, 2]|join(', ') }}|"
        "{{ '%05.1f'|format(2.25) }}|{{ 'x'|center(5) }}|{{ 'ab' * 3 }}"
    )
    assert _render(source) == "1,2,3,4,5|1:hi!|b|1, 2|002.2|  x  |ababab"
