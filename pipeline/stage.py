"""The frame every stage command shares: parse args, load params, run, record in MLflow."""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

from pipeline.config import ParamsError, load_params
from pipeline.devices import claim as claim_gpus



def set_threads(fixed: int | None = None) -> int:
    """Pin torch's thread count: CPU float results depend on it, so both orchestrators must agree.

    Snakemake exports OMP_NUM_THREADS = the rule's threads (all cores for torch rules); DVC sets
    nothing, so a stage then takes every core. A stage with a ``fixed`` count (light, many-job
    stages whose rule declares the same `threads`) uses it under both. ADVLAB_THREADS overrides all.
    """
    import torch

    threads = int(os.environ.get("ADVLAB_THREADS") or fixed or os.environ.get("OMP_NUM_THREADS")
                  or os.cpu_count() or 1)
    torch.set_num_threads(threads)
    return threads


def run_stage(name: str, body: Callable, arguments: tuple[str, ...] = (), argv=None, threads: int | None = None,
              gpus: int | Callable = 1) -> int:
    """Run stage `name`: parse its `arguments`, load params, claim `gpus` GPUs (a count, or a function
    of params and args; none on a machine without them, see pipeline.devices), pin the threads,
    run `body(params, args)` and record what it returns in MLflow."""
    parser = argparse.ArgumentParser(prog=f"python -m pipeline.{name}")
    for arg in arguments:
        parser.add_argument(f"--{arg}", required=True)
    args = parser.parse_args(argv)
    try:
        params = load_params()
        wanted = gpus(params, args) if callable(gpus) else gpus
        # Before any CUDA call: the claim narrows CUDA_VISIBLE_DEVICES to this job's cards.
        claimed = claim_gpus(wanted, stage=name)
    except (ParamsError, ValueError, TimeoutError) as exc:
        print(f"error: {name}: {exc}", file=sys.stderr)
        return 2
    threads = set_threads(threads)
    started = time.perf_counter()
    try:
        record = body(params, args)
    except (ValueError, OSError) as exc:
        # Bad input (data, checkpoints, files) or environment (offline, disk full): the message names
        # it. Outputs are written atomically and MLflow only after success: nothing half-made is left.
        if os.environ.get("ADVLAB_DEBUG") == "1":
            raise
        print(f"error: {name}: {exc}\n(ADVLAB_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    if record is not None:
        from pipeline.tracking import log_stage_run

        tags = {f"advlab.{a}": getattr(args, a) for a in arguments}
        tags.update(record.get("tags", {}))
        metrics = dict(record.get("metrics", {}))
        metrics["stage_seconds"] = seconds
        tags["advlab.threads"] = str(threads)
        if claimed:
            tags["advlab.gpus"] = ",".join(claimed)
        if os.environ.get("SLURM_JOB_ID"):
            tags["advlab.slurm_job"] = os.environ["SLURM_JOB_ID"]
        log_stage_run(
            name,
            params_all=params,
            params=record.get("params", {}),
            metrics=metrics,
            curves=record.get("curves"),
            artifacts=record.get("artifacts", ()),
            tags=tags,
        )
    print(f"{name}: done in {seconds:.1f} s", file=sys.stderr)
    return 0
