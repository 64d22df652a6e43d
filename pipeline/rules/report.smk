rule report:
    input:
        code=dag.code_deps("report"),
        robustness=expand(P.ROBUSTNESS, preset=PRESET),
        timing=expand(P.TIMING, preset=PRESET),
        summary=expand(P.SUMMARY, preset=PRESET),
        train=expand(P.TRAIN_METRICS, preset=PRESET, model=TRAINED),
        history=expand(P.TRAIN_HISTORY, preset=PRESET, model=TRAINED),
        examples=expand(P.ADV_EXAMPLES, preset=PRESET, model=EVAL_MODELS, attack=ATTACKS),
    output:
        report=report(P.REPORT, caption="../captions/report.rst", category="Report"),
        figures=report(
            directory(P.FIGURES),
            patterns=["{name}.png"],
            caption="../captions/figures.rst",
            category="Figures",
        ),
    params:
        values=lambda wc: dag.param_values(config, "report"),
    shell:
        "python -m pipeline.report"
