"""Fault injection for the fault suite's child processes (never installed with advlab).

On PYTHONPATH with ADVLAB_TEST_KILL="<point>|<argv substring>", a process whose command line
holds the substring kills itself with SIGKILL (no cleanup, like the OOM killer or a power loss):
  rename:<name>  just before the atomic rename of an output whose file name holds <name>: the
                 output is complete in its temporary file and not yet in place;
  record         while recording its MLflow run: after create_run, before set_terminated.
"""
import os
import signal
import sys

_spec = os.environ.get("ADVLAB_TEST_KILL", "")
_point, _, _match = _spec.partition("|")


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _arm_rename(name: str) -> None:
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if name in os.path.basename(os.fspath(dst)):
            _die()
        return real(src, dst, *args, **kwargs)

    os.replace = replace


def _arm_record() -> None:
    import importlib.abc
    import importlib.util

    class _AfterImport(importlib.abc.MetaPathFinder):
        """Wrap pipeline.tracking.log_stage_run once the stage imports it."""

        def find_spec(self, name, path, target=None):
            if name != "pipeline.tracking":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            run_module = spec.loader.exec_module

            def exec_module(module):
                run_module(module)
                real = module.log_stage_run

                def log_stage_run(*args, **kwargs):
                    from mlflow.tracking import MlflowClient

                    MlflowClient.log_batch = lambda *a, **k: _die()
                    return real(*args, **kwargs)

                module.log_stage_run = log_stage_run

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _AfterImport())


if _point and _match in " ".join(sys.argv):
    if _point.startswith("rename:"):
        _arm_rename(_point[len("rename:"):])
    elif _point == "record":
        _arm_record()
    else:
        raise SystemExit(f"ADVLAB_TEST_KILL: unknown point {_point!r}")
