"""Sweeps: many `dlcli train` runs from one command, searched by Optuna.

The package sits above `training`: every trial is an ordinary `dlcli train` in a process of
its own, writing an ordinary run folder under `runs/sweeps/<id>/trials/<NNNN>-<name>/`, so a
crash or out-of-memory in one trial fails that trial only. The sweep folder itself holds only
the definition (`sweep.yaml`), the Optuna storage and summaries.

Modules, lowest first: `space` (the search space syntax, no Optuna), `spec` (the sweep's
definition, its folder and the validation of every key and value against the config),
`study` (every Optuna call, so its API can move between major versions in one place),
`trial` (the callback inside a trial's process), `worker` (launching and watching trials),
`results` (summary rows, summary.csv, best.yaml, the listing for `dlcli runs`), `display`
(the live table), `plots`, and `session` (a sweep from start to end: creating or reopening it,
the MLflow parent run around its trials, the files written when it stops).
"""
