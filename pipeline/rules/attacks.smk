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
        gpu=1,
    # All cores for one torch job: float results depend on the thread count, and DVC runs each
    # stage with every core, so this keeps Snakemake's and DVC's outputs bit-identical.
    threads: TORCH_THREADS
    shell:
        "python -m pipeline.attack --model {wildcards.model} --attack {wildcards.attack}"
