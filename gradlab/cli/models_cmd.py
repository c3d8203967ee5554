"""``gradlab models``: the model zoo with parameter counts and multiply-adds, or one spec in detail."""

from __future__ import annotations

import click

from gradlab.cli._common import user_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--spec", "spec", default=None, metavar="SPEC",
              help="Show one model spec in detail: options, depth, parameters and every layer.")
@click.option("--classes", type=click.IntRange(min=1), default=None, metavar="N",
              help="Classifier outputs. Default: 1000 for ImageNet-style nets (resnet18..152, plain18..152), "
                   "10 for CIFAR-style nets (resnet20..110, plain20..110) and MLPs.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True,
              help="Output format; json and csv are for scripts (raw integers).")
@user_errors
def models(spec: str | None, classes: int | None, fmt: str) -> None:
    """List every model name with its parameters and multiply-adds at its native input size
    (224x224 for ImageNet-style nets, 32x32 for CIFAR-style nets and MLPs), beside the ResNet
    paper's figure; or describe one SPEC.

    \b
    Examples:
      gradlab models
      gradlab models --format json
      gradlab models --spec plain34:act=sigmoid,norm=none --classes 10
      gradlab models --spec tv:resnet50
    """
    from gradlab.models.listing import models_text

    click.echo(models_text(spec, classes, fmt))
