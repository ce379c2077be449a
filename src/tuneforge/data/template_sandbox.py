"""The one Jinja sandbox every chat template is rendered in, with bounds on what a template may make.

A chat template is user input (``--template``, a spec's ``chat_template``, a model's own template) and
transformers renders it in jinja2's ImmutableSandboxedEnvironment, which stops attribute escapes but not
size: ``{{ 'x' * 1500000000 }}`` or nested ``range(99999)`` loops took 3.2 GB and ended in "internal
error: out of memory". Here the same sandbox is bounded:
- the output is counted as it is produced (``MAX_CHARS``);
- a string or list built by ``*``, ``+``, ``~``, ``%`` or ``replace``, and any width a filter or string
  method is asked for, is checked before it is made (``MAX_CHARS``); ``**`` takes small exponents only;
- ``range`` holds at most ``MAX_RANGE`` items, and loop iterations (over anything) and operators
  together take at most ``MAX_STEPS`` steps per render, so nested loops end.
Past a bound, ``TemplateBoundError`` names the template and the bound. transformers builds its
environment per template from the class its module imported; ``install`` puts this class in its place
(once, before any template is compiled through tuneforge).
"""

from __future__ import annotations

import functools
import re
from contextvars import ContextVar

from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from tuneforge.errors import ConfigError

# 4 × the largest record (TUNEFORGE_MAX_RECORD_MB's default of 8 MiB): room for any honest layout.
MAX_CHARS = 32 * 2**20
MAX_RANGE = 100_000
MAX_STEPS = 2_000_000
MAX_EXPONENT = 1_000
MAX_INT_BITS = 100_000  # integers a template computes (``x * x`` in a loop doubles them)
MAX_CALL_DEPTH = 32  # a call takes ~10 Python frames; the interpreter stops at 1,000

_labels: dict[str, str] = {}  # template source → how a message names it
_steps: ContextVar[list[int] | None] = ContextVar("template_steps", default=None)
_depth: ContextVar[int] = ContextVar("template_call_depth", default=0)
# a width or a precision (``%.1000000000f`` makes a 1 GB string) of millions, or one given by an argument
_WIDE_FORMAT = re.compile(
    r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d{7,}|\d*\.(?:\*|\d{7,}))|\{[^{}]*:[^{}]*(\*|\d{7,})[^{}]*\}"
)
CHARS_PER_STEP = 64  # what a string or list made by an operator costs the step budget


class TemplateBoundError(SecurityError, ConfigError):
    """A chat template went past a bound of the sandbox: a jinja2 TemplateError (callers that refuse a
    record on a template error do so) and a ConfigError (exit 2, a 4xx)."""


def label(source: str, name: str) -> None:
    """Remember how to name a template in messages (``resolve_chat_template`` calls this)."""
    _labels[source] = name


def _refuse(env: BoundedSandbox, what: str) -> TemplateBoundError:
    return TemplateBoundError(
        f"{env.label}: {what}. A chat template may not make that much; simplify the template."
    )


def _size(value) -> int | None:
    return len(value) if isinstance(value, str | list | tuple) else None


class _Generator(CodeGenerator):
    """Compiles ``a ~ b`` through ``environment.join_pieces`` (jinja's own str_join cannot be hooked),
    so a template doubling a string with ``~`` in a loop meets the bound."""

    def visit_Concat(self, node, frame) -> None:  # noqa: N802 (jinja's visitor name)
        self.write("environment.join_pieces((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Counted:
    """A ``{% for %}`` loop's iterable, counted item by item (``environment.counted``): a loop over a
    string or a list made in the template passes no ``range``, and two nested over a 100,000-character
    string ran for hours."""

    def __init__(self, env: BoundedSandbox, iterable):
        self.env, self.iterable = env, iterable

    def __len__(self) -> int:  # loop.length/loop.last without a second pass, where the iterable has one
        return len(self.iterable)

    def __iter__(self):
        for item in self.iterable:
            self.env.step()
            yield item


class _Range:
    """range() for templates: at most MAX_RANGE items, each a counted step."""

    def __init__(self, env: BoundedSandbox, bounded: range):
        self.env, self.bounded = env, bounded

    def __len__(self) -> int:
        return len(self.bounded)

    def __iter__(self):
        for item in self.bounded:
            self.env.step()
            yield item


class BoundedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["*", "+", "**", "%"])
    code_generator_class = _Generator

    label = "the chat template"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # No constant folding: jinja's optimizer runs filters on constants while compiling, outside any
        # rendering's step count (twenty ``'x'|center(30000000)`` took 2.3 GB before a render began).
        self.optimized = False
        self.globals["range"] = self._range
        self.filters = _BoundedFilters(self, self.filters)

    def _parse(self, source, name, filename):
        template = super()._parse(source, name, filename)
        for loop in template.find_all(nodes.For):  # for x in environment.counted(iterable)
            counted = nodes.EnvironmentAttribute("counted", lineno=loop.lineno)
            loop.iter = nodes.Call(counted, [loop.iter], [], None, None, lineno=loop.lineno)
        return template

    def from_string(self, source, *args, **kwargs):
        if isinstance(source, str):
            self.label = _labels.get(source, "the model's chat template")
        return super().from_string(source, *args, **kwargs)

    # Counting ---------------------------------------------------------------------------------------

    def step(self, n: int = 1) -> None:
        steps = _steps.get()
        if steps is None:
            return
        steps[0] += n
        if steps[0] > MAX_STEPS:
            raise _refuse(self, f"more than {MAX_STEPS:,} loop iterations and operations in one rendering")

    def check_chars(self, n: int, what: str) -> None:
        if n > MAX_CHARS:
            raise _refuse(self, f"{what} would make {n:,} characters or items; at most {MAX_CHARS:,}")

    def make(self, n: int, what: str) -> None:
        """A value of ``n`` characters or items about to be made: bounded, and paid for in steps, so a
        loop making a 30-million-character string each time ends too (3,000 of them took 18 s)."""
        self.check_chars(n, what)
        self.step(n // CHARS_PER_STEP)

    def concat(self, pieces) -> str:
        """Template.render joins the output here: counted as produced, and the step count of one
        rendering starts here."""
        token = _steps.set([0])
        try:
            out, total = [], 0
            for piece in pieces:
                total += len(piece)
                self.check_chars(total, "the output")
                out.append(piece)
            return "".join(out)
        finally:
            _steps.reset(token)

    # What a template can call -----------------------------------------------------------------------

    def _range(self, *args) -> _Range:
        bounded = range(*args)
        if len(bounded) > MAX_RANGE:
            raise _refuse(self, f"range of {len(bounded):,} items; at most {MAX_RANGE:,}")
        return _Range(self, bounded)

    def counted(self, iterable):
        return iterable if isinstance(iterable, _Range) else _Counted(self, iterable)

    def join_pieces(self, values) -> str:
        self.step()
        pieces = [str(v) for v in values]
        self.make(sum(map(len, pieces)), "joining values with ~")
        return "".join(pieces)

    def call_binop(self, context, operator, left, right):
        self.step()
        ints = isinstance(left, int) and isinstance(right, int)
        if operator == "*" and ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise _refuse(self, f"an integer of more than {MAX_INT_BITS:,} bits")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if _size(seq) is not None and isinstance(times, int):
                    self.make(_size(seq) * max(times, 0), f"{type(seq).__name__} * {times}")
        elif operator == "+" and _size(left) is not None and _size(right) is not None:
            self.make(_size(left) + _size(right), "joining two values with +")
        elif operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise _refuse(self, f"** {right}: exponents are at most {MAX_EXPONENT}")
        elif operator == "**" and ints and left.bit_length() * abs(right) > MAX_INT_BITS:
            raise _refuse(self, f"an integer of more than {MAX_INT_BITS:,} bits")
        elif operator == "%" and isinstance(left, str):
            if _WIDE_FORMAT.search(left):
                raise _refuse(self, "a % format with a width of millions of characters")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's own signature)
        __self.step()
        depth = _depth.get()
        if depth >= MAX_CALL_DEPTH:  # a macro calling itself: Python's RecursionError, an internal error
            raise _refuse(__self, f"calls (macros, recursive loops) nested more than {MAX_CALL_DEPTH} deep")
        name = getattr(__obj, "__name__", "a call")
        _check_widths(__self, name, args, kwargs)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str) and name == "format" and _WIDE_FORMAT.search(owner):
            raise _refuse(__self, "a format with a width of millions of characters")
        if isinstance(owner, str) and name == "replace":
            _check_replace(__self, owner, *args[:2])
        if isinstance(owner, str) and name == "join" and args:
            _check_join(__self, owner, args[0])
        token = _depth.set(depth + 1)
        try:
            return super().call(__context, __obj, *args, **kwargs)
        finally:
            _depth.reset(token)


def _check_widths(env: BoundedSandbox, name: str, args, kwargs) -> None:
    """An integer argument (a width: center, ljust, indent, zfill, …) past MAX_CHARS is refused before
    the call makes a string that wide."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_CHARS:
            raise _refuse(env, f"{name}({value:,}): more than {MAX_CHARS:,} characters")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            env.step(value // CHARS_PER_STEP)  # a width: the string it asks for is paid for too


def _check_replace(env: BoundedSandbox, text, old=None, new=None) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
        count = text.count(old) if old else len(text) + 1
        env.make(len(text) + count * (len(new) - len(old)), "replace")


def _check_join(env: BoundedSandbox, separator, items) -> None:
    """The separators alone (``range(100000)|join('x' * 1000)`` made 100 million characters)."""
    if isinstance(separator, str) and hasattr(items, "__len__"):
        env.make(len(separator) * max(len(items) - 1, 0), "join")


class _BoundedFilters(dict):
    """The environment's filters, each checking its integer arguments first (``|center(10**9)``)."""

    def __init__(self, env: BoundedSandbox, filters: dict):
        super().__init__({k: self._wrap(env, k, f) for k, f in filters.items()})
        self.env = env

    def __setitem__(self, key, value):
        super().__setitem__(key, self._wrap(self.env, key, value))

    @staticmethod
    def _wrap(env: BoundedSandbox, name: str, fn):
        # A filter marked pass_context / pass_eval_context / pass_environment takes that first, then
        # the value; the arguments after the value are the ones that can ask for a width.
        first = 2 if getattr(fn, "jinja_pass_arg", None) is not None else 1

        @functools.wraps(fn)
        def bounded(*args, **kwargs):
            env.step()
            _check_widths(env, f"|{name}", args[first:], kwargs)
            if name == "replace":
                _check_replace(env, *[str(a) if i == 0 else a for i, a in enumerate(args[first - 1 :])])
            if name == "join" and len(args) > first:
                _check_join(env, args[first], args[first - 1])
            if name == "format" and isinstance(args[first - 1], str) and _WIDE_FORMAT.search(args[first - 1]):
                raise _refuse(env, "|format with a width of millions of characters")
            return fn(*args, **kwargs)

        return bounded


def install() -> None:
    """Make transformers compile chat templates in BoundedSandbox (idempotent)."""
    from transformers.utils import chat_template_utils as ctu

    if getattr(ctu, "ImmutableSandboxedEnvironment", None) is BoundedSandbox:
        return
    ctu.ImmutableSandboxedEnvironment = BoundedSandbox
    for name in ("_cached_compile_jinja_template", "_compile_jinja_template"):
        cached = getattr(ctu, name, None)
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()  # templates compiled before ran in the plain sandbox
