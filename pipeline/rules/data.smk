rule prepare_data:
    input:
        code=dag.code_deps("prepare_data"),
    output:
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
    params:
        values=lambda wc: dag.param_values(config, "prepare_data"),
    shell:
        "python -m pipeline.prepare_data"
