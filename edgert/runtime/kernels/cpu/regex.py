"""The pattern of ``RegexFullMatch``: RE2 when installed, else Python's ``re`` behind a guard.

ONNX specifies RE2 syntax for ``RegexFullMatch``. RE2 matches in time linear in the input
whatever the pattern; Python's backtracking ``re`` does not: ``(a+)+$`` against 41 characters
ran for minutes, so a model file could hang the process that runs it. So:

* with ``google-re2`` installed (``pip install 'edgert[re2]'``) the pattern runs on RE2, as the
  spec says (and as onnxruntime does): RE2's syntax and classes (``\\w`` is ASCII there);
* without it, Python's ``re`` runs the pattern (as the ONNX reference implementation does) only
  after :func:`backtracking_risk` found no construct that can make it backtrack
  catastrophically; a pattern it refuses raises :class:`~edgert.errors.KernelError` saying to
  install the re2 extra. Constructs that are not RE2 syntax (backreferences, look-around,
  conditionals, atomic groups, possessive quantifiers) are refused too.

The guard is conservative: it may refuse a pattern that is in fact harmless, never the reverse
for the constructs it knows. It works on the parsed pattern (``re._parser``) and asks, at each
place where the matcher must choose (a quantifier going on or stopping, an alternation picking a
branch), whether the next input character always decides the choice: the characters that can
start one option and those that can start the other (what follows, for "stop") must be
disjoint. A choice that the next character does not decide is *ambiguous*, and the matcher may
try both. Refused:

* an ambiguous choice inside a quantifier that repeats (``max > 1``): ``(a+)+``, ``(a*)*``,
  ``(a|a)*``, ``(\\w|\\d)+``, ``(\\w+\\s?)*``: exponential;
* more than :data:`MAX_AMBIGUOUS` ambiguous choices in the whole pattern
  (``a?a?a?a?aaaa``, ``.*a.*b.*c.*``): polynomial of that degree.

Accepted, for example: ``www\\.[\\w.-]+\\.com``, ``(\\d+\\.){3}\\d+``, ``(foo|bar)+``,
``(\\w+\\s)+``, ``.*@gmail\\.com``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

try:  # Python 3.11+
    from re import _constants as _c
    from re import _parser as _p
except ImportError:  # pragma: no cover - older Pythons
    import sre_constants as _c  # type: ignore[no-redef]
    import sre_parse as _p  # type: ignore[no-redef]

from edgert.errors import KernelError

# Ambiguous choices allowed outside repeated groups: backtracking then costs at most about
# n**MAX_AMBIGUOUS steps on an n-character string (``.*@.*`` has one, ``.*a.*b.*`` two).
MAX_AMBIGUOUS = 2

INSTALL_HINT = ("install edgert's re2 extra (pip install 'edgert[re2]', google-re2) to run any "
                "RE2 pattern in linear time")

_SMALL_RANGE = 4096  # ranges up to this many code points are enumerated when compared


# ----- character sets -----------------------------------------------------------------------------
_CAT_RE = {
    _c.CATEGORY_DIGIT: re.compile(r"\d"),
    _c.CATEGORY_NOT_DIGIT: re.compile(r"\D"),
    _c.CATEGORY_SPACE: re.compile(r"\s"),
    _c.CATEGORY_NOT_SPACE: re.compile(r"\S"),
    _c.CATEGORY_WORD: re.compile(r"\w"),
    _c.CATEGORY_NOT_WORD: re.compile(r"\W"),
}
_DISJOINT_CATS = {frozenset(p) for p in (
    (_c.CATEGORY_DIGIT, _c.CATEGORY_NOT_DIGIT),
    (_c.CATEGORY_SPACE, _c.CATEGORY_NOT_SPACE),
    (_c.CATEGORY_WORD, _c.CATEGORY_NOT_WORD),
    (_c.CATEGORY_DIGIT, _c.CATEGORY_SPACE),
    (_c.CATEGORY_WORD, _c.CATEGORY_SPACE),
    (_c.CATEGORY_DIGIT, _c.CATEGORY_NOT_WORD),
)}


class _Chars:
    """A set of characters: explicit ``chars``, code-point ``ranges`` and ``\\d\\w\\s``-style
    ``cats`` (their union), or an ``opaque`` membership test (negated sets, ``.``)."""

    __slots__ = ("chars", "ranges", "cats", "opaque")

    def __init__(self, chars=frozenset(), ranges=(), cats=frozenset(),
                 opaque: Callable[[str], bool] | None = None):
        self.chars = frozenset(chars)
        self.ranges = tuple(ranges)
        self.cats = frozenset(cats)
        self.opaque = opaque

    def __contains__(self, ch: str) -> bool:
        if ch in self.chars:
            return True
        o = ord(ch)
        if any(lo <= o <= hi for lo, hi in self.ranges):
            return True
        if any(_CAT_RE[c].fullmatch(ch) for c in self.cats):
            return True
        return self.opaque is not None and self.opaque(ch)

    def empty(self) -> bool:
        return not self.chars and not self.ranges and not self.cats and self.opaque is None

    def union(self, other: _Chars) -> _Chars:
        if other.empty():
            return self
        if self.empty():
            return other
        a, b = self.opaque, other.opaque
        opaque = a if b is None else b if a is None else (lambda ch: a(ch) or b(ch))
        return _Chars(self.chars | other.chars, self.ranges + other.ranges,
                      self.cats | other.cats, opaque)

    def _enumerable(self) -> list[str] | None:
        """Every member, when there are few and the set is explicit."""
        if self.opaque is not None or self.cats:
            return None
        if sum(hi - lo + 1 for lo, hi in self.ranges) > _SMALL_RANGE:
            return None
        out = list(self.chars)
        for lo, hi in self.ranges:
            out.extend(chr(o) for o in range(lo, hi + 1))
        return out

    def disjoint(self, other: _Chars) -> bool:
        """True only when no character is in both (False when it cannot tell)."""
        if self.empty() or other.empty():
            return True
        for a, b in ((self, other), (other, self)):
            members = a._enumerable()
            if members is not None:
                return not any(ch in b for ch in members)
        if self.opaque is not None or other.opaque is not None:
            return False
        # both are unions of chars, large ranges and categories: compare part by part
        if any(ch in other for ch in self.chars) or any(ch in self for ch in other.chars):
            return False
        for lo, hi in self.ranges:
            for lo2, hi2 in other.ranges:
                if lo <= hi2 and lo2 <= hi:
                    return False
        for c1 in self.cats:
            for c2 in other.cats:
                if frozenset((c1, c2)) not in _DISJOINT_CATS:
                    return False
        for ranges, cats in ((self.ranges, other.cats), (other.ranges, self.cats)):
            for lo, hi in ranges:
                if cats and hi - lo + 1 > _SMALL_RANGE:
                    return False
                if any(_CAT_RE[c].fullmatch(chr(o)) for o in range(lo, hi + 1) for c in cats):
                    return False
        return True


_EMPTY = _Chars()


def _any_char(ch: str) -> bool:
    return True


class _Refused(Exception):
    pass


class _Guard:
    """One pass over a parsed pattern (see the module docstring)."""

    def __init__(self, ignorecase: bool):
        self.ignorecase = ignorecase
        self.ambiguous: list[str] = []

    # ----- what an item can start with ------------------------------------------------------------
    def literal(self, code: int) -> _Chars:
        ch = chr(code)
        if self.ignorecase:
            return _Chars({ch, ch.lower(), ch.upper(), ch.casefold(), ch.swapcase()})
        return _Chars({ch})

    def charset(self, items) -> _Chars:
        negate = False
        parts = _EMPTY
        for op, av in items:
            if op is _c.NEGATE:
                negate = True
            elif op is _c.LITERAL:
                parts = parts.union(self.literal(av))
            elif op is _c.RANGE:
                parts = parts.union(_Chars(ranges=[av]))
            elif op is _c.CATEGORY and av in _CAT_RE:
                parts = parts.union(_Chars(cats={av}))
            else:  # anything else: a set that may hold any character
                parts = parts.union(_Chars(opaque=_any_char))
        if self.ignorecase and (parts.ranges or parts.cats):
            parts = _Chars(opaque=lambda ch, s=parts: any(v in s for v in (ch, ch.lower(),
                                                                          ch.upper())))
        if negate:
            return _Chars(opaque=lambda ch, s=parts: ch not in s)
        return parts

    def info(self, seq) -> tuple[bool, _Chars]:
        """(can match the empty string, the characters a match can start with)."""
        first = _EMPTY
        for op, av in seq:
            nullable, f = self.item_info(op, av)
            first = first.union(f)
            if not nullable:
                return False, first
        return True, first

    def item_info(self, op, av) -> tuple[bool, _Chars]:
        if op is _c.LITERAL:
            return False, self.literal(av)
        if op is _c.NOT_LITERAL:
            return False, _Chars(opaque=lambda ch, c=chr(av): ch != c)
        if op is _c.ANY:
            return False, _Chars(opaque=_any_char)
        if op is _c.IN:
            return False, self.charset(av)
        if op is _c.AT:
            return True, _EMPTY
        if op is _c.SUBPATTERN:
            return self.info(av[3])
        if op is _c.BRANCH:
            nullable, first = False, _EMPTY
            for alt in av[1]:
                n, f = self.info(alt)
                nullable, first = nullable or n, first.union(f)
            return nullable, first
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
            lo, _, body = av
            n, f = self.info(body)
            return n or lo == 0, f
        raise _Refused(f"{op} is not RE2 syntax")

    # ----- the check ------------------------------------------------------------------------------
    def check(self, seq, follow: _Chars, repeated: bool) -> None:
        """Check ``seq`` given the characters that can come right after it (``follow``);
        ``repeated``: inside a quantifier that can repeat."""
        items = list(seq)
        after = follow
        for op, av in reversed(items):
            self.check_item(op, av, after, repeated)
            nullable, first = self.item_info(op, av)
            after = first.union(after) if nullable else first

    def choice(self, what: str, repeated: bool) -> None:
        if repeated:
            raise _Refused(f"{what} inside a repeated group (can backtrack exponentially)")
        self.ambiguous.append(what)

    def check_item(self, op, av, follow: _Chars, repeated: bool) -> None:
        if op in (_c.GROUPREF, _c.GROUPREF_EXISTS):
            raise _Refused("backreferences are not RE2 syntax")
        if op in (_c.ASSERT, _c.ASSERT_NOT):
            raise _Refused("look-around assertions are not RE2 syntax")
        if op is getattr(_c, "ATOMIC_GROUP", None) or op is getattr(_c, "POSSESSIVE_REPEAT", None):
            raise _Refused("atomic groups and possessive quantifiers are not RE2 syntax")
        if op is _c.SUBPATTERN:
            self.check(av[3], follow, repeated)
        elif op is _c.BRANCH:
            # what each branch can start with (a branch that can match nothing: what follows)
            starts = [f.union(follow) if n else f for n, f in map(self.info, av[1])]
            if any(not starts[i].disjoint(starts[j])
                   for i in range(len(starts)) for j in range(i + 1, len(starts))):
                self.choice("an alternation whose branches can match the same text", repeated)
            for alt in av[1]:
                self.check(alt, follow, repeated)
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
            lo, hi, body = av
            nullable, first = self.info(body)
            again = hi > 1
            if hi > lo and (nullable or not first.disjoint(follow)):
                self.choice("a quantifier whose repetitions can match the same text "
                            "(nested or adjacent quantifiers)", repeated)
            self.check(body, first.union(follow) if again else follow, repeated or again)


def _local_ignorecase(seq) -> bool:
    """Whether a ``(?i:...)`` group turns case-insensitive matching on anywhere."""
    for op, av in seq:
        if op is _c.SUBPATTERN:
            if av[1] & re.IGNORECASE or _local_ignorecase(av[3]):
                return True
        elif op is _c.BRANCH:
            if any(_local_ignorecase(alt) for alt in av[1]):
                return True
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT) and _local_ignorecase(av[2]):
            return True
    return False


def backtracking_risk(pattern: str) -> str | None:
    """Why Python's ``re`` could backtrack catastrophically on ``pattern`` (or run it outside
    RE2's syntax), or None when the guard accepts it. Raises ``re.error`` for a pattern
    Python cannot parse."""
    parsed = _p.parse(pattern)
    guard = _Guard(bool(parsed.state.flags & re.IGNORECASE) or _local_ignorecase(parsed))
    try:
        guard.check(parsed, _EMPTY, False)
    except _Refused as why:
        return str(why)
    if len(guard.ambiguous) > MAX_AMBIGUOUS:
        return (f"{len(guard.ambiguous)} places where the matcher must guess (more than "
                f"{MAX_AMBIGUOUS}: the work grows as a power of the input length)")
    return None


_re2 = None


def _load_re2():
    """The ``re2`` module (google-re2) or False."""
    global _re2
    if _re2 is None:
        try:
            import re2
        except ImportError:
            _re2 = False
        else:
            _re2 = re2
    return _re2


def compile_full_match(pattern: str, where: str) -> Callable[[str], bool]:
    """``fullmatch(text) -> bool`` for ``pattern``, on RE2 when it is installed; else on
    Python's ``re`` after :func:`backtracking_risk`. Raises KernelError naming ``where``."""
    re2 = _load_re2()
    if re2:
        options = re2.Options()
        options.log_errors = False  # RE2 logs a bad pattern to stderr; the error says it
        try:
            rx = re2.compile(pattern, options)
        except re2.error as exc:
            msg = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
            raise KernelError(f"{where}: invalid RE2 pattern {pattern!r}: {msg}") from None
        return lambda s: rx.fullmatch(s) is not None
    try:
        risk = backtracking_risk(pattern)
        rx = re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise KernelError(f"{where}: invalid pattern {pattern!r}: {exc} (without google-re2 "
                          f"patterns run on Python's re; {INSTALL_HINT})") from None
    if risk is not None:
        raise KernelError(f"{where}: pattern {pattern!r} refused: {risk}; Python's re, used "
                          f"because google-re2 is not installed, could run for hours on it. "
                          f"{INSTALL_HINT[0].upper()}{INSTALL_HINT[1:]}.")
    return lambda s: rx.fullmatch(s) is not None
