rule train:
    input:
        code=dag.code_deps("train"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
    output:
        model=P.MODEL,
        metrics=P.TRAIN_METRICS,
        history=P.TRAIN_HISTORY,
    params:
        values=lambda wc: dag.param_values(config, "train"),
    resources:
        gpu=1,
    # All cores for one torch job: float results depend on the thread count, and DVC runs each
    # stage with every core, so this keeps Snakemake's and DVC's outputs bit-identical.
    threads: TORCH_THREADS
    shell:
        "python -m pipeline.train --model {wildcards.model}"
