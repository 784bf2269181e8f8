"""The regime map: a family's advantage over SFT at matched learning against the dose of confident conflicts.

A regime is one training set under one budget. Its `eaft analyze` output (summary.json, on the training rows under
the base model) gives the dose: the conflict shares and SFT's share of gradient norm in the conflict region (the
map's x). Its experiment's frontier.json gives each family's mean general score minus the reference family's at
matched target levels, with the 95% interval of the frontier's paired bootstrap and its verdict.

The map reads each regime at the frontier levels that lie a fixed fraction of the way from the base's target score
to the highest target score any run of the regime reached (default 0.4 and 0.8). The frontier's levels are the
fifths of that range, so these are its 2nd and 4th levels in every regime: the same share of the learning that
regime allows, which is what makes regimes with different targets comparable. Values read off the segment from
the base to a run's first evaluated point keep the frontier's † (and `first_segment: true`); a family that does
not reach a level reads 'not reached', never a lower level in its place.

Outputs (`write_map`): map.md, map.json and map.png; map.json is also the file `eaft analyze` reads
(src/eaft/resources/regime_map.json, eaft.analysis.advice). Plotting and Markdown: eaft.analysis.regime_map_report.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eaft.errors import UsageError

FORMAT = 1
X_OBJECTIVE = "sft"  # the dose: SFT's share of gradient norm in the conflict region, whatever the reference
#: summary.json config keys that define the conflict region and the model: equal in every regime of one map
ANALYZE_KEYS = ("model_label", "entropy", "entropy_quantile", "prob_quantile")
FRACTION_TOLERANCE = 1e-3
SPEC_KEYS = ("setting", "reference", "compare", "measures", "fractions", "out", "package", "regimes")
REGIME_KEYS = ("name", "frontier", "analyze", "note")


class MapError(UsageError):
    """A regime's inputs or the map's specification are not what the map needs."""


@dataclass(frozen=True)
class RegimeSource:
    """One regime's inputs: an experiment report folder holding frontier.json, an analyze folder holding
    summary.json (either may be the file itself)."""

    name: str
    frontier: Path
    analyze: Path
    note: str = ""


@dataclass
class MapSpec:
    regimes: list[RegimeSource]
    setting: str = ""
    reference: str = "sft"
    compare: list[str] = field(default_factory=lambda: ["eaft", "sft_kl"])
    measures: list[str] = field(default_factory=lambda: ["general avg", "self_consistency"])
    fractions: list[float] = field(default_factory=lambda: [0.4, 0.8])
    out: Path = Path("runs/regime_map")
    package: bool = False

    def __post_init__(self) -> None:
        if not self.regimes:
            raise MapError("the map needs at least one regime")
        names = [r.name for r in self.regimes]
        if len(set(names)) != len(names):
            raise MapError(f"regime names must be unique, got {names}")
        if not self.compare or self.reference in self.compare:
            raise MapError(f"compare must list families other than the reference {self.reference!r}")
        if not self.measures:
            raise MapError("measures must name at least one general measure of the frontier")
        if not self.fractions or any(not isinstance(f, (int, float)) or not 0 < f <= 1 for f in self.fractions):
            raise MapError(f"fractions must be numbers in (0, 1], got {self.fractions}")


def _unknown(keys: Any, allowed: tuple[str, ...], where: str) -> None:
    for key in keys:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            raise MapError(f"{where}: unknown key {key!r}{extra} (valid: {', '.join(allowed)})")


def _string_list(value: Any, where: str) -> list:
    if not isinstance(value, list) or not value:
        raise MapError(f"{where}: expected a non-empty list, got {value!r}")
    return value


def load_spec(path: str | Path) -> MapSpec:
    """A map's YAML: settings and `regimes` (name, frontier, analyze, note); paths relative to the file's folder."""
    import yaml

    source = Path(path)
    if not source.is_file():
        raise MapError(f"{source}: no such map file")
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise MapError(f"{source}: invalid YAML: {err}") from None
    if not isinstance(data, dict):
        raise MapError(f"{source}: expected a mapping of settings and regimes")
    _unknown(data, SPEC_KEYS, str(source))
    regimes = []
    for i, entry in enumerate(_string_list(data.get("regimes"), f"{source}: regimes")):
        where = f"{source}: regimes[{i}]"
        if not isinstance(entry, dict):
            raise MapError(f"{where}: expected a mapping with name, frontier and analyze")
        _unknown(entry, REGIME_KEYS, where)
        missing = [k for k in ("name", "frontier", "analyze") if k not in entry]
        if missing:
            raise MapError(f"{where}: missing key {missing[0]!r}")
        folder = source.parent
        regimes.append(
            RegimeSource(
                str(entry["name"]), folder / entry["frontier"], folder / entry["analyze"], str(entry.get("note", ""))
            )
        )
    options: dict[str, Any] = {k: data[k] for k in ("setting", "reference") if k in data}
    for key in ("compare", "measures", "fractions"):
        if key in data:
            options[key] = _string_list(data[key], f"{source}: {key}")
    if "package" in data:
        if not isinstance(data["package"], bool):
            raise MapError(f"{source}: package must be true or false, got {data['package']!r}")
        options["package"] = data["package"]
    out = source.parent / str(data.get("out", "."))
    try:
        return MapSpec(regimes=regimes, out=out, **options)
    except MapError as err:
        raise MapError(f"{source}: {err}") from None


def _read_json(folder: Path, name: str, what: str) -> tuple[Path, dict[str, Any]]:
    path = folder / name if folder.is_dir() else folder
    if not path.is_file():
        raise MapError(f"{folder}: no {name} there ({what})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise MapError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise MapError(f"{path}: expected a JSON object")
    return path, data


def read_dose(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the dose figures, the analyze settings) of one analyze output folder."""
    path, summary = _read_json(folder, "summary.json", "an `eaft analyze` output folder")
    try:
        data, config = summary["data"], summary["config"]
        gradient = data["gradient"]
        dose = {
            "confident_conflict_share": float(data["confident_conflict_share"]),
            "fixed_conflict_share": float(data["fixed_conflict_share"]),
            "gradient": {name: dict(gradient[name]) for name in gradient if name in (X_OBJECTIVE, "eaft")},
            "tokens": int(data["tokens"]),
            "sequences": int(data["sequences"]),
        }
        dose["sft_gradient_share"] = float(gradient[X_OBJECTIVE]["conflict_share_of_norm"])
        settings = {key: config[key] for key in ANALYZE_KEYS}
    except (KeyError, TypeError, ValueError) as err:
        raise MapError(f"{path}: not an `eaft analyze` summary (missing or bad {err})") from None
    return dose, settings


def level_index(front: dict[str, Any], fraction: float, path: Path) -> tuple[int, float]:
    """(index, fraction) of the frontier level `fraction` of the way from the base's target score to the top."""
    levels = front["levels"]
    base = next(iter(front["curves"].values()))["points"][0][1]
    top = levels[-1] if levels else base
    if top <= base:
        raise MapError(f"{path}: no run's target score rises above the base's ({base}); no level to read")
    have = [(level - base) / (top - base) for level in levels]
    for i, value in enumerate(have):
        if abs(value - fraction) <= FRACTION_TOLERANCE:
            return i, value
    listed = ", ".join(f"{v:.3g}" for v in have)
    raise MapError(f"{path}: no frontier level at {fraction:g} of the way to the top (its levels: {listed})")


def _comparison(point: dict[str, Any], family: str, reference: str, curves: dict[str, Any]) -> dict[str, Any]:
    involved = [s for s, c in curves.items() if c["family"] in (family, reference)]
    first = any(point.get("first_segment", {}).get(s, False) for s in involved)
    stat, ref = point["families"][family], point["families"][reference]
    entry: dict[str, Any] = {"first_segment": first, "delta": None, "ci": None, "reached": None}
    if stat["mean"] is None:
        return entry | {"status": "not reached", "verdict": f"not reached ({family})"}
    if ref["mean"] is None:
        return entry | {"status": "reference not reached", "verdict": f"not comparable: {reference} not reached"}
    ci = stat.get("ci")
    return entry | {
        "status": "compared",
        "delta": float(stat.get("delta", stat["mean"] - ref["mean"])),
        "ci": None if ci is None else [float(ci[0]), float(ci[1])],
        "reached": stat.get("reached"),
        "verdict": point["verdicts"][family],
    }


def read_frontier(source: RegimeSource, spec: MapSpec) -> dict[str, Any]:
    """The regime's target, levels and each compared family's difference from the reference at each level."""
    path, front = _read_json(source.frontier, "frontier.json", "an experiment report folder")
    if not {"levels", "curves", "measures", "reference"} <= set(front):
        raise MapError(f"{path}: not a frontier.json (needs levels, curves, measures and reference)")
    if "intervals" not in front:
        raise MapError(f"{path}: no 95% intervals (written before they existed): run `eaft report` on it again")
    if front["reference"] != spec.reference:
        raise MapError(
            f"{path}: its frontier compares with {front['reference']!r}, the map with {spec.reference!r} "
            f"(eaft report --frontier-reference {spec.reference})"
        )
    families = {c["family"] for c in front["curves"].values()}
    for name in [spec.reference, *spec.compare]:
        if name not in families:
            raise MapError(f"{path}: no family {name!r} (families: {', '.join(sorted(families))})")
    for measure in spec.measures:
        if measure not in front["measures"]:
            raise MapError(f"{path}: no measure {measure!r} (measures: {', '.join(front['measures'])})")
    base = next(iter(front["curves"].values()))["points"][0][1]
    picked = [level_index(front, f, path) for f in spec.fractions]
    levels = [{"fraction": f, "target": front["levels"][i]} for f, (i, _) in zip(spec.fractions, picked, strict=True)]
    comparisons = {
        measure: {
            family: [
                _comparison(front["measures"][measure][i], family, spec.reference, front["curves"]) for i, _ in picked
            ]
            for family in spec.compare
        }
        for measure in spec.measures
    }
    seeds = {
        f: sorted(s for s, c in front["curves"].items() if c["family"] == f) for f in [spec.reference, *spec.compare]
    }
    target = {"name": front.get("target"), "base": base, "top": front["levels"][-1]}
    level = float(front["intervals"]["level"])  # the intervals' coverage; a level reached less often is flagged
    return {"target": target, "levels": levels, "seeds": seeds, "interval_level": level, "comparisons": comparisons}


def build_map(spec: MapSpec) -> dict[str, Any]:
    """The map as map.json holds it: settings, then one entry per regime, sorted by SFT's conflict gradient share."""
    regimes, settings = [], None
    for source in spec.regimes:
        dose, analyzed = read_dose(source.analyze)
        if settings is None:
            settings, first = analyzed, source.name
        elif analyzed != settings:
            changed = [k for k in ANALYZE_KEYS if analyzed[k] != settings[k]]
            raise MapError(
                f"{source.analyze}: analysed with other {', '.join(changed)} than regime {first!r} "
                f"({', '.join(f'{k}={analyzed[k]!r} vs {settings[k]!r}' for k in changed)}): shares not comparable"
            )
        entry = {"name": source.name, "note": source.note, "dose": dose, **read_frontier(source, spec)}
        entry["sources"] = {"frontier": os.path.normpath(source.frontier), "analyze": os.path.normpath(source.analyze)}
        regimes.append(entry)
    regimes.sort(key=lambda r: r["dose"]["sft_gradient_share"])
    return {
        "format": FORMAT,
        "setting": spec.setting,
        "x": f"gradient.{X_OBJECTIVE}.conflict_share_of_norm",
        "analyze": settings,
        "reference": spec.reference,
        "compare": list(spec.compare),
        "measures": list(spec.measures),
        "fractions": [float(f) for f in spec.fractions],
        "regimes": regimes,
    }


def write_map(regime_map: dict[str, Any], out: str | Path, package: str | Path | None = None) -> list[Path]:
    """map.md, map.json and map.png into `out` (and map.json to `package`), each written atomically."""
    from eaft.analysis.regime_map_report import map_markdown, map_png
    from eaft.io import write_json_atomic, write_text_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "map.json", regime_map, indent=2)
    write_text_atomic(out / "map.md", map_markdown(regime_map))
    written = [out / "map.json", out / "map.md", map_png(regime_map, out / "map.png")]
    if package is not None:
        write_json_atomic(package, regime_map, indent=2)
        written.append(Path(package))
    return written
