"""mkdocs hook: fills the configuration page's key table and the CLI page's `--help` texts from the code, so the
docs cannot drift from the schema."""

from __future__ import annotations

from typing import Any


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if "<!-- config-keys -->" in markdown:
        from djepa.schema import markdown_table

        markdown = markdown.replace("<!-- config-keys -->", markdown_table())
    if "<!-- cli-help -->" in markdown:
        from djepa.cli.scripts import COMMANDS, usage

        sections = [f"## `{name}`\n\n```text\n{usage(name)}\n```\n" for name in COMMANDS]
        markdown = markdown.replace("<!-- cli-help -->", "\n".join(sections))
    return markdown
