"""``gradlab models`` through click's test runner."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner

from gradlab.cli import main


@pytest.fixture(scope="module")
def listing_json():
    result = CliRunner().invoke(main, ["models", "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_json_listing_has_every_model_with_counts(listing_json):
    rows = {row["name"]: row for row in listing_json}
    assert rows["resnet34"]["params"] == 21_797_672
    assert rows["resnet34"]["classes"] == 1000 and rows["resnet34"]["paper_gmacs"] == 3.6
    assert rows["resnet20"]["params"] == rows["plain20"]["params"] == 269_722
    assert rows["resnet20"]["classes"] == 10 and rows["resnet20"]["input_size"] == [3, 32, 32]
    assert rows["resnet152"]["input_size"] == [3, 224, 224]
    assert {"mlp10", "mlp30"} <= set(rows)
    for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        assert abs(rows[name]["macs"] / 1e9 - rows[name]["paper_gmacs"]) / rows[name]["paper_gmacs"] < 0.1


@pytest.mark.slow
def test_table_listing_with_classes():
    result = CliRunner().invoke(main, ["models", "--classes", "10"])
    assert result.exit_code == 0, result.output
    line = next(row for row in result.output.splitlines() if row.startswith("resnet34 "))
    # 990 outputs fewer, each with 512 weights and a bias: 21,797,672 - 990 * 513
    assert f"{21_797_672 - 990 * 513:,}" in line and "3.6 G" in line and "3x224x224" in line
    assert "classes: 1000 for ImageNet-style nets" in result.output


def test_spec_detail_table_json_and_csv():
    runner = CliRunner()
    table = runner.invoke(main, ["models", "--spec", "resnet20"])
    assert table.exit_code == 0, table.output
    assert "depth     20" in table.output and "269,722" in table.output and "layer3.2.conv2" in table.output
    info = json.loads(runner.invoke(main, ["models", "--spec", "plain20:act=tanh", "--format", "json"]).output)
    assert info["name"] == "plain20:act=tanh" and info["params"] == 269_722
    assert any(layer["type"] == "Tanh" for layer in info["layers"])
    output = runner.invoke(main, ["models", "--spec", "mlp3", "--format", "csv"]).output
    rows = list(csv.DictReader(io.StringIO(output)))
    assert [r["layer"] for r in rows if r["type"] == "Linear"] == ["layers.0.linear", "layers.1.linear", "fc"]
    assert sum(int(r["params"]) for r in rows) == (3072 * 256 + 512) * 1 + (256 * 256 + 512) + 2570


def test_bad_spec_is_a_one_line_error_with_status_2():
    result = CliRunner().invoke(main, ["models", "--spec", "resnet35"])
    assert result.exit_code == 2
    lines = [row for row in result.output.splitlines() if row.strip()]
    assert lines == [lines[0]] and lines[0].startswith("Error: unknown model 'resnet35'")
