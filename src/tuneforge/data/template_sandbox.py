"""The one Jinja sandbox every chat template is rendered in, with bounds on what a template may make.

A chat template is user input (``--template``, a spec's ``chat_template``, a model's own template) and
transformers renders it in jinja2's ImmutableSandboxedEnvironment, which stops attribute escapes but not
size: ``{{ 'x' * 1500000000 }}`` or nested ``range(99999)`` loops took 3.2 GB and ended in "internal
error: out of memory". Here the same sandbox is bounded:
- the output is counted as it is produced (``MAX_CHARS``);
- a string or list built by ``*``, ``+``, ``~``, ``%`` or ``replace``, and any width a filter or string
  method is asked for, is checked before it is made (``MAX_CHARS``); ``**`` takes small exponents only;
- a list's item costs ``ITEM_CHARS`` characters (a pointer, at least), so a list is bounded like a string;
- ``range`` holds at most ``MAX_RANGE`` items, and loop iterations (over anything, recursive ``loop(x)``
  too) and operators together take at most ``MAX_STEPS`` steps per rendering (``render`` and
  ``generate``), so nested loops end.
Past a bound, ``TemplateBoundError`` names the template and the bound. transformers builds its
environment per template from the class its module imported; ``install`` puts this class in its place
(once, before any template is compiled through tuneforge).

Long because: every bound is a hook on the one environment class (operators, calls, filters, output,
loops); split, each part would reach into the others' counters.
"""

from __future__ import annotations

import functools
import re
from contextvars import ContextVar, copy_context

from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.environment import Template
from jinja2.runtime import LoopContext
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
ITEM_CHARS = 8  # a list item is a pointer at least: ``'x'|center(30000000)|list`` took 257 MB
# filters that make a list as long as their input, before they make it
_LIST_FILTERS = frozenset(["list", "sort", "batch", "slice", "dictsort", "groupby", "reverse"])
# filters that make the text of their value (str(), JSON, repr) before they do anything else
_TEXT_FILTERS = frozenset(
    ["string", "tojson", "pprint", "e", "escape", "forceescape", "safe", "upper", "lower", "title"]
    + ["capitalize", "trim", "striptags", "wordwrap", "wordcount", "truncate", "center", "urlencode"]
)


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
    """What a string (its characters) or a list (ITEM_CHARS a item) costs against MAX_CHARS."""
    if isinstance(value, str):
        return len(value)
    return len(value) * ITEM_CHARS if isinstance(value, list | tuple) else None


def _text_size(env: BoundedSandbox, *values) -> int:
    """How many characters ``str()`` of ``values`` makes at most, counted before it is made: ``[a] * 100``
    costs 800 to build but its text (``|string``, ``|join``, ``{{ }}``, ``%``, ``format``) is 100 × ``a``.
    The walk stops past MAX_CHARS and pays a step per item, so a nest of shared lists ends too."""
    total, stack, visits = 0, list(values), 0
    while stack and total <= MAX_CHARS:
        value = stack.pop()
        visits += 1
        if visits % 4096 == 0:
            env.step(4096)
        if isinstance(value, str):
            total += len(value) + 4  # quotes and a separator, inside a container's text
        elif isinstance(value, list | tuple | set | frozenset | dict):
            total += 2
            stack.extend(value.items() if isinstance(value, dict) else value)
        elif isinstance(value, int):
            total += value.bit_length() // 3 + 2
        else:
            total += 32  # a number, None, a bool, an object's short repr
    return total


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
    """An iterable counted item by item: every ``{% for %}`` loop's and recursive ``loop(x)``'s
    (``environment.counted``: a loop over a string or a list made in the template passes no ``range``,
    and two nested over a 100,000-character string ran for hours), and ``range()``'s."""

    def __init__(self, env: BoundedSandbox, iterable):
        self.env, self.iterable = env, iterable

    def __len__(self) -> int:  # loop.length/loop.last without a second pass, where the iterable has one
        return len(self.iterable)

    def __iter__(self):
        steps = _steps.get()  # looked up once per loop, not once per item
        if steps is None:
            yield from self.iterable
            return
        for item in self.iterable:
            steps[0] += 1
            if steps[0] > MAX_STEPS:
                raise self.env.too_many_steps()
            yield item


class _BoundedTemplate(Template):
    def generate(self, *args, **kwargs):
        """Template.generate (transformers' return_assistant_tokens_mask path) bounded like render: its
        own step count, in a copy of the caller's context so that the count does not leak into the
        caller between pieces, and the output counted as it is produced."""
        run = copy_context().run
        run(_steps.set, [0])
        pieces = run(super().generate, *args, **kwargs)
        total = 0
        while True:
            try:
                piece = run(next, pieces)
            except StopIteration:
                return
            total += len(piece)
            self.environment.check_chars(total, "the output")
            yield piece


class BoundedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["*", "+", "**", "%"])
    code_generator_class = _Generator
    template_class = _BoundedTemplate

    label = "the chat template"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # No constant folding: jinja's optimizer runs filters on constants while compiling, outside any
        # rendering's step count (twenty ``'x'|center(30000000)`` took 2.3 GB before a render began).
        self.optimized = False
        self.globals["range"] = self._range
        self.filters = _BoundedFilters(self, self.filters)
        self.finalize = self._output  # {{ value }}: its text bounded before str() makes it

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
            raise self.too_many_steps()

    def too_many_steps(self) -> TemplateBoundError:
        return _refuse(self, f"more than {MAX_STEPS:,} loop iterations and operations in one rendering")

    def check_chars(self, n: int, what: str) -> None:
        if n > MAX_CHARS:
            raise _refuse(self, f"{what} would make {n:,} characters or items; at most {MAX_CHARS:,}")

    def make(self, n: int, what: str, steps: int = 0) -> None:
        """A value costing ``n`` characters (``_size``) about to be made: bounded, and paid for in steps
        (with ``steps`` more, in one count), so a loop making a 30-million-character string each time
        ends too (3,000 of them took 18 s)."""
        self.check_chars(n, what)
        self.step(steps + n // CHARS_PER_STEP)

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

    def _range(self, *args) -> _Counted:
        bounded = range(*args)
        if len(bounded) > MAX_RANGE:
            raise _refuse(self, f"range of {len(bounded):,} items; at most {MAX_RANGE:,}")
        return _Counted(self, bounded)

    def counted(self, iterable):
        return iterable if isinstance(iterable, _Counted) else _Counted(self, iterable)

    def _output(self, value):
        if not isinstance(value, str):
            self.make(_text_size(self, value), "the text of a value")
        return value

    def join_pieces(self, values) -> str:
        if not all(type(v) is str for v in values):  # str() of a list of shared strings is their sum
            self.make(_text_size(self, *values), "joining values with ~")
        pieces = [str(v) for v in values]
        self.make(sum(map(len, pieces)), "joining values with ~", steps=1)
        return "".join(pieces)

    def call_binop(self, context, operator, left, right):
        if operator == "+" and type(left) is str and type(right) is str:
            # The hot path (chatml's ``'<|im_start|>' + role + …``, 10 a message): the same bound and step
            # price as ``make`` inlined, without its calls, which made a chatml render ~3x slower.
            size = len(left) + len(right)
            if size > MAX_CHARS:
                self.check_chars(size, "joining two values with +")
            steps = _steps.get()
            if steps is not None:
                steps[0] += 1 + size // CHARS_PER_STEP
                if steps[0] > MAX_STEPS:
                    raise self.too_many_steps()
            return left + right
        if operator == "+":
            size, other = _size(left), _size(right)
            if size is not None and other is not None:
                self.make(size + other, "joining two values with +", steps=1)
            else:
                self.step()
            return super().call_binop(context, operator, left, right)
        self.step()
        ints = isinstance(left, int) and isinstance(right, int)
        if operator == "*" and ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise _refuse(self, f"an integer of more than {MAX_INT_BITS:,} bits")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if _size(seq) is not None and isinstance(times, int):
                    self.make(_size(seq) * max(times, 0), f"{type(seq).__name__} * {times}")
        elif operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise _refuse(self, f"** {right}: exponents are at most {MAX_EXPONENT}")
        elif operator == "**" and ints and left.bit_length() * abs(right) > MAX_INT_BITS:
            raise _refuse(self, f"an integer of more than {MAX_INT_BITS:,} bits")
        elif operator == "%" and isinstance(left, str):
            if _WIDE_FORMAT.search(left):
                raise _refuse(self, "a % format with a width of millions of characters")
            self.make(len(left) + _text_size(self, right), "a % format")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's own signature)
        __self.step()
        depth = _depth.get()
        if depth >= MAX_CALL_DEPTH:  # a macro calling itself: Python's RecursionError, an internal error
            raise _refuse(__self, f"calls (macros, recursive loops) nested more than {MAX_CALL_DEPTH} deep")
        if isinstance(__obj, LoopContext) and args:  # loop(x) in a recursive loop: x is iterated too
            args = (__self.counted(args[0]), *args[1:])
        name = getattr(__obj, "__name__", "a call")
        _check_widths(__self, name, args, kwargs)
        # str.format comes wrapped by the sandbox (jinja's wrap_str_format): its string is the wrapped's
        owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
        if isinstance(owner, str) and name == "format":
            if _WIDE_FORMAT.search(owner):
                raise _refuse(__self, "a format with a width of millions of characters")
            __self.make(len(owner) + _text_size(__self, args, kwargs), "format")
        if isinstance(owner, str) and name == "replace":
            _check_replace(__self, owner, *args[:2])
        if isinstance(owner, str) and name == "join" and args:
            _check_join(__self, owner, args[0])
        if isinstance(owner, str) and name == "expandtabs":  # each tab becomes up to tabsize spaces
            tabsize = args[0] if args else kwargs.get("tabsize", 8)
            if isinstance(tabsize, int):
                __self.make(len(owner) + max(tabsize, 0) * owner.count("\t"), "expandtabs")
        if isinstance(owner, str) and name in ("split", "rsplit"):  # a list: ITEM_CHARS an item
            sep = args[0] if args else kwargs.get("sep")
            items = owner.count(sep) + 1 if isinstance(sep, str) and sep else len(owner) // 2 + 1
            __self.make(items * ITEM_CHARS, name)
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
    """The separators (``range(100000)|join('x' * 1000)`` made 100 million characters) and the items'
    text (``[a] * 100`` of a 30-million-character ``a``)."""
    if isinstance(separator, str) and hasattr(items, "__len__"):
        text = _text_size(env, items) if isinstance(items, list | tuple | dict) else 0
        env.make(len(separator) * max(len(items) - 1, 0) + text, "join")


def _bounded_items(env: BoundedSandbox, items, what: str):
    for count, item in enumerate(items, 1):
        if count % 4096 == 0:  # the list so far bounded, the last 4,096 items paid for in steps
            env.check_chars(count * ITEM_CHARS, what)
            env.step(4096 * ITEM_CHARS // CHARS_PER_STEP)
        yield item


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
            if name == "join":  # the separator defaults to ""
                _check_join(env, args[first] if len(args) > first else kwargs.get("d", ""), args[first - 1])
            if name == "indent" and isinstance(args[first - 1], str):  # the width again on every line
                width = args[first] if len(args) > first else kwargs.get("width", 4)
                width = len(width) if isinstance(width, str) else width
                if isinstance(width, int):
                    text = args[first - 1]
                    env.make(len(text) + max(width, 0) * (text.count("\n") + 1), "|indent")
            value = args[first - 1]
            if name in _LIST_FILTERS and not (name == "reverse" and isinstance(value, str)):
                if hasattr(value, "__len__"):
                    env.make(len(value) * ITEM_CHARS, f"|{name}")
                elif hasattr(value, "__iter__"):  # a generator (|map, |select): bounded as it is read
                    args = (*args[: first - 1], _bounded_items(env, value, f"|{name}"), *args[first:])
            if name == "format" and isinstance(args[first - 1], str) and _WIDE_FORMAT.search(args[first - 1]):
                raise _refuse(env, "|format with a width of millions of characters")
            if name in _TEXT_FILTERS and not isinstance(value, str):  # str() of the value, or its JSON
                env.make(_text_size(env, value), f"|{name}")
            elif name == "format":
                env.make(_text_size(env, args[first - 1 :], kwargs), "|format")
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
