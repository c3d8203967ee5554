"""``gradlab probe``: per-layer gradient norms at initialisation, from one batch, in seconds."""

from __future__ import annotations

import click

from gradlab.cli._common import user_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("models", nargs=-1, required=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--data", default="synthetic", show_default=True, help="Where the batch comes from.")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False))
@click.option("--html", default=None, type=click.Path(dir_okay=False), help="Also write an HTML report here.")
@click.option("--max-rows", type=int, default=200, show_default=True, help="Layers printed per model.")
@user_errors
def probe(models: tuple[str, ...], batch_size: int, seed: int, device: str, data: str,
          data_dir: str | None, html: str | None, max_rows: int) -> None:
    """One forward/backward of MODELS at initialisation: no training.

    Prints each layer's weight-gradient and activation-gradient norm, the first-to-last ratio
    and a diagnosis: the quickest way to see vanishing or exploding gradients.

    \b
    Examples:
      gradlab probe plain56:norm=none resnet56
      gradlab probe mlp30:act=sigmoid,norm=none mlp30:norm=none --html probe.html
      gradlab probe tv:resnet50
      gradlab probe mypkg.models:make_net    (your own factory; see gradlab.models.factory)
    """
    from gradlab.training.probe import format_probe, write_probe_report
    from gradlab.training.probe import probe as run_probe

    results = run_probe(list(models), batch_size=batch_size, seed=seed, device=device, data=data,
                        data_dir=data_dir)
    click.echo(format_probe(results, max_rows=max_rows))
    if html:
        click.echo(f"report: {write_probe_report(results, html)}")
