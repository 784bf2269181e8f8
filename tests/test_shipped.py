"""The shipped example files (`eaft.shipped`): one source, configs/, reached by name or by its docs' paths from any
folder, and copied whole into a wheel."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from eaft.shipped import configs_dir, find_shipped, shipped_names

REPO = Path(__file__).resolve().parents[1]


def tree(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under `folder`."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_the_package_reads_the_repositorys_configs():
    assert configs_dir().resolve() == (REPO / "configs").resolve()
    assert {"quick", "math", "gsm8k_cpu"} <= set(shipped_names("suites"))
    assert {"sft", "eaft", "llamafactory_eaft"} <= set(shipped_names("train"))
    assert "smollm2_gsm8k_cpu" in shipped_names("experiments")


def test_names_and_readme_paths_find_the_shipped_files_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    quick = configs_dir() / "suites" / "quick.yaml"
    assert find_shipped("quick", "suites") == quick
    assert find_shipped("quick.yaml", "suites") == quick
    assert find_shipped("configs/suites/quick.yaml", "suites") == quick
    assert find_shipped("sft", "train") == configs_dir() / "train" / "sft.yaml"
    # a file of the user's own wins; an unknown name is left for the caller to report
    (tmp_path / "configs" / "suites").mkdir(parents=True)
    (tmp_path / "configs" / "suites" / "quick.yaml").write_text("name: mine\n")
    assert find_shipped("configs/suites/quick.yaml", "suites") == Path("configs/suites/quick.yaml")
    assert find_shipped("no_such_suite", "suites") == Path("no_such_suite")


def test_commands_accept_the_shipped_names(tmp_path, monkeypatch, stand_in_data_root):
    from eaft.evaluate.suite import load_suite
    from eaft.evaluate.tasks import TaskError
    from eaft.experiment.spec import load_experiment
    from eaft.train.cli import parse_args
    from eaft.train.config import ConfigError

    monkeypatch.chdir(tmp_path)
    assert load_suite("quick").name == "quick"
    assert load_suite("configs/suites/quick.yaml", limit=2).tasks[0].limit == 2
    assert parse_args(["sft"]).eaft.objective == "sft"
    assert parse_args(["configs/train/eaft.yaml", "max_steps=3"]).training.max_steps == 3
    assert load_experiment("smollm2_gsm8k_cpu").name == "smollm2_gsm8k_cpu"
    with pytest.raises(TaskError, match=r"no_such: no such suite file; shipped suites: .*quick"):
        load_suite("no_such")
    with pytest.raises(ConfigError, match=r"no_such.yaml: no such config file; shipped train: .*sft"):
        parse_args(["no_such.yaml"])


def test_the_experiments_dataset_dir_and_analyze_read_gsm8k_rows(tmp_path, monkeypatch, stand_in_data_root):
    """`dataset_dir: configs/experiments/data` (relative to the working directory) is the shipped copy where the
    working directory has none; `eaft analyze` takes the same names as `eaft train`."""
    from eaft.analysis.run import AnalyzeConfig, encode_samples
    from tests.train.tiny import build_tokenizer

    rows = [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(3)]
    (stand_in_data_root / "gsm8k").mkdir()
    (stand_in_data_root / "gsm8k" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(tmp_path)
    tokenizer = build_tokenizer()
    config = AnalyzeConfig(data="gsm8k_train", dataset_dir="configs/experiments/data", max_samples=2)
    conversations, samples = encode_samples(config, tokenizer)
    assert [c[-1]["content"] for c in conversations] == [r["answer"] for r in rows[:2]]
    assert len(samples) == 2 and all(any(x != -100 for x in s["labels"]) for s in samples)
    conversations, _ = encode_samples(AnalyzeConfig(data="house_calc", max_samples=3), tokenizer)
    assert len(conversations) == 3 and conversations[0][-1]["content"].startswith("[calc]")


@pytest.mark.slow
def test_a_wheel_holds_every_shipped_file_byte_for_byte(tmp_path):
    """The package data is built from configs/ (through the src/eaft/configs link): nothing to keep in sync by
    hand, and this checks the wheel really carries it."""
    command = [sys.executable, "-m", "pip", "wheel", str(REPO), "-w", str(tmp_path), "--no-deps"]
    subprocess.run([*command, "--no-build-isolation", "-q"], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("eaft-*.whl")
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    assert tree(unpacked / "eaft" / "configs") == tree(REPO / "configs")
    assert (unpacked / "eaft" / "resources" / "house_calc.jsonl").is_file()
