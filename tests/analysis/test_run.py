"""`eaft analyze` end to end on a tiny model saved to disk, and `eaft analyze --compare`."""

from __future__ import annotations

import json
import os
import re
import stat

import numpy as np
import pytest

from eaft.analysis.landscape import conflict_mask
from eaft.analysis.outputs import read_table
from eaft.cli import main as eaft_main
from tests.analysis.conftest import conversations, peaked, write_jsonl
from tests.train.tiny import build_model, build_tokenizer

REQUIRED = ["sample", "position", "token_id", "token", "prob", "entropy_topk", "entropy_full", "entropy_nats"]


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    """Two analyses of the same data: a sharpened ('fine-tuned') model, then the plain random one (umask 022)."""
    old_umask = os.umask(0o022)
    try:
        yield _analyses(tmp_path_factory.mktemp("analyze"))
    finally:
        os.umask(old_umask)


def _analyses(root):
    tokenizer = build_tokenizer()
    data = write_jsonl(root / "data.jsonl", conversations(16, seed=7))
    dirs = []
    for name, model in (("sharp", peaked(build_model(vocab_size=len(tokenizer)))), ("plain", None)):
        model = model or build_model(vocab_size=len(tokenizer))
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        out = root / f"out-{name}"
        args = ["analyze", "--model", str(root / name), "--data", data, "--out", str(out), "--no-progress"]
        args += ["--objectives", "dft", "--bins", "20", "--top-n", "3"]
        if name == "sharp":
            args += ["--rollouts", "2", "--max-new-tokens", "5", "--table-format", "jsonl"]
        else:
            args += ["--entropy", "full", "--prob-axis", "linear"]
        assert eaft_main(args) == 0
        dirs.append(out)
    return dirs


def test_run_writes_every_output_and_its_figures_match_the_token_table(run_dirs):
    out = run_dirs[0]
    summary = json.loads((out / "summary.json").read_text())
    files = summary["files"]
    for key in ("landscape", "gradient_landscape", "rollout_gradient_landscape"):
        assert (out / files[key]).read_bytes()[:4] == b"\x89PNG"
    cols = read_table(out / files["tokens"])
    assert files["tokens"] == "tokens.jsonl" and set(REQUIRED + ["weight_eaft", "grad_dft"]) <= set(cols)
    th, data = summary["thresholds"], summary["data"]
    assert th["entropy"] == pytest.approx(np.quantile(cols["entropy_topk"], 0.15))
    assert th["prob"] == pytest.approx(np.quantile(cols["prob"], 0.15))
    assert sum(data["quadrant_shares"].values()) == pytest.approx(1.0)
    conflicts = (cols["entropy_topk"] < th["entropy"]) & (cols["prob"] < th["prob"])
    assert data["confident_conflict_share"] == pytest.approx(conflicts.mean()) and conflicts.any()
    assert data["mean_eaft_weight"] == pytest.approx(cols["weight_eaft"].mean())
    assert data["tokens"] == len(cols["prob"]) and data["sequences"] == 16
    rollouts = read_table(out / files["rollout_tokens"])
    assert summary["rollouts"]["tokens"] == len(rollouts["prob"]) and set(rollouts["rollout"]) == {0, 1}
    assert sum(summary["rollouts"]["quadrant_shares"].values()) == pytest.approx(1.0)


def test_the_landscape_is_on_log_p_by_default_and_quadrants_have_readable_names(run_dirs):
    """The conflict region lies at small p, a speck in the corner of a linear axis; the reports say what each
    quadrant means rather than show its identifier alone."""
    from eaft.analysis.landscape import QUADRANT_LABELS

    default, linear = (json.loads((out / "summary.json").read_text())["config"] for out in run_dirs)
    assert default["prob_axis"] == "log" and linear["prob_axis"] == "linear"
    report = (run_dirs[0] / "report.md").read_text()
    page = (run_dirs[0] / "report.html").read_text()
    for name, label in QUADRANT_LABELS.items():
        assert f"| {label} (`{name}`) |" in report
        assert f'<option value="{name}">{label}: ' in page
    assert '"quadrant_labels"' in page


def test_every_output_has_normal_permissions(run_dirs):
    """What other users of a shared machine can read: 0644 files, 0755 folders under umask 022."""
    for out in run_dirs:
        paths = sorted(out.rglob("*"))
        assert any(p.name == "report.html" for p in paths) and any(p.suffix == ".png" for p in paths)
        for path in paths:
            expected = 0o755 if path.is_dir() else 0o644
            assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_report_ranks_samples_by_conflict_density_and_marks_their_conflicts(run_dirs):
    out = run_dirs[0]
    summary = json.loads((out / "summary.json").read_text())
    cols = read_table(out / "tokens.jsonl")
    from eaft.analysis.landscape import Thresholds

    flags = conflict_mask(cols["entropy_topk"], cols["prob"], Thresholds(**summary["thresholds"]))
    top = summary["data"]["top"]
    assert 1 <= len(top) <= 3
    densities = [t["density"] for t in top]
    assert densities == sorted(densities, reverse=True)
    for entry in top:
        rows = cols["sample"] == entry["sample"]
        assert entry["conflicts"] == int(flags[rows].sum()) and entry["tokens"] == int(rows.sum())
        assert len(re.findall(r"\*\*[^*]+\*\*", entry["markdown"])) >= 1
    eligible = [flags[cols["sample"] == s] for s in np.unique(cols["sample"])]
    best = max(f.mean() for f in eligible if len(f) >= 5 and f.any())
    assert top[0]["density"] == pytest.approx(best)
    report = (out / "report.md").read_text()
    assert f"{summary['thresholds']['entropy']:.4g}" in report and top[0]["markdown"].split("\n")[0] in report
    assert "![entropy–probability landscape](landscape.png)" in report and "Rollouts with the densest" in report


def test_compare_prints_how_conflicts_and_entropy_moved(run_dirs, capsys):
    sharp, plain = run_dirs
    assert eaft_main(["analyze", "--compare", str(sharp), str(plain)]) == 0
    text = capsys.readouterr().out
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in run_dirs)
    assert "different tokens" not in text  # same data, same tokenizer: same fingerprint
    assert "different entropies on the axis (entropy_topk and entropy_full)" in text
    assert s2["thresholds"]["entropy"] == pytest.approx(
        np.quantile(read_table(plain / "tokens.parquet")["entropy_full"], 0.15)
    )
    a, b = s1["data"]["mean_entropy"], s2["data"]["mean_entropy"]
    assert f"| mean entropy H̃ | {a:.4f} | {b:.4f} | {b - a:+.4f} |" in text
    a, b = s1["data"]["confident_conflict_share"], s2["data"]["confident_conflict_share"]
    assert f"| confident-conflict share (own thresholds) | {a:.2%} | {b:.2%} | {(b - a) * 100:+.2f} pp |" in text
    cols = read_table(plain / "tokens.parquet")
    th = s1["thresholds"]
    moved = np.mean((cols["entropy_topk"] < th["entropy"]) & (cols["prob"] < th["prob"]))
    assert re.search(rf"DIR1's thresholds .*\| {a:.2%} \| {moved:.2%} \|", text)
    assert "## rollouts" not in text  # only one of the two has rollouts


def test_cli_errors_are_clear(tmp_path, capsys):
    assert eaft_main(["analyze"]) == 2
    assert "--data is required" in capsys.readouterr().err
    assert eaft_main(["analyze", "--data", "x.jsonl", "--entropy", "maybe"]) == 2
    assert "--entropy must be one of" in capsys.readouterr().err
    assert eaft_main(["analyze", "--compare", str(tmp_path), str(tmp_path)]) == 1  # one line, no traceback
    err = capsys.readouterr().err
    assert "no summary.json" in err and "Traceback" not in err


def test_bad_data_is_named_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import eaft.models as models

    tokenizer = build_tokenizer()
    model_dir = tmp_path / "model"
    build_model(vocab_size=len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    (tmp_path / "rows.jsonl").write_bytes(b'{"instruction": "h\xe9", "output": "x"}\n')
    monkeypatch.setattr(models, "load_model_and_tokenizer", lambda *a, **k: pytest.fail("the model loaded first"))
    args = ["analyze", "--model", str(model_dir), "--data", str(tmp_path / "rows.jsonl"), "--out", str(tmp_path / "o")]
    assert eaft_main(args) == 2  # bad input
    err = capsys.readouterr().err
    assert "rows.jsonl:1: not UTF-8 text" in err and "Traceback" not in err
