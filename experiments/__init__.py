"""jaxdrop's experiments: the over-fitting tutorials reproduced with the library, one script each.

``experiments/eN_*.py`` reads top to bottom like the tutorial it reproduces;
what the scripts share sits beside them: :mod:`experiments.config` (options),
:mod:`experiments.data`, :mod:`experiments.models`, :mod:`experiments.runner`
(training through :mod:`jaxdrop.training`), :mod:`experiments.records`,
:mod:`experiments.run_folder`, :mod:`experiments.plots`,
:mod:`experiments.reproduce` (the report) and :mod:`experiments.cli`
(``python -m experiments``). Not installed with the library: run it from the
repository's root.
"""
