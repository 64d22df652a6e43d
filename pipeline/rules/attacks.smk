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
    shell:
        "python -m pipeline.attack --model {wildcards.model} --attack {wildcards.attack}"
