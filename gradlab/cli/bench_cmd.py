"""``gradlab bench``: what the recorder costs on your model, against the bare training step."""

from __future__ import annotations

import click

from gradlab.cli._common import user_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("spec")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--input-size", type=int, default=None, metavar="N",
              help="Side of the square input. Default: the model's own (32 for CIFAR nets, 224 for ImageNet nets).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--amp", type=click.Choice(["none", "bf16", "fp16"]), default="none", show_default=True,
              help="Autocast dtype; fp16 also uses a GradScaler.")
@click.option("--metrics", "metrics", type=click.Choice(["default", "all"]), multiple=True,
              help="Recorder metric set; repeat to time several (default: default).")
@click.option("--every", "every", type=int, multiple=True,
              help="Record every N-th step; repeat to time several (default: 1).")
@click.option("--repeats", type=int, default=20, show_default=True,
              help="Rounds; in each, every arm runs --steps-per-round timed steps in turn.")
@click.option("--steps-per-round", type=int, default=None,
              help="Timed steps per arm and round; a multiple of every --every (default: 10 or more).")
@click.option("--warmup", type=int, default=10, show_default=True, help="Untimed steps per arm first.")
@click.option("--compile", "compile_", is_flag=True, help="Train through torch.compile(model).")
@click.option("--alternatives/--no-alternatives", default=True, show_default=True,
              help="Also time a per-parameter .item() norm loop and a wandb-like 64-bin histogram.")
@click.option("--control/--no-control", default=True, show_default=True,
              help="Also time a second bare arm: its ratio shows the noise of this machine.")
@click.option("--num-classes", type=int, default=None, help="Classifier outputs (default: the model's).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-seconds", type=float, default=None,
              help="Stop after the round that passes this many seconds of timing (at least 2 rounds).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write every figure to this JSON file.")
@user_errors
def bench(spec: str, batch_size: int, input_size: int | None, device: str, amp: str,
          metrics: tuple[str, ...], every: tuple[int, ...], repeats: int, steps_per_round: int | None,
          warmup: int, compile_: bool, alternatives: bool, control: bool, num_classes: int | None,
          seed: int, max_seconds: float | None, json_path: str | None) -> None:
    """Time the bare training step of SPEC (forward, loss, backward, optimizer step) against the
    same step with the gradient recorder attached, and against the common alternatives.

    The arms take turns round by round in one process, after warm-up, with device
    synchronisation around each timed step. Printed: the median ratio of each arm to the bare
    step with its spread over rounds, and the recorder's device and host memory.

    \b
    Examples:
      gradlab bench resnet20 --device cpu --batch-size 64
      gradlab bench resnet34 --input-size 32 --batch-size 128 --amp bf16 \
          --metrics default --metrics all --every 1 --every 10
      gradlab bench tv:resnet50 --batch-size 32 --compile --json bench.json
    """
    from gradlab.bench.config import BenchConfig
    from gradlab.bench.harness import run_bench
    from gradlab.bench.output import format_bench, write_json
    from gradlab.training.preflight import check_output_file

    check_output_file(json_path, "--json")  # before the benchmark, not after it

    config = BenchConfig(
        spec=spec, batch_size=batch_size, input_size=input_size, device=device, amp=amp,
        metrics=tuple(dict.fromkeys(metrics)) or ("default",), every=tuple(dict.fromkeys(every)) or (1,),
        repeats=repeats, steps_per_round=steps_per_round, warmup=warmup, compile=compile_,
        alternatives=alternatives, control=control, num_classes=num_classes, seed=seed,
        max_seconds=max_seconds,
    )
    result = run_bench(config, progress=lambda msg: click.echo(msg, err=True))
    click.echo(format_bench(result))
    if json_path:
        click.echo(f"json: {write_json(result, json_path)}")
