"""GPUs on one machine: how many Snakemake may hand out, and which card a running stage takes.

Snakemake counts GPU slots (`resources: gpu=N` on the rules, a global limit equal to the number of
visible cards, set in common.smk) but does not say which card a job should use. A stage therefore
claims free cards itself before CUDA starts: one exclusive lock file per card, held until the
process exits (the kernel drops the lock even on SIGKILL), and CUDA_VISIBLE_DEVICES narrowed to the
claimed cards. With Snakemake's limit there is always a free card, so nobody waits; a second
Snakemake or a `dvc repro` on the same machine waits for a card instead of sharing it.

Environment:
- ADVLAB_GPUS=N: use N cards (the first N visible; on a machine with none, N stand-in ids 0..N-1,
  which is how the tests exercise the scheduling on a CPU machine).
- ADVLAB_GPU_LOCKS: the folder of the lock files (default: <tmp>/advlab-gpus-<uid>, machine-wide,
  since the cards are).
- ADVLAB_GPU_LOG: a file where every claim and release is appended as a JSON line (which process
  ran on which card, and when).

Inside a SLURM job nothing is claimed: SLURM has already given the job its own cards. Processes the
claimer starts (DDP ranks) inherit its cards (ADVLAB_GPUS_CLAIMED) and claim nothing themselves.
"""
from __future__ import annotations

import atexit
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CLAIMED = "ADVLAB_GPUS_CLAIMED"
_held: list = []  # open lock files: closing them (process exit) releases the cards


def visible_gpus() -> list[str]:
    """The ids of the cards this process may use, found without starting CUDA."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        ids = [d.strip() for d in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
        ids = [] if ids in (["-1"], ["NoDevFiles"]) else ids
    elif shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
            ids = [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]
        except (OSError, subprocess.SubprocessError):
            ids = []
    else:
        ids = []
    wanted = os.environ.get("ADVLAB_GPUS")
    if wanted is not None and wanted != "":
        if not wanted.isdigit():
            raise ValueError(f"ADVLAB_GPUS must be a count of GPUs (0, 1, 2, ...), got {wanted!r}")
        n = int(wanted)
        ids = ids[:n] if ids else [str(i) for i in range(n)]
    return ids


def lock_dir() -> Path:
    return Path(os.environ.get("ADVLAB_GPU_LOCKS") or Path(tempfile.gettempdir()) / f"advlab-gpus-{os.getuid()}")


def _log(event: str, devices: list[str], stage: str) -> None:
    path = os.environ.get("ADVLAB_GPU_LOG")
    if not path:
        return
    line = json.dumps({"event": event, "stage": stage, "pid": os.getpid(), "devices": devices, "t": time.time()})
    with open(path, "a") as fh:  # one short append per line: atomic on a local file system
        fh.write(line + "\n")


def claim(n: int, stage: str = "", timeout_s: float | None = None) -> list[str]:
    """Claim `n` free cards for the rest of this process and narrow CUDA_VISIBLE_DEVICES to them.

    Returns the claimed ids ([] when no card is visible; inside a SLURM job, the cards SLURM gave
    it, claiming nothing). Waits while every
    card is taken (another Snakemake or DVC run on this machine); `timeout_s` bounds the wait.
    Must run before CUDA is initialised, or the process would keep seeing every card.
    """
    if n < 1:
        return []
    if os.environ.get("SLURM_JOB_ID"):  # SLURM gave this job its cards (CUDA_VISIBLE_DEVICES)
        return visible_gpus()
    if os.environ.get(CLAIMED):  # a process started by the claimer (a DDP rank): its cards are held
        return os.environ[CLAIMED].split(",")
    ids = visible_gpus()
    if not ids:
        return []
    if n > len(ids):
        raise ValueError(f"this stage needs {n} GPUs but {len(ids)} are visible ({','.join(ids)}); "
                         "lower train.devices in params.yaml")
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError("internal error: CUDA was initialised before the stage claimed its GPU")
    folder = lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    waited = False
    while True:
        got = []
        for device in ids:
            fh = open(folder / f"gpu-{device}.lock", "a")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            got.append((device, fh))
            if len(got) == n:
                break
        if len(got) == n:
            break
        for _, fh in got:  # all or nothing: never sit on half of what a multi-card job needs
            fh.close()
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"no {n} free GPU(s) among {','.join(ids)} within {timeout_s:.0f} s "
                               f"(locks in {folder})")
        if not waited:
            print(f"{stage}: waiting for {n} free GPU(s) among {','.join(ids)}", file=sys.stderr)
            waited = True
        time.sleep(0.5)
    devices = [d for d, _ in got]
    _held.extend(fh for _, fh in got)
    os.environ["CUDA_VISIBLE_DEVICES"] = os.environ[CLAIMED] = ",".join(devices)
    _log("claim", devices, stage)
    atexit.register(_log, "release", devices, stage)
    return devices
