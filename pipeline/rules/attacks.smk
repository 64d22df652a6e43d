rule attack:
    input:
        code=dag.code_deps("attack"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
        model=P.MODEL,
    output:
        examples=P.ADV_EXAMPLES,
        table=P.ADV_TABLE,
        timing=P.ADV_TIMING,
    params:
        values=lambda wc: dag.param_values(config, "attack", attack=wc.attack),
    resources:
        gpu=LIGHT_GPU,
    # Float results depend on the thread count, so it is fixed: the stage pins one thread under
    # Snakemake and DVC alike (run_stage(threads=1)), and jobs run side by side on the cores.
    threads: 1
    shell:
        "python -m pipeline.attack --model {wildcards.model} --attack {wildcards.attack}"
