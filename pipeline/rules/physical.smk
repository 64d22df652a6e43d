# Kurakin et al. 2016 (issue 5): adversarial images through a simulated print-and-photo path,
# destruction rates of the fast, basic iterative and least-likely class methods, and of EoT images.


rule physical:
    input:
        code=dag.code_deps("physical"),
        tensors=P.PREPARED_TENSORS,
        meta=P.PREPARED_META,
        model=P.MODEL,
    output:
        table=P.PHYSICAL_TABLE,
        ablation=P.PHYSICAL_ABLATION,
        trace=P.PHYSICAL_TRACE,
        metrics=P.PHYSICAL_METRICS,
        timing=P.PHYSICAL_TIMING,
    params:
        values=lambda wc: dag.param_values(config, "physical"),
    resources:
        gpu=1,
    threads: TORCH_THREADS
    shell:
        "python -m pipeline.physical --model {wildcards.model}"
