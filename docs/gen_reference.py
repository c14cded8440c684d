"""Write the reference pages that come from the code itself, so that they never drift from it.

- `docs/reference/cli.md`: every `maxwell` command and benchmark, from the real argparse parsers
  (`maxwell.cli.main.COMMANDS` and `BENCHES`, each module's `add_arguments`): its one-line
  summary and its whole `--help` (description, flags, exit statuses, JSON fields where the
  command's help gives them), subcommands included.
- `docs/reference/api.md`: every route of the node's HTTP API and every JSON body, from the
  OpenAPI document the API itself serves (`maxwell.node.api.create_app`).

    .venv/bin/python docs/gen_reference.py          # rewrite both pages
    .venv/bin/python docs/gen_reference.py --check  # exit 1 naming a page that is not current

`tests/test_docs_site.py` runs `--check`, so a changed flag or route without a regenerated page
fails the suite. Help is laid out at a fixed width (`COLUMNS`) and the `MAXWELL_*` variables of
the caller's environment are ignored, so the pages do not depend on who generated them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

WIDTH = "100"
HERE = Path(__file__).resolve().parent
PAGES = {"cli": HERE / "reference" / "cli.md", "api": HERE / "reference" / "api.md"}

CLI_HEAD = """\
# Command reference

Every `maxwell` command, with its whole `--help` as the installed command prints it: what it
does, its flags, and where it has them its exit statuses and JSON fields. Generated from the
parsers themselves by `docs/gen_reference.py`; do not edit by hand (a test checks the page is
current). `maxwell COMMAND --help` says the same on the command line.

Most client commands also share three flags to find the daemon (`--socket`, `--state`,
`--token`) and `--json` for scripts. Exit statuses common to the client commands are in their
help below; `maxwell run`'s follow `timeout(1)`'s.
"""

API_HEAD = """\
# HTTP API reference

The node's API as it serves it: HTTP + JSON on the Unix socket (`<state>/maxwell.sock`), and on
loopback TCP with `maxwell daemon --listen`. Generated from the OpenAPI document the daemon
serves at `/openapi.json` by `docs/gen_reference.py`; do not edit by hand (a test checks the page
is current). Who may call what, and how a caller is known, is on [the API page](../api.md).

Money on the wire is a float of $J (the ledger keeps integer µ$J); energy in J. Every refusal is
a 4xx with the body `{"error": "<one line>"}`:

"""


def _clean_environment() -> None:
    os.environ["COLUMNS"] = WIDTH
    for name in list(os.environ):
        if name.startswith("MAXWELL_"):
            del os.environ[name]


def _subcommands(parser: argparse.ArgumentParser) -> Mapping[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps subcommands in a private action type
        if isinstance(action, argparse._SubParsersAction):
            choices: Mapping[str, argparse.ArgumentParser] = action.choices
            return choices
    return {}


def _parser_for(path: list[str]) -> argparse.ArgumentParser:
    """The parser `maxwell PATH...` uses, as `maxwell.cli.main` builds it for that command."""
    from maxwell.cli import main

    parser, _handler = main._build_parser(path)
    for name in path:
        parser = _subcommands(parser)[name]
    return parser


def _help_section(level: int, path: list[str], summary: str) -> Iterator[str]:
    parser = _parser_for(path)
    yield f"{'#' * level} `maxwell {' '.join(path)}`"
    yield ""
    if summary:
        yield summary[0].upper() + summary[1:] + "."
        yield ""
    yield "```text"
    yield parser.format_help().rstrip()
    yield "```"
    yield ""
    for name in _subcommands(parser):
        yield from _help_section(level + 1, [*path, name], "")


def render_cli() -> str:
    from maxwell.cli import main

    lines = [CLI_HEAD, "## Commands", ""]
    lines += [
        f"- [`{name}`](#maxwell-{name}): {summary}" for name, (_m, summary) in main.COMMANDS.items()
    ]
    lines += ["- [`bench`](#maxwell-bench): benchmarks that print JSON", ""]
    for name, (_module, summary) in main.COMMANDS.items():
        lines += _help_section(2, [name], summary)
    lines += _help_section(2, ["bench"], "benchmarks that print JSON")
    return "\n".join(lines).rstrip() + "\n"


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _type(schema: Mapping[str, Any]) -> str:
    """A JSON schema in a few words: `AgentInfo`, `list of Event`, `integer or null`."""
    if "$ref" in schema:
        return f"[{_ref_name(schema['$ref'])}](#{_ref_name(schema['$ref']).lower()})"
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            return " or ".join(_type(option) for option in schema[combinator])
    if "enum" in schema:
        return "one of " + ", ".join(f"`{value}`" for value in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        return f"object of {_type(extra)}" if isinstance(extra, dict) else "object"
    return str(kind)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _body_schema(content: Mapping[str, Any] | None) -> str:
    if not content:
        return ""
    for media_type, body in content.items():
        schema = body.get("schema", {})
        if media_type == "application/json":
            return _type(schema) if schema else "JSON"
        return f"`{media_type}`"
    return ""


def _route_lines(doc: Mapping[str, Any]) -> Iterator[str]:
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            tags = ", ".join(operation.get("tags", []))
            yield f"### `{method.upper()} {path}`"
            yield ""
            yield f"*{tags}*. {operation.get('description', operation.get('summary', ''))}"
            yield ""
            parameters = operation.get("parameters", [])
            if parameters:
                yield "| parameter | in | type | default | meaning |"
                yield "| --- | --- | --- | --- | --- |"
                for parameter in parameters:
                    schema = parameter.get("schema", {})
                    default = schema.get("default", "")
                    yield (
                        f"| `{parameter['name']}` | {parameter['in']} | {_type(schema)} "
                        f"| {default} | {_cell(parameter.get('description', ''))} |"
                    )
                yield ""
            request = operation.get("requestBody", {}).get("content")
            if request:
                yield f"Request body: {_body_schema(request)}."
                yield ""
            for status, response in operation.get("responses", {}).items():
                if status.startswith(("2", "3")):
                    body = _body_schema(response.get("content"))
                    yield f"Answer {status}: {body or _cell(response.get('description', ''))}."
                    yield ""


def _schema_lines(doc: Mapping[str, Any]) -> Iterator[str]:
    for name, schema in doc["components"]["schemas"].items():
        yield f"### {name}"
        yield ""
        if schema.get("description"):
            yield _cell(schema["description"])
            yield ""
        properties = schema.get("properties")
        if not properties:
            yield f"{_type(schema)}."
            yield ""
            continue
        required = set(schema.get("required", []))
        yield "| field | type | required | meaning |"
        yield "| --- | --- | --- | --- |"
        for field, spec in properties.items():
            need = "yes" if field in required else f"no (default {spec.get('default')!r})"
            yield (
                f"| `{field}` | {_type(spec)} | {_cell(need)} "
                f"| {_cell(spec.get('description', ''))} |"
            )
        yield ""


def render_api() -> str:
    from maxwell.node.api import create_app
    from maxwell.node.peers import AdminPeers

    # The routes and bodies do not depend on the node; the app is only asked for its document.
    app = create_app(
        object(),  # type: ignore[arg-type]
        metrics=lambda: b"",
        admins=AdminPeers(uids=frozenset(), gids=frozenset()),
    )
    doc = app.openapi()
    errors: dict[str, str] = {}
    for operations in doc["paths"].values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if status.startswith("4"):
                    errors.setdefault(status, response.get("description", ""))
    lines = [API_HEAD.rstrip("\n"), ""]
    lines += ["| status | meaning |", "| --- | --- |"]
    lines += [f"| {status} | {_cell(errors[status])} |" for status in sorted(errors)]
    lines += ["", "## Routes", ""]
    lines += _route_lines(doc)
    lines += ["## Bodies", ""]
    lines += _schema_lines(doc)
    return "\n".join(lines).rstrip() + "\n"


def render() -> dict[str, str]:
    _clean_environment()
    return {"cli": render_cli(), "api": render_api()}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, text in render().items():
        page = PAGES[name]
        if check:
            if not page.exists() or page.read_text(encoding="utf-8") != text:
                stale.append(page)
        else:
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(text, encoding="utf-8")
    for page in stale:
        print(f"{page} is not current: run .venv/bin/python docs/gen_reference.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
