"""The stages of a validation run, one module each, in the order the runner calls them:

``data`` (cohort or manifest, then the subjects on the model grid) → ``tasks`` (labels and
ground-truth masks) → ``train`` (train or load one model per task) → ``ground_truth`` (does the
model use the ground truth?) → ``attribute`` (attribute + score, chunk by chunk) → ``randomize``
(model-parameter randomization) → results and report (:mod:`neuroxai.protocol.verdict`,
:mod:`neuroxai.protocol.figures_input`, :mod:`neuroxai.protocol.export`).

A stage module holds its key (a hash of every input, see :mod:`neuroxai.protocol.rundir`), its
run and its load: a finished stage is read back, never recomputed.
"""
