"""The stages of `synaug run`, one module each; :mod:`synaug.pipeline.runner` walks them.

Every stage is a function of a :class:`~synaug.pipeline.context.RunContext` and the outputs of
the stages before it; its output lives in ``OUT/stages/<stage>-<digest>/`` (see
:mod:`synaug.pipeline.cache`), the digest covering the stage's own config section, the digests
of its inputs and the source of the modules it runs (its module's ``CODE``):

================= ======================= ========================================= =========================================
stage (--stage)   module                  inputs hashed                             output
================= ======================= ========================================= =========================================
data              :mod:`.data`            dataset source, long-tail draw or index   ``train-index.json`` (the long tail)
plan              :mod:`.plan`            data, plan section and cells, generator   ``plan.json`` (group runs: one per cells
                                          seed                                      kind the recipes fill, class / class-group)
plan-extra        :mod:`.plan`            plan, extra images per class              ``plan.json`` (replace / substitute)
plan-feedback     :mod:`.plan`            plan, budget fraction                     ``plan.json`` (one per ``fg`` budget)
train (feedback)  :mod:`.feedback`        as train (the ``ce`` row of the first     ``checkpoint/`` (the feedback classifier;
                                          seed; ``ce_crt``: also its cRT)           none when it is a given folder)
generate          :mod:`.generate`        plan, generator weights, sampler          ``store/`` (resumable in place)
generate-extra    :mod:`.generate`        plan-extra, generator weights, sampler    ``store/``
generate-feedback :mod:`.generate`        plan-feedback, generator weights,         ``store/`` (one per ``fg`` criterion and
                                          sampler, feedback settings, the feedback  budget; the manifest's ``criterion``
                                          classifier's weights                      column holds each image's score)
filter            :mod:`.filter`          the (over-generated) fill store, the      ``filter.parquet`` (scores and kept /
                                          filter section (group: generate)          rejected; the store is left untouched)
train             :mod:`.train`           training set (data, stores), TrainConfig, ``checkpoint/``
                                          Group-DRO settings (``group_dro``)
crt               :mod:`.retrain`         train, crt section, seed                  ``checkpoint/``
crt-dfr           :mod:`.retrain`         train, dfr section, seed, data            ``checkpoint/`` (DFR's last layer)
evaluate          :mod:`.evaluate`        model, data, evaluate section             ``metrics.json`` (group runs: with the
                                                                                    group report, ``group_report``)
report            :mod:`.report`          (always rewritten)                        ``OUT/report/``
================= ======================= ========================================= =========================================

So a re-run after changing only the training settings reuses the data, the plan and the
synthetic store, and an edit of the training code re-trains without re-generating; runs that
differ only in cRT share their training (``ce`` / ``ce_crt``). The ``fg`` rows' feedback
classifier is made by its own stage (``--stage feedback``) before generation, sharing the
``ce`` row's training folder.

Group runs (group-annotated data, see :mod:`synaug.pipeline.config`) load the validation split
with the training and test splits, fill the cells each recipe asks for, and score every model
with :func:`synaug.evaluate.groups.group_report` over the (class, group) cells of the test split,
the groups being the sensitive attribute of the fairness gaps. With the spurious benchmark's
binary target, plans and stores keep the ten item classes and every set is relabelled before
training and scoring.
"""
