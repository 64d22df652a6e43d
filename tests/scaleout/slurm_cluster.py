"""A real single-node SLURM cluster (Debian's slurm-wlm + munge) for the tests, on 127.0.0.1 only.

    python -m tests.scaleout.slurm_cluster start DIR [--gpus N]   # writes the config, starts the daemons
    python -m tests.scaleout.slurm_cluster stop DIR               # stops what `start` started, by PID

Nothing is written outside DIR except /etc/slurm/{slurm,gres}.conf (see `_claim_system_conf`; removed
at stop) and munge's socket folder /run/munge (munged is started only when no munge daemon answers,
and stopped only if started here). The daemons run as the calling user (root in
CI), with free ports picked at start and every listener bound to 127.0.0.1.

Accounting is off (no slurmdbd): `sacct` cannot answer, so Snakemake's SLURM executor must be told
`--slurm-status-command squeue`, or it waits forever without a word (scale-out notes, F1).
`--gpus N` declares N GPUs as a generic resource (GRES), backed by stand-in device files (root only):
SLURM then schedules `--gpus` requests against them and sets each job's CUDA_VISIBLE_DEVICES, as on a
GPU node, while the jobs run on the CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

from pipeline.io import pid_alive
from tests.scaleout.servers import free_port

REQUIRED = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "srun", "munge", "munged")
MUNGE_RUN = Path("/run/munge")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# Written by tests/scaleout/slurm_cluster.py"


def missing_programs() -> list[str]:
    return [p for p in REQUIRED if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]


def _exe(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _munge_ok() -> bool:
    try:
        cred = subprocess.run([_exe("munge"), "-n"], capture_output=True, timeout=10)
        if cred.returncode != 0:
            return False
        back = subprocess.run([_exe("unmunge")], input=cred.stdout, capture_output=True, timeout=10)
        return back.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _wait(predicate, seconds: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise RuntimeError(f"SLURM test cluster: {what} did not come up within {seconds:.0f} s\n{tail}")


def slurm_conf(root: Path, *, cpus: int, memory_mb: int, gpus: int, ctld_port: int, slurmd_port: int) -> str:
    host = socket.gethostname()
    gres = f" Gres=gpu:{gpus}" if gpus else ""
    return "\n".join([
        f"{MARKER}: one node, this machine, loopback only ({root}).",
        "ClusterName=advlabtest",
        f"SlurmctldHost={host}(127.0.0.1)",
        "SlurmUser=" + (os.environ.get("USER") or "root"),
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        # Without these the daemons listen on every address (scale-out notes, F5).
        "CommunicationParameters=NoCtldInAddrAny,NoInAddrAny",
        f"StateSaveLocation={root}/state",
        f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid",
        f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/log/slurmctld.log",
        f"SlurmdLogFile={root}/log/slurmd.log",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "MpiDefault=none",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/affinity",
        "ReturnToService=2",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "DefMemPerCPU=1000",
        # squeue must still see finished jobs when Snakemake polls (it needs MinJobAge >= 3 x its
        # first-poll delay to trust squeue over sacct).
        "MinJobAge=300",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none",
        "MailProg=/bin/true",
        *(["GresTypes=gpu"] if gpus else []),
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb}{gres} State=UNKNOWN",
        f"PartitionName=main Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _claim_system_conf(root: Path) -> Path:
    """The cluster's config goes where SLURM looks by default, /etc/slurm/slurm.conf: Snakemake's
    jobstep plugin strips SLURM_* variables, SLURM_CONF included, before its inner `srun`, which then
    cannot find a config anywhere else. A config there that this module did not write is never touched."""
    conf = SYSTEM_CONF
    if conf.exists() and MARKER not in conf.read_text().splitlines()[0]:
        raise RuntimeError(f"SLURM test cluster: {conf} exists and is not ours; refusing to replace a real "
                           "cluster's config")
    conf.parent.mkdir(parents=True, exist_ok=True)
    (root / "conf.path").write_text(str(conf))
    return conf


def start(root: Path, gpus: int = 0) -> dict:
    """Start munged (if none answers), slurmctld and slurmd; returns the environment to use them."""
    missing = missing_programs()
    if missing:
        raise RuntimeError(f"SLURM test cluster: not installed: {', '.join(missing)} "
                           "(Debian: apt-get install slurm-wlm munge)")
    root = root.resolve()
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    started: dict = {"root": str(root), "munged": None}
    if not _munge_ok():
        MUNGE_RUN.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_RUN, "munge", "munge")
        MUNGE_RUN.chmod(0o755)
        subprocess.run(["runuser", "-u", "munge", "--", _exe("munged")], check=True, timeout=30)
        _wait(_munge_ok, 15, "munged")
        started["munged"] = int((MUNGE_RUN / "munged.pid").read_text().strip())
    cpus = os.cpu_count() or 1
    with open("/proc/meminfo") as fh:
        total_mb = int(fh.readline().split()[1]) // 1024
    conf = _claim_system_conf(root)
    conf.write_text(slurm_conf(root, cpus=cpus, memory_mb=max(1000, total_mb - 2000), gpus=gpus,
                               ctld_port=free_port(), slurmd_port=free_port()))
    if gpus:
        # SLURM's gpu plugin counts a node's GPUs by their device files, which must be character
        # devices: copies of /dev/null stand in for /dev/nvidia<i>. SLURM then hands each job its own
        # index in CUDA_VISIBLE_DEVICES, as on a GPU node; the jobs themselves run on the CPU.
        for i in range(gpus):
            node = root / f"fakegpu{i}"
            if not node.exists():
                os.mknod(node, 0o644 | stat.S_IFCHR, os.makedev(1, 3))
        files = f"{root}/fakegpu[0-{gpus - 1}]"
        (conf.parent / "gres.conf").write_text(f"NodeName={socket.gethostname()} Name=gpu File={files}\n")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    for daemon in ("slurmctld", "slurmd"):
        log = (root / "log" / f"{daemon}.out").open("w")
        proc = subprocess.Popen([_exe(daemon), "-D", "-f", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        started[daemon] = proc.pid
        (root / f"{daemon}.started").write_text(str(proc.pid))
        if daemon == "slurmctld":
            _wait(lambda: subprocess.run([_exe("sinfo")], env=env, capture_output=True).returncode == 0, 30,
                  "slurmctld", root / "log" / "slurmctld.log")

    def idle() -> bool:
        out = subprocess.run([_exe("sinfo"), "-h", "-o", "%T"], env=env, capture_output=True, text=True)
        return out.returncode == 0 and "idle" in out.stdout

    _wait(idle, 60, "the node (slurmd)", root / "log" / "slurmd.log")
    (root / "cluster.json").write_text(json.dumps(started))
    return {"SLURM_CONF": str(conf)}


def _kill(pid: int | None, seconds: float = 15) -> None:
    if not pid:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)  # our child: reap it
        except ChildProcessError:
            done = 0 if pid_alive(pid) else pid
        if done == pid or not pid_alive(pid):
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop(root: Path) -> None:
    """Stop what `start` started, in reverse order, by PID; cancel leftover jobs first."""
    root = root.resolve()
    record = root / "cluster.json"
    started = json.loads(record.read_text()) if record.exists() else {
        d: int(p.read_text()) for d in ("slurmctld", "slurmd") if (p := root / f"{d}.started").exists()}
    env = {**os.environ, "SLURM_CONF": str(SYSTEM_CONF)}
    if started.get("slurmctld"):
        try:
            subprocess.run([_exe("scancel"), "--user", os.environ.get("USER") or "root"], env=env,
                           capture_output=True, timeout=30)
        except subprocess.TimeoutExpired:
            pass  # the controller is gone already: nothing to cancel
    for daemon in ("slurmd", "slurmctld", "munged"):
        _kill(started.get(daemon))
    record.unlink(missing_ok=True)
    conf = SYSTEM_CONF
    if conf.exists() and f"({root})" in conf.read_text().splitlines()[0]:
        conf.unlink()
        (conf.parent / "gres.conf").unlink(missing_ok=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--gpus", type=int, default=0, help="GPUs to declare as a counted GRES")
    args = parser.parse_args(argv)
    if args.action == "start":
        env = start(args.dir, gpus=args.gpus)
        print(f"export SLURM_CONF={env['SLURM_CONF']}")
    else:
        stop(args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
