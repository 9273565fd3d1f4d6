"""jaxdrop's experiments: the over-fitting tutorials reproduced with the library, one script each.

``experiments/eN_*.py`` reads top to bottom like the tutorial it reproduces,
down to its section of the report. What the scripts share sits below them:
:mod:`experiments.errors`, :mod:`experiments.files`, :mod:`experiments.data`,
:mod:`experiments.config` (options), :mod:`experiments.records`,
:mod:`experiments.plots`, :mod:`experiments.run_folder`,
:mod:`experiments.runner` (training through :mod:`jaxdrop.training`) and
:mod:`experiments.command_line` (a script's command line). Above them:
:mod:`experiments.registry` (the scripts by name), :mod:`experiments.reproduce`
(the report), :mod:`experiments.replay` and :mod:`experiments.cli`
(``python -m experiments``). Not installed with the library: run it from the
repository's root.
"""
