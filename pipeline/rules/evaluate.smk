rule evaluate:
    input:
        code=dag.code_deps("evaluate"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
        models=expand(P.MODEL, preset=PRESET, model=EVAL_MODELS),
        tables=expand(P.ADV_TABLE, preset=PRESET, model=EVAL_MODELS, attack=ATTACKS),
        timing=expand(P.ADV_TIMING, preset=PRESET, model=EVAL_MODELS, attack=ATTACKS),
    output:
        robustness=P.ROBUSTNESS,
        timing=P.TIMING,
        summary=report(P.SUMMARY, caption="../captions/summary.rst", category="Robustness"),
    params:
        values=lambda wc: dag.param_values(config, "evaluate"),
    resources:
        gpu=1,
    # All cores for one torch job: float results depend on the thread count, and DVC runs each
    # stage with every core, so this keeps Snakemake's and DVC's outputs bit-identical.
    threads: TORCH_THREADS
    shell:
        "python -m pipeline.evaluate"
