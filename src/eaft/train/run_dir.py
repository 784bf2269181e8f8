"""The run directory: where a run starts, continues from, or refuses to clobber.

The main process owns the directory for the whole run (`eaft.ownership`): a second run into it is refused
while the first lives, so "a failed start" is only ever concluded about a directory no live process owns. A
directory that holds only a failed start (its config.yaml and logs, no complete checkpoint, no final model,
no report.md) is taken as empty: the retry of a failed start is never refused, and resume=true starts it anew.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import yaml

from eaft.errors import EaftError
from eaft.io import write_text_atomic
from eaft.ownership import own_folder
from eaft.train.config import TrainConfig
from eaft.train.outputs import REPORT

logger = logging.getLogger(__name__)
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
FINAL_DIRS = ("adapter", "model")


class RunError(EaftError, RuntimeError):
    """A run that cannot start or continue; the message says why and what to do."""


def is_failed_start(run_dir: Path) -> bool:
    """An eaft run directory that never reached a checkpoint nor a final save (killed or failed early)."""
    return (
        (run_dir / "config.yaml").is_file()
        and not (run_dir / REPORT).exists()
        and not any((run_dir / d).exists() for d in FINAL_DIRS)
        and not complete_checkpoints(run_dir)
    )


def checkpoint_step(path: Path) -> int:
    return int(CHECKPOINT.match(path.name).group(1))


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints with their trainer_state.json (Trainer writes it last), newest first."""
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := CHECKPOINT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True) if (p / "trainer_state.json").is_file()]


def damaged_file(checkpoint: Path) -> tuple[Path, str] | None:
    """(file, why) for the first weight or state file of `checkpoint` that cannot be read whole, else None.

    safetensors headers are checked against the file's length; torch's .pt/.pth/.bin files are zip archives,
    whose directory sits at the end of the file, so a truncated one has none."""
    import zipfile

    from safetensors import safe_open

    for path in sorted(checkpoint.glob("*.safetensors")):
        try:
            with safe_open(str(path), "pt") as handle:
                handle.keys()
        except Exception as err:  # safetensors raises its own SafetensorError
            return path, str(err)
    for path in sorted(p for p in checkpoint.iterdir() if p.suffix in (".pt", ".pth", ".bin")):
        if not zipfile.is_zipfile(path):
            return path, "truncated or not a torch archive"
    return None


def check_loadable(checkpoint: Path, run_dir: Path) -> Path:
    """`checkpoint`, or a RunError naming its damaged file and how to fall back to the previous checkpoint."""
    damage = damaged_file(checkpoint)
    if damage is None:
        return checkpoint
    path, why = damage
    older = [c for c in complete_checkpoints(run_dir) if checkpoint_step(c) < checkpoint_step(checkpoint)]
    if older:
        fallback = (
            f"to fall back to {older[0].name}, delete {checkpoint} and run with resume=true again "
            f"(or pass resume_from_checkpoint={older[0]})"
        )
    else:
        fallback = f"there is no older complete checkpoint: delete {checkpoint} and start without resume"
    raise RunError(f"{path} cannot be read ({why}): the checkpoint was cut short; {fallback}")


def resume_checkpoint(config: TrainConfig, run_dir: Path) -> Path | None:
    """The checkpoint to continue from (resume=true: the newest complete one), or None for a fresh run."""
    explicit = config.training.resume_from_checkpoint
    if explicit not in (None, "", False) and str(explicit).lower() != "true":
        path = Path(explicit)
        if not (path / "trainer_state.json").is_file():
            raise RunError(f"resume_from_checkpoint={explicit!r}: not a complete checkpoint (no trainer_state.json)")
        return check_loadable(path, path.parent)
    if not (config.eaft.resume or str(explicit).lower() == "true"):
        return None
    if (run_dir / REPORT).is_file():
        raise RunError(f"resume=true but {run_dir} holds a finished run ({REPORT} exists)")
    checkpoints = complete_checkpoints(run_dir)
    if not checkpoints and is_failed_start(run_dir):
        logger.info("resume=true: %s holds only a failed start (no checkpoint); starting it anew", run_dir)
        return None
    if not checkpoints:
        raise RunError(f"resume=true but {run_dir} has no complete checkpoint; start without resume")
    return check_loadable(checkpoints[0], run_dir)


def save_failure(what: str, folder: Path, err: BaseException, run_dir: Path) -> RunError:
    """A failed checkpoint or final save as one line: the folder, the error, free space, and how to go on."""
    try:
        free = f"{shutil.disk_usage(folder if folder.exists() else run_dir).free / 1e9:.2f} GB free there"
    except OSError:
        free = "free space unknown"
    text = str(err) or type(err).__name__
    full = getattr(err, "errno", None) == 28 or any(
        sign in text for sign in ("No space left", "StorageFull", "file write failed", "unexpected pos")
    )
    cause = "the disk is likely full" if full else "the write failed"
    done = complete_checkpoints(run_dir)
    after = f"resume=true continues from {done[0].name}" if done else "no complete checkpoint exists yet"
    return RunError(
        f"could not write the {what} {folder} ({text}; {free}): {cause}. Free space or choose another output_dir; "
        f"{after}"
    )


def kept_evaluations(run_dir: Path, config: TrainConfig) -> Path | None:
    """The in-process evaluations (eval_dir inside the run directory) of a failed start of this same config:
    a retry trains the same model again, so the points it had finished are kept and not scored twice."""
    if config.eaft.overwrite_output_dir or config.eaft.eval_suite_steps is None or not is_failed_start(run_dir):
        return None
    evals = Path(config.eaft.eval_dir) if config.eaft.eval_dir else run_dir / "eval"
    if evals.resolve().parent != run_dir.resolve() or not evals.is_dir():
        return None
    stored = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    ignored = ("resume", "overwrite_output_dir")
    same = {k: v for k, v in stored.items() if k not in ignored} == {
        k: v for k, v in yaml.safe_load(yaml.safe_dump(config.raw)).items() if k not in ignored
    }
    return evals if same else None


def clear_run_dir(run_dir: Path, keep: Path | None = None) -> None:
    """Remove the run directory, or everything in it but `keep`."""
    if keep is None:
        shutil.rmtree(run_dir)
        return
    logger.info("keeping %s: the evaluations this same run had finished before it stopped", keep)
    for path in run_dir.iterdir():
        if path.resolve() != keep.resolve():
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def prepare_run_dir(config: TrainConfig) -> tuple[Path, Path | None]:
    run_dir = Path(config.training.output_dir)
    checkpoint = resume_checkpoint(config, run_dir)
    if checkpoint is None and run_dir.is_dir() and any(run_dir.iterdir()):
        if is_failed_start(run_dir):
            logger.info("%s holds only a failed start (no checkpoint, no final model); clearing it", run_dir)
        elif not config.eaft.overwrite_output_dir:
            raise RunError(
                f"output_dir {run_dir} already holds files; pass resume=true to continue it, "
                "overwrite_output_dir=true to replace it, or another output_dir"
            )
        if not (run_dir / "config.yaml").is_file():
            raise RunError(
                f"overwrite_output_dir=true but {run_dir} does not look like an eaft run; refusing to clear it"
            )
        clear_run_dir(run_dir, keep=kept_evaluations(run_dir, config))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(config.raw, sort_keys=False))
    return run_dir, checkpoint


def prepare_run_dir_on_ranks(config: TrainConfig) -> tuple[Path, Path | None]:
    """`prepare_run_dir` on the main process, then the others read the result (it clears and writes the dir)."""
    import os

    training = config.training
    _ = training.device  # sets up the process group: world_size reads 1 before that
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and training.world_size != launched:
        raise RunError(
            f"launched as {launched} processes but the trainer resolved {training.world_size} "
            f"({training.distributed_state.distributed_type}); each would train alone. On CPU pass use_cpu=true"
        )
    if training.world_size <= 1:
        return prepare_run_dir(config)
    with training.main_process_first(local=False, desc="prepare the run directory"):
        if training.process_index == 0:
            return prepare_run_dir(config)
    run_dir = Path(training.output_dir)
    return run_dir, resume_checkpoint(config, run_dir)


@contextmanager
def claimed_run_dir(config: TrainConfig) -> Iterator[tuple[Path, Path | None]]:
    """`prepare_run_dir_on_ranks` while the main process owns output_dir; held until the block ends."""
    training = config.training
    _ = training.device  # sets up the process group: process_index reads 0 on every rank before that
    main = training.process_index == 0
    with own_folder(training.output_dir, "eaft train") if main else nullcontext():
        yield prepare_run_dir_on_ranks(config)
