"""Build-time hooks of the documentation site (named in mkdocs.yml).

Two facts have one source each and are copied into the site only when it is built:

- the pictures under the repository's ``reports/screenshots/`` (the README shows them too), served
  at ``screenshots/NAME.png``;
- the ``--help`` text of every ``gradlab`` command, rendered by click into ``cli.md`` where the
  marker ``<!-- gradlab-cli-help -->`` stands, so the reference cannot drift from the options.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "reports" / "screenshots"
CLI_MARKER = "<!-- gradlab-cli-help -->"
HELP_WIDTH = 100  # columns of the rendered help; wide enough that option rows rarely wrap


def on_files(files, config):
    for picture in sorted(SCREENSHOTS.glob("*.png")):
        files.append(File.generated(config, f"screenshots/{picture.name}", abs_src_path=str(picture)))
    return files


def on_page_markdown(markdown, page, config, files):
    if CLI_MARKER not in markdown:
        return markdown
    return markdown.replace(CLI_MARKER, cli_help_markdown())


def cli_help_markdown() -> str:
    """Every command's ``--help``, as one section per command, in the order ``gradlab --help`` lists them."""
    from click.testing import CliRunner

    from gradlab.cli import COMMANDS, main

    runner = CliRunner()
    parts = [_help_section("gradlab", runner, main, [])]
    for name in COMMANDS:
        parts.append(_help_section(f"gradlab {name}", runner, main, [name]))
    return "\n".join(parts)


def _help_section(title: str, runner, main, args: list[str]) -> str:
    result = runner.invoke(main, [*args, "--help"], terminal_width=HELP_WIDTH, prog_name="gradlab")
    if result.exit_code != 0:
        raise RuntimeError(f"`{title} --help` failed with exit status {result.exit_code}: {result.output}")
    return f"## `{title}`\n\n```text\n{result.output.rstrip()}\n```\n"
