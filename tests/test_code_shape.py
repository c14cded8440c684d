"""No function in src/maxwell runs over 60 lines unless a comment beside it says why (issue 9).

A function's length is its `def` through its last line (decorators not counted), nested functions
and methods included. The exception is a comment on the line directly above the `def`, or above its
first decorator, of the form `# long: <a reason of at least three words>`.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

MAX_FUNCTION_LINES = 60
SOURCE_ROOT = Path(__file__).resolve().parent.parent / "src" / "maxwell"

_JUSTIFICATION = re.compile(r"^\s*#\s*long:\s*(?P<reason>.*?)\s*$")
_MIN_REASON_WORDS = 3


@dataclass(frozen=True)
class LongFunction:
    path: str
    line: int
    name: str
    length: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line} {self.name} ({self.length} lines)"


def _is_justified(lines: list[str], first_line: int) -> bool:
    """Whether the line above `first_line` (1-based) is a `# long:` comment with a real reason."""
    if first_line < 2:
        return False
    match = _JUSTIFICATION.match(lines[first_line - 2])
    return match is not None and len(match.group("reason").split()) >= _MIN_REASON_WORDS


def unjustified_long_functions(source: str, path: str) -> list[LongFunction]:
    """Every function in `source` over the limit with no `# long:` reason, in line order."""
    lines = source.splitlines()
    offenders = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        assert node.end_lineno is not None
        length = node.end_lineno - node.lineno + 1
        first_line = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        if length > MAX_FUNCTION_LINES and not _is_justified(lines, first_line):
            offenders.append(LongFunction(path, node.lineno, node.name, length))
    return sorted(offenders, key=lambda f: f.line)


def test_no_unjustified_long_functions() -> None:
    offenders = []
    for source_path in sorted(SOURCE_ROOT.rglob("*.py")):
        shown = source_path.relative_to(SOURCE_ROOT.parent.parent).as_posix()
        offenders += unjustified_long_functions(source_path.read_text(encoding="utf-8"), shown)
    if offenders:
        pytest.fail(
            f"functions over {MAX_FUNCTION_LINES} lines; split them, or justify one with a"
            " `# long: <reason>` comment directly above its def:\n"
            + "\n".join(f"  {offender}" for offender in offenders),
            pytrace=False,
        )


def _function(name: str, length: int, indent: str = "", keyword: str = "def") -> list[str]:
    body = [f"{indent}    step_{i} = {i}" for i in range(length - 2)]
    return [f"{indent}{keyword} {name}() -> int:", *body, f"{indent}    return 0"]


def test_checker_reports_exactly_the_unjustified_function() -> None:
    source = "\n".join(
        [
            "import functools",
            "",
            *_function("long_and_silent", MAX_FUNCTION_LINES + 1),
            "",
            "# long: a flat table of flags reads best in one place",
            "@functools.cache",
            *_function("long_but_justified", MAX_FUNCTION_LINES + 1),
            "",
            "# long: too short",
            *_function("reason_too_thin", MAX_FUNCTION_LINES + 5),
            "",
            *_function("exactly_at_the_limit", MAX_FUNCTION_LINES),
            "",
            "class Holder:",
            *_function("long_method", MAX_FUNCTION_LINES + 2, indent="    "),
            "",
            "# long: the outer reason does not cover what it nests",
            "async def justified_outer() -> None:",
            *_function("nested_async", MAX_FUNCTION_LINES + 1, "    ", keyword="async def"),
            "",
        ]
    )
    found = unjustified_long_functions(source, "synthetic.py")
    assert [(f.name, f.length) for f in found] == [
        ("long_and_silent", MAX_FUNCTION_LINES + 1),
        ("reason_too_thin", MAX_FUNCTION_LINES + 5),
        ("long_method", MAX_FUNCTION_LINES + 2),
        ("nested_async", MAX_FUNCTION_LINES + 1),
    ]
    assert str(found[0]) == f"synthetic.py:3 long_and_silent ({MAX_FUNCTION_LINES + 1} lines)"
