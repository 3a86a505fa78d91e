"""k3snet._regex.lazy_pattern: a pattern compiled on first use answers as ``re.compile``'s."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from k3snet._regex import lazy_pattern

PATTERNS = [r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", r"(0|[1-9][0-9]*)(?:-(0|[1-9][0-9]*))?",
            r"[,-]", r"\\(?:\\|[ntr]|x[0-9a-f]{2})", r"line \d+,? column \d+"]
TEXT = st.text(alphabet="az09-,\\ntrxline column", max_size=30)


@given(st.sampled_from(PATTERNS), TEXT, st.booleans())
def test_every_method_of_a_lazy_pattern_answers_as_the_compiled_patterns(
        pattern: str, text: str, first_use_is_sub: bool) -> None:
    lazy, compiled = lazy_pattern(pattern, re.IGNORECASE), re.compile(pattern, re.IGNORECASE)
    if first_use_is_sub:  # the first call compiles: any method may be it
        assert lazy.sub("<\\g<0>>", text) == compiled.sub("<\\g<0>>", text)

    def spans(matches: list[re.Match[str] | None]) -> list[tuple[int, int] | None]:
        return [m.span() if m else None for m in matches]

    for _ in range(2):  # before and after the compiled methods replace the lazy ones
        assert spans([lazy.fullmatch(text), lazy.match(text), lazy.search(text),
                      lazy.search(text, 1, 5)]) == \
            spans([compiled.fullmatch(text), compiled.match(text), compiled.search(text),
                   compiled.search(text, 1, 5)])
        assert lazy.sub(lambda m: m.group().upper(), text, 1) == \
            compiled.sub(lambda m: m.group().upper(), text, 1)
        assert lazy.subn("", text) == compiled.subn("", text)
        assert lazy.split(text) == compiled.split(text)
        assert lazy.findall(text) == compiled.findall(text)
        assert [m.span() for m in lazy.finditer(text)] == \
            [m.span() for m in compiled.finditer(text)]
    assert lazy.pattern == pattern
    assert lazy.compiled() is lazy.compiled()
