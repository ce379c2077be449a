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
        # width × lines, tabsize × tabs: 39 MB and 40 MB from small inputs
        ("{{ ('a\n' * 40)|indent(1000000) }}", "indent would make"),
        ("{{ ('a\n' * 40)|indent(width=1000000) }}", "indent would make"),
        ("{{ ('\t' * 4000).expandtabs(10000) }}", "expandtabs would make"),
        # a list item costs a pointer (8 bytes) at least: 257 MB
        ("{{ 'x'|center(30000000)|list|length }}", "list would make"),
        ("{{ ('x'|center(30000000))|select|list|length }}", "list would make"),
        ("{{ ([1] * 30000000)|length }}", "list \\* 30000000 would make"),
        ("{{ (' x' * 15000000).split()|length }}", "split would make"),
        # doubling a string in a loop through namespace(), with + and with ~
        (
            "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
            "joining two values with \\+ would make",
        ),
        (
            "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "joining values with ~ would make",
        ),
        ("{{ ('x' * 1000000).replace('x', 'y' * 100) }}", "replace would make"),
        ("{{ ('x' * 1000000)|replace('x', 'y' * 100) }}", "replace would make"),
        ("{{ 2 ** 1000000 }}", "exponents are at most"),
        ("{{ (2 ** 1000) ** 1000 }}", "more than 100,000 bits"),
        (
            "{% set ns = namespace(n=3) %}{% for i in range(30) %}{% set ns.n = ns.n * ns.n %}{% endfor %}",
            "more than 100,000 bits",
        ),
        # each piece small, the output past MAX_CHARS
        ("{% for i in range(2000) %}{{ 'x' * 20000 }}{% endfor %}", "the output would make"),
        # the text of a list of one shared string: [a, a] costs 16 to build, its text twice a
        ("{% set a = 'x'|center(20000000) %}{{ [a, a]|join|length }}", "join would make"),
        ("{% set a = 'x'|center(20000000) %}{{ ''.join([a, a])|length }}", "join would make"),
        ("{% set a = 'x'|center(20000000) %}{{ ('%s%s' % (a, a))|length }}", "a % format would make"),
        ("{% set a = 'x'|center(20000000) %}{{ '{}{}'.format(a, a)|length }}", "format would make"),
        ("{% set a = 'x'|center(20000000) %}{{ '%s'|format([a, a])|length }}", "\\|format would make"),
        ("{% set a = 'x'|center(20000000) %}{{ [a, a]|string|length }}", "\\|string would make"),
        ("{% set a = 'x'|center(20000000) %}{{ [a, a]|tojson|length }}", "\\|tojson would make"),
        ("{% set a = 'x'|center(20000000) %}{{ [a, a] }}", "the text of a value would make"),
        ("{% set a = 'x'|center(20000000) %}{{ ([a, a] ~ '')|length }}", "joining values with ~ would make"),
        ("{% set a = [[[['x'] * 100] * 100] * 100] * 100 %}{{ a|string|length }}", "iterations"),
        # str.format is the sandbox's wrapper: its width check never ran (100 million characters)
        ("{{ '{:>99999999}'.format(1)|length }}", "width of millions"),
        # joining a shared string, each time under the bound: paid for in steps
        (
            "{% set a = 'x'|center(1000000) %}{% for i in range(3000) %}{% set b = [a, a, a]|join %}"
            "{% endfor %}",
            "iterations",
        ),
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
        "{{ '%05.1f'|format(2.25) }}|{{ 'x'|center(5) }}|{{ 'ab' * 3 }}|"
        "{% for n in [[1, [2]], 3] recursive %}{% if n is iterable %}{{ loop(n) }}{% else %}{{ n }}"
        "{% endif %}{% endfor %}|{{ 'a\nb'|indent(2) }}|{{ 'a\tb'.expandtabs(4) }}|"
        "{{ 'cba'|list|sort|join }}|"
        "{{ 'a</think>b'.split('</think>')[-1] }}|{{ 'ab'|reverse }}"
    )
    assert _render(source) == "1,2,3,4,5|1:hi!|b|1, 2|002.2|  x  |ababab|123|a\n  b|a   b|abc|b|ba"


def test_generate_is_bounded_like_render():
    """transformers' return_assistant_tokens_mask path renders with Template.generate, not render."""
    from tuneforge.data.template_sandbox import BoundedSandbox, TemplateBoundError

    started = time.monotonic()
    loops = "{% set s = 'x' * 100000 %}{% for c in s %}{% for d in s %}{% endfor %}{% endfor %}"
    with pytest.raises(TemplateBoundError, match="iterations"):
        list(BoundedSandbox().from_string(loops).generate())
    output = "{% for i in range(2000) %}{{ 'x' * 20000 }}{% endfor %}"
    with pytest.raises(TemplateBoundError, match="the output would make"):
        list(BoundedSandbox().from_string(output).generate())
    assert time.monotonic() - started < 10
    assert "".join(BoundedSandbox().from_string("{% for x in 'ab' %}{{ x }}{% endfor %}").generate()) == "ab"


def test_a_converted_template_is_named_in_its_errors():
    from tuneforge.data.template_sandbox import BoundedSandbox, TemplateBoundError
    from tuneforge.data.templates import resolve_chat_template

    source = resolve_chat_template(None, "llamafactory:alpaca")
    big = [{"role": "user", "content": "x" * (33 * 2**20)}]
    with pytest.raises(TemplateBoundError, match="chat template 'llamafactory:alpaca': "):
        BoundedSandbox().from_string(source).render(messages=big)


def test_a_recursive_loops_inner_iterations_are_counted(monkeypatch):
    """loop(x) iterated x uncounted: 4 million iterations in 24 s (depth 3: hours). A smaller bound
    here only so that the test ends quickly on a loaded machine; the landed code never stops at all."""
    from tuneforge.data import template_sandbox

    monkeypatch.setattr(template_sandbox, "MAX_STEPS", 50_000)
    with pytest.raises(template_sandbox.TemplateBoundError, match="more than 50,000 loop iterations"):
        _render(
            "{% set s = 'x' * 2000 %}{% for c in s recursive %}{% if loop.depth < 2 %}{{ loop(s) }}"
            "{% endif %}{% endfor %}"
        )
