"""Write the regime map (map.md, map.json, map.png): each family's advantage over SFT at matched learning against
the dose of confident conflicts, one point per regime (eaft.analysis.regime_map says how it is read).

    python scripts/regime_map.py docs/results/regimes/map.yaml
    python scripts/regime_map.py --regime gsm8k runs/experiments/a/report runs/analyze/a \\
        --regime mix10 runs/experiments/b/report runs/analyze/b --out runs/regime_map

A regime is a name, an experiment report folder holding frontier.json and an `eaft analyze` output folder holding
summary.json. With `package: true` in the YAML (or --package) map.json is also written to
src/eaft/resources/regime_map.json, the map that `eaft analyze` places its data on.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from eaft.analysis.regime_map import MapSpec, RegimeSource, build_map, load_spec, write_map
from eaft.errors import EaftError

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "eaft" / "resources" / "regime_map.json"


def parse(argv: list[str]) -> tuple[MapSpec, bool]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", nargs="?", help="a map YAML (settings and regimes); or give --regime instead")
    parser.add_argument("--regime", nargs=3, action="append", metavar=("NAME", "FRONTIER", "ANALYZE"), default=[])
    parser.add_argument("--out", help="output folder (default: the YAML's `out`, else runs/regime_map)")
    parser.add_argument("--reference", default="sft", help="the family the others are compared with")
    parser.add_argument("--compare", nargs="+", default=["eaft", "sft_kl"], help="families compared with it")
    parser.add_argument("--measures", nargs="+", default=["general avg", "self_consistency"])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.4, 0.8], help="levels, as shares of learning")
    parser.add_argument("--setting", default="", help="one line: model, training, seeds (shown in map and advice)")
    parser.add_argument("--package", action="store_true", help=f"also write map.json to {PACKAGE}")
    args = parser.parse_args(argv)
    if bool(args.spec) == bool(args.regime):
        parser.error("give a map YAML or --regime NAME FRONTIER ANALYZE (one or more), not both")
    if args.spec:
        spec = load_spec(args.spec)
    else:
        regimes = [RegimeSource(name, Path(front), Path(analyze)) for name, front, analyze in args.regime]
        spec = MapSpec(regimes, args.setting, args.reference, args.compare, args.measures, args.fractions)
    spec.out = Path(args.out) if args.out else spec.out
    return spec, args.package or spec.package


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        spec, package = parse(argv)
        regime_map = build_map(spec)
        regime_map["command"] = shlex.join(["python", "scripts/regime_map.py", *argv])
        for path in write_map(regime_map, spec.out, PACKAGE if package else None):
            print(path)
    except (EaftError, OSError) as err:  # one line, as the eaft commands say it
        print(f"regime_map: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
