"""The ``gradlab`` command line.

Each command lives in its own module under ``gradlab.cli`` and is imported only when it runs,
so ``gradlab --help`` answers without importing torch. Commands parse their arguments and
call one library function; they hold no logic of their own.
"""

from __future__ import annotations

import importlib

import click

from gradlab._version import __version__

# command name -> (module under gradlab.cli, click command object name, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "compare": ("compare_cmd", "compare", "Train several networks and write a comparison report."),
    "probe": ("probe_cmd", "probe", "One forward/backward at init: per-layer gradient norms, no training."),
    "run": ("run_cmd", "run", "Run an experiment file (TOML) and write its report."),
    "report": ("report_cmd", "report", "Write an HTML report from stored run directories."),
    "gallery": ("gallery_cmd", "gallery", "Pictures of the experiment reports and the gallery index."),
    "runs": ("runs_cmd", "runs", "List stored runs with their status and key figures."),
    "models": ("models_cmd", "models", "List the model zoo with parameter counts and multiply-adds."),
    "bench": ("bench_cmd", "bench", "Measure the recorder's cost against the bare training step."),
}


class _LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._available(name)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        try:
            mod = importlib.import_module(f"gradlab.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"gradlab.cli.{module}":
                return None  # command not built yet
            raise
        return getattr(mod, attr)

    @staticmethod
    def _available(name: str) -> bool:
        module = COMMANDS[name][0]
        return importlib.util.find_spec(f"gradlab.cli.{module}") is not None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table above, so listing commands imports nothing heavy.
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="gradlab")
def main() -> None:
    """gradlab: see whether the gradient reaches every layer of a PyTorch network.

    \b
    Examples:
      gradlab compare plain34 resnet34      train both, write a comparison report
      gradlab probe plain56:norm=none resnet56
      gradlab models
    """
