# advlab: data -> natural and defended training -> attacks -> evaluation, the papers' studies -> report.
#   snakemake --cores all                                   (params.yaml, preset mnist5k)
#   snakemake --cores all --configfile presets/smoke.yaml   (another preset)
# Orchestration only: which stage, which inputs/outputs/params. Stages are `python -m pipeline.<stage>`.
# dvc.yaml holds the same stages (python -m pipeline.dvcgen writes it; tests/test_dag_sync.py checks).

from snakemake.utils import min_version

min_version("9.0")

configfile: "params.yaml"


include: "pipeline/rules/common.smk"
include: "pipeline/rules/data.smk"
include: "pipeline/rules/train.smk"
include: "pipeline/rules/attacks.smk"
include: "pipeline/rules/evaluate.smk"
include: "pipeline/rules/studies.smk"
include: "pipeline/rules/attack_studies.smk"
include: "pipeline/rules/physical.smk"
include: "pipeline/rules/uap.smk"
include: "pipeline/rules/generative.smk"
include: "pipeline/rules/report.smk"


rule all:
    default_target: True
    input:
        P.REPORT,
        expand(P.ROBUSTNESS, preset=PRESET),
        expand(P.MODEL, preset=PRESET, model=TRAINED),


onerror:
    # A job killed while it recorded its MLflow run leaves that run RUNNING: mark it FAILED.
    from pipeline.tracking import fail_abandoned_runs

    try:
        failed = fail_abandoned_runs()
        if failed:
            print(f"MLflow: marked {len(failed)} run(s) of killed jobs FAILED")
    except Exception as exc:  # the store must not hide the job's own error
        print(f"MLflow: could not check for abandoned runs ({exc})")
