"""Resharding a checkpoint for another data-parallel size or ZeRO stage: its own step, outside any collective.

DeepSpeed's ``ds_to_universal`` rewrites a ZeRO checkpoint per parameter (the universal format) so
that any world size and stage can load it. It reads and writes every optimizer state once (about
0.4 TB at 8B parameters), which takes far longer than a collective may wait. So the conversion is
not bracketed by a barrier: rank 0 converts, in a child process with parallel extract and merge
workers (:data:`WORKERS`), while the other ranks wait on files in the checkpoint directory (which every
rank reads anyway): ``<tag>_universal/.complete`` when done, ``<tag>_universal.failed`` (holding the
error) when not, and a heartbeat file rank 0 touches while the conversion runs. A waiting rank gives
up only when that heartbeat stops changing for :data:`STALE_AFTER_S` (rank 0 died), never on a
timeout tied to the size of the model. A finished conversion is reused by later relaunches.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmtrain.distributed.collectives import barrier, is_rank0
from llmtrain.distributed.logging import get_logger
from llmtrain.engine.safe_load import RESUME_OPT_IN, UnsafeCheckpointFile
from llmtrain.engine.universal_convert import EXIT_UNSAFE
from llmtrain.errors import CheckpointError
from llmtrain.modelio.layout import UNIVERSAL_SUFFIX

log = get_logger(__name__)

WORKERS = max(1, min(8, (os.cpu_count() or 1) // 2))  # ds_to_universal's extract and merge processes
HEARTBEAT_S = 2.0  # rank 0 touches the heartbeat file this often while converting
STALE_AFTER_S = 120.0  # a heartbeat unchanged this long means rank 0 is gone
POLL_S = 0.5
_COMPLETE = ".complete"
_STAGE12_STATES = "mp_rank_00_model_states.pt"
_STAGE3_STATES = "zero_pp_rank_0_mp_rank_00_model_states.pt"


def universal_dir(step_dir: Path) -> Path:
    return step_dir.with_name(step_dir.name + UNIVERSAL_SUFFIX)


def _failed_file(step_dir: Path) -> Path:
    return step_dir.with_name(step_dir.name + UNIVERSAL_SUFFIX + ".failed")


def _heartbeat_file(step_dir: Path) -> Path:
    return step_dir.with_name(step_dir.name + UNIVERSAL_SUFFIX + ".heartbeat")


def convert_for_resume(step_dir: Path, *, trust_pickle: bool = False) -> Path:
    """Every rank calls this: rank 0 converts ``step_dir`` (or reuses a finished conversion), the others
    wait on files. Raises CheckpointError on every rank when the conversion fails."""
    failed, beat = _failed_file(step_dir), _heartbeat_file(step_dir)
    if is_rank0():  # a failure marker of an earlier attempt must not be read as this attempt's
        failed.unlink(missing_ok=True)
        beat.write_text(str(time.time()))
    barrier()  # short: every rank is at the same point of start-up
    out = universal_dir(step_dir)
    if is_rank0():
        try:
            make_universal(step_dir, trust_pickle=trust_pickle, heartbeat=beat)
        except CheckpointError as e:
            failed.write_text(str(e))
            _all_have_read(failed)
            raise
        finally:
            beat.unlink(missing_ok=True)
    else:
        _wait_for(out, failed, beat, step_dir)
    return out


def _all_have_read(failed: Path) -> None:
    """Remove the failure marker once every rank has read it (they reach this barrier within a poll)."""
    with contextlib.suppress(RuntimeError):  # another rank is gone: the marker is removed all the same
        barrier()
    failed.unlink(missing_ok=True)


def _wait_for(out: Path, failed: Path, beat: Path, step_dir: Path) -> None:
    last_seen, changed_at = None, time.monotonic()
    while not (out / _COMPLETE).exists():
        if failed.exists():
            error = CheckpointError(f"rank 0 could not convert {step_dir} for this world size or ZeRO stage: "
                                    f"{failed.read_text().strip()}")
            _all_have_read(failed)
            raise error
        try:
            stamp = beat.stat().st_mtime_ns
        except FileNotFoundError:
            stamp = None
        if stamp != last_seen:
            last_seen, changed_at = stamp, time.monotonic()
        elif time.monotonic() - changed_at > STALE_AFTER_S:
            raise CheckpointError(
                f"rank 0 stopped converting {step_dir} (its heartbeat {beat} has not changed for {STALE_AFTER_S:.0f} s): "
                f"see rank 0's log, then relaunch; a finished part is not reused, the conversion starts over")
        time.sleep(POLL_S)


def make_universal(step_dir: Path, *, trust_pickle: bool = False, heartbeat: Path | None = None) -> Path:
    """Convert a DeepSpeed ZeRO 1-3 checkpoint to the universal format (another data-parallel size or stage).

    ``ds_to_universal`` writes the fp32 weights and Adam moments per parameter (``zero/``), which any
    stage loads, but copies the metadata file under the source stage's name only: ZeRO-1/2 look for
    ``mp_rank_00_model_states.pt``, ZeRO-3 for ``zero_pp_rank_0_mp_rank_00_model_states.pt``. With a
    universal load DeepSpeed reads only counters, scheduler and client state from it (the weights come
    from ``zero/``), so both names are provided and either stage can resume. The conversion runs into
    ``<tag>_universal.tmp`` and is renamed when complete; a failure leaves nothing behind (no partial
    folder, no ``latest_universal`` naming one). DeepSpeed's files are read with torch's restricted
    unpickler (:mod:`llmtrain.engine.universal_convert`) unless ``trust_pickle``. ``heartbeat`` is
    touched every :data:`HEARTBEAT_S` while the conversion runs.
    """
    out = universal_dir(step_dir)
    if (out / _COMPLETE).exists():
        _add_model_state_names(out)
        return out
    tmp = step_dir.with_name(step_dir.name + UNIVERSAL_SUFFIX + ".tmp")
    shutil.rmtree(out, ignore_errors=True)  # an incomplete folder of an older version or a crash
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, "-m", "llmtrain.engine.universal_convert", f"--opt-in={RESUME_OPT_IN}",
           *(["--trust-pickle"] if trust_pickle else []), "--input_folder", str(step_dir),
           "--output_folder", str(tmp), "--inject_missing_state",
           "--num_extract_workers", str(WORKERS), "--num_merge_workers", str(WORKERS)]
    started = time.perf_counter()
    log.info(f"[llmtrain] converting {step_dir.name} to a universal checkpoint ({WORKERS} extract/merge workers)")
    try:
        returncode, stderr = _run_with_heartbeat(cmd, heartbeat)
        if returncode == EXIT_UNSAFE:
            raise UnsafeCheckpointFile((stderr.strip().splitlines() or [""])[-1] + "; nothing was kept")
        if returncode != 0:
            raise CheckpointError(
                f"converting {step_dir} to a universal checkpoint (to resume on another data-parallel size or ZeRO "
                f"stage) failed; nothing was kept. Resume with the original train.zero_stage and world size "
                f"({step_dir / 'trainer_state.json'} records them), or start a new run. DeepSpeed said:\n"
                f"{stderr[-2000:]}")
        _add_model_state_names(tmp)
        (tmp / _COMPLETE).write_text("")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        # ds_to_universal's pointer to the folder it wrote (ours is loaded by tag): never left behind
        (step_dir.parent / "latest_universal").unlink(missing_ok=True)
    log.info(f"[llmtrain] universal checkpoint {out.name} written in {time.perf_counter() - started:.1f} s")
    return out


def _run_with_heartbeat(cmd: list[str], heartbeat: Path | None) -> tuple[int, str]:
    env = {**os.environ, "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu")}
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        try:
            while True:
                if heartbeat is not None:
                    heartbeat.touch()
                try:
                    proc.wait(timeout=HEARTBEAT_S)
                    break
                except subprocess.TimeoutExpired:
                    continue
        except BaseException:  # interrupted (signal, Ctrl-C): the conversion does not run on unsupervised
            proc.kill()
            proc.wait()
            raise
        err.seek(0)
        return proc.returncode, err.read().decode("utf-8", "replace")


def _add_model_state_names(universal_dir: Path) -> None:
    """Give the universal folder's metadata file the names both ZeRO-1/2 and ZeRO-3 look for."""
    for have, want in ((_STAGE12_STATES, _STAGE3_STATES), (_STAGE3_STATES, _STAGE12_STATES)):
        if (universal_dir / have).is_file() and not (universal_dir / want).exists():
            shutil.copy2(universal_dir / have, universal_dir / want)
