"""MkDocs hooks for the edgeport site (``hooks:`` in mkdocs.yml).

- ``<!-- edgeport-help [COMMAND [SUBCOMMAND]] -->`` in a page becomes the output of
  ``edgeport COMMAND --help``, taken from the installed command when the site is built, so a
  command page cannot fall behind its flags. An unknown command fails the build.
- ``<!-- edgeport-example NAME.py -->`` becomes the source of ``examples/NAME.py``, the script
  the test suite runs.
- ``<!-- edgeport-tolerances -->`` becomes the table of ``edgeport.runtime.compare.TOLERANCES``,
  the one table export's gate and ``edgeport check`` judge by.
- The repository's benchmark notes and results (``benchmarks/README.md``,
  ``benchmarks/gpu/README.md``, ``benchmarks/results/``) are added to the site under the same
  paths, so pages link to them and ``mkdocs build --strict`` checks those links.
  A page writes such a link as the repository sees it (``../benchmarks/results/...`` from
  ``docs/benchmarking.md``), which also works when the Markdown is read on its own; the hook
  drops the one ``../`` that leaves ``docs/``, and from a carried file's links into ``docs/``
  the ``docs/``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files, InclusionLevel

REPO = Path(__file__).resolve().parents[1]
# Files of the repository outside docs/ that the site carries.
EXTRA_FILES = (
    "benchmarks/README.md",
    "benchmarks/gpu/README.md",
    "benchmarks/results/**/*.md",
    "benchmarks/results/**/*.png",
    "benchmarks/results/**/*.csv",
    "benchmarks/results/**/*.json",
)
NOT_IN_NAV = InclusionLevel.NOT_IN_NAV  # reached through links, not the navigation
HELP_MARK = re.compile(r"<!-- edgeport-help((?: [a-z0-9-]+)*) -->")
HELP_COLUMNS = "100"
TOLERANCES_MARK = "<!-- edgeport-tolerances -->"
EXAMPLE_MARK = re.compile(r"<!-- edgeport-example ([a-z0-9_]+\.py) -->")


def on_files(files: Files, config: Any) -> Files:
    """Add the repository's benchmark notes and results to the site."""
    for path in sorted({p for pattern in EXTRA_FILES for p in REPO.glob(pattern)}):
        rel = path.relative_to(REPO).as_posix()
        url = config["use_directory_urls"]
        files.append(File(rel, str(REPO), config["site_dir"], url, inclusion=NOT_IN_NAV))
    return files


def _command_help(words: list[str]) -> str:
    from edgeport.runtime.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([*words, "--help"])
            except SystemExit as exc:
                if exc.code not in (0, None):
                    raise PluginError(
                        f"edgeport {' '.join(words)} --help failed: {err.getvalue().strip()}"
                    ) from None
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return out.getvalue().rstrip()


def _tolerance_table() -> str:
    from edgeport.runtime.compare import TOLERANCES

    lines = ["| precision | output kind | passes when | atol | rtol |", "|---|---|---|---|---|"]
    for (precision, kind), tol in TOLERANCES.items():
        lines.append(f"| {precision} | {kind} | {tol.description} | {tol.atol:g} | {tol.rtol:g} |")
    return "\n".join(lines)


def _up_link_fix(markdown: str, depth: int) -> str:
    """``../`` * (depth + 1) + ``benchmarks/`` -> ``../`` * depth + ``benchmarks/``."""
    outside = "../" * (depth + 1)
    inside = "../" * depth
    return markdown.replace(f"]({outside}benchmarks/", f"]({inside}benchmarks/")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    depth = page.file.src_uri.count("/")
    if Path(page.file.abs_src_path or "").is_relative_to(config["docs_dir"]):
        markdown = _up_link_fix(markdown, depth)
    else:  # a carried file: its links into docs/ lose the "docs/"
        markdown = markdown.replace(f"]({'../' * depth}docs/", f"]({'../' * depth}")

    def render(match: re.Match[str]) -> str:
        words = match.group(1).split()
        command = " ".join(["edgeport", *words, "--help"])
        return f"```text\n$ {command}\n{_command_help(words)}\n```"

    def example(match: re.Match[str]) -> str:
        path = REPO / "examples" / match.group(1)
        if not path.is_file():
            raise PluginError(f"{page.file.src_uri} shows examples/{match.group(1)}: no such file")
        source = path.read_text(encoding="utf-8").rstrip()
        return f'```python title="examples/{match.group(1)}"\n{source}\n```'

    markdown = markdown.replace(TOLERANCES_MARK, _tolerance_table())
    markdown = EXAMPLE_MARK.sub(example, markdown)
    return HELP_MARK.sub(render, markdown)
