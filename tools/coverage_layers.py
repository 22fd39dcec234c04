#!/usr/bin/env python3
"""Branch coverage per layer of cds_service/, from coverage.py's JSON report; fails under a layer's minimum.

    python tools/coverage_layers.py coverage.json                      # print the table
    python tools/coverage_layers.py coverage.json --min rules=95       # exit 1 if rules < 95 %

A layer is a package directly under cds_service/ (wire, gather, facts, rules, present, record, knowledge,
core, workers); the modules at the top (app.py, cli.py, ...) are the "composition root". Each row gives
coverage.py's own figure with branch measurement ((lines + branches covered) / (lines + branches)), which
is what `--min` checks, and the branches alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

ROOT_LAYER = "composition root"


@dataclass
class LayerCoverage:
    covered_lines: int = 0
    lines: int = 0
    covered_branches: int = 0
    branches: int = 0

    @property
    def percent(self) -> float:
        total = self.lines + self.branches
        return 100.0 * (self.covered_lines + self.covered_branches) / total if total else 100.0

    @property
    def branch_percent(self) -> float:
        return 100.0 * self.covered_branches / self.branches if self.branches else 100.0


def layer_of(path: str) -> str:
    parts = PurePosixPath(path.replace("\\", "/")).parts
    inside = parts[parts.index("cds_service") + 1 :]
    return inside[0] if len(inside) > 1 else ROOT_LAYER


def by_layer(report: dict[str, object]) -> dict[str, LayerCoverage]:
    files = report["files"]
    assert isinstance(files, dict)
    layers: dict[str, LayerCoverage] = {}
    for path, info in files.items():
        summary = info["summary"]
        layer = layers.setdefault(layer_of(path), LayerCoverage())
        layer.covered_lines += summary["covered_lines"]
        layer.lines += summary["num_statements"]
        layer.covered_branches += summary.get("covered_branches", 0)
        layer.branches += summary.get("num_branches", 0)
    return dict(sorted(layers.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="coverage JSON report (pytest --cov-report=json:FILE)")
    parser.add_argument(
        "--min", action="append", default=[], metavar="LAYER=PERCENT", help="a layer's minimum"
    )
    args = parser.parse_args(argv)
    report = json.loads(args.report.read_text(encoding="utf-8"))
    if not report["meta"].get("branch_coverage"):
        print("coverage_layers: the report was not measured with branch coverage (--cov-branch)")
        return 1
    layers = by_layer(report)
    print(f"{'layer':<18}{'coverage':>10}{'branches':>22}")
    for name, layer in layers.items():
        branches = f"{layer.branch_percent:.1f} % ({layer.covered_branches}/{layer.branches})"
        print(f"{name:<18}{layer.percent:>8.1f} %{branches:>22}")
    failed = False
    for rule in args.min:
        name, _, minimum = rule.partition("=")
        if name not in layers:
            print(f"coverage_layers: no layer {name!r} in the report")
            failed = True
        elif layers[name].percent < float(minimum):
            print(f"coverage_layers: {name} coverage {layers[name].percent:.1f} % is under {minimum} %")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
