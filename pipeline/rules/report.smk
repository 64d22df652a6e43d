rule report:
    input:
        code=dag.code_deps("report"),
        robustness=expand(P.ROBUSTNESS, preset=PRESET),
        timing=expand(P.TIMING, preset=PRESET),
        summary=expand(P.SUMMARY, preset=PRESET),
        train=expand(P.TRAIN_METRICS, preset=PRESET, model=TRAINED),
        history=expand(P.TRAIN_HISTORY, preset=PRESET, model=TRAINED),
        examples=expand(P.ADV_EXAMPLES, preset=PRESET, model=EVAL_MODELS, attack=ATTACKS),
        tensors=expand(P.PREPARED_TENSORS, preset=PRESET),  # the units grids show test images
        madry=expand([P.MADRY_TABLE, P.MADRY_METRICS], preset=PRESET),
        deepfool=expand([P.DF_STUDY_METRICS, P.DF_STUDY_TIMING, P.DF_FINETUNE], preset=PRESET, model=DF_MODELS),
        transfer=expand([P.TRANSFER_STATS, P.TRANSFER_CROSS_MODEL, P.TRANSFER_CROSS_TRAINING, P.TRANSFER_METRICS],
                        preset=PRESET),
        units=expand([P.UNITS_TOP, P.UNITS_METRICS], preset=PRESET),
        kurakin=expand([P.KURAKIN_TABLE, P.KURAKIN_METRICS], preset=PRESET, model=KURAKIN_MODELS),
        obfuscated=expand([P.OBFUSCATED_TABLE, P.OBFUSCATED_METRICS, P.THERMO_METRICS], preset=PRESET),
        substitute=expand([P.SUBSTITUTE_ROUNDS, P.SUBSTITUTE_SWEEP, P.SUBSTITUTE_METRICS], preset=PRESET),
        cw=expand([P.CW_GRIDS, P.CW_TABLE, P.CW_METRICS, P.CW_TIMING], preset=PRESET,
                  model=config["cw_study"]["models"]),
        jsma=expand([P.JSMA_TABLE, P.JSMA_METRICS, P.JSMA_TIMING], preset=PRESET, model=config["jsma_study"]["models"]),
        onepixel=expand([P.ONEPIXEL_TABLE, P.ONEPIXEL_METRICS], preset=PRESET,
                        model=config["onepixel_study"]["models"]),
        physical=expand([P.PHYSICAL_TABLE, P.PHYSICAL_ABLATION, P.PHYSICAL_TRACE, P.PHYSICAL_METRICS,
                         P.PHYSICAL_TIMING], preset=PRESET, model=config["physical"]["models"]),
        uap=expand([P.UAP_PERTURBATIONS, P.UAP_TABLE, P.UAP_CURVE, P.UAP_LABELS, P.UAP_SPECTRUM, P.UAP_METRICS,
                    P.UAP_TIMING], preset=PRESET, model=config["uap"]["models"]),
        uap_study=expand([P.UAP_CROSS, P.UAP_FINETUNE, P.UAP_TRAJECTORY, P.UAP_STUDY_METRICS, P.UAP_STUDY_TIMING],
                          preset=PRESET),
        generative=expand([P.PIXELCNN_METRICS, P.PIXELCNN_HISTORY, P.GAN_METRICS, P.GAN_HISTORY, P.GENERATIVE_TABLE,
                           P.GENERATIVE_EXAMPLES, P.GENERATIVE_METRICS], preset=PRESET) if GENERATIVE else [],
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
