"""`dlcli train`: one experiment, or its resumption, from start to run folder."""

from __future__ import annotations

import gc
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import RunsDir, SetOption, error_console, fail, handle_errors, load_experiment, located, stdout_console

app = typer.Typer()


@app.command()
@handle_errors
def train(
    config: Annotated[
        Optional[Path], typer.Argument(help="Experiment YAML file (or a run folder's config.yaml).", show_default=False)
    ] = None,
    set_: SetOption = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the resolved config and exit.")] = False,
    resume: Annotated[
        Optional[Path], typer.Option("--resume", help="Continue the run in this folder from its last complete epoch.")
    ] = None,
    runs_dir: RunsDir = Path("runs"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final result.")] = False,
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc",
            help="Train data-parallel with N processes on this machine (via torch's elastic launcher).",
            min=1,
        ),
    ] = 1,
    sweep_trial: Annotated[
        Optional[Path],
        typer.Option(
            "--sweep-trial",
            hidden=True,
            help="(dlcli sweep's own use) Train in exactly this prepared trial folder, continuing it if it holds a checkpoint, and report to its sweep.",
        ),
    ] = None,
) -> None:
    """Train a model from an experiment file.

    Trains, evaluates on the test split and keeps everything (config, metrics, checkpoints,
    results, plots) in a new run folder, whose path is the last line printed.
    """
    from ..config import dump_config

    if (config is None) == (resume is None):
        fail(
            "give either a CONFIG file or --resume RUN_FOLDER (not both, not neither). "
            "For example: dlcli train configs/mnist_cnn.yaml"
        )
    if sweep_trial is not None:  # a trial of `dlcli sweep`, in the folder the sweep prepared
        from ..sweep.trial import trial_run

        trial_dir, sweep_callback = trial_run(sweep_trial)
        cfg = load_experiment(config, set_)
        with located(cfg):
            _run_training(cfg, runs_dir, trial_dir, quiet, extra_callbacks=[sweep_callback])
        sweep_callback.finish()
        return
    resume_dir = None
    if resume is not None:
        from ..plan import check_resume_overrides, load_run_config
        from ..rundir import resolve_run

        resume_dir = resolve_run(resume, runs_dir)
        cfg = load_run_config(resume_dir, tuple(set_ or ()))
        check_resume_overrides(resume_dir, tuple(set_ or ()))
    else:
        cfg = load_experiment(config, set_)
    if print_config:
        sys.stdout.write(dump_config(cfg))
        return
    if nproc > 1:
        from ..distributed import launch
        from ..training import check_world_size

        with located(cfg):
            check_world_size(cfg, nproc)  # before starting any process: one clear message

        raise typer.Exit(launch(nproc, sys.argv))
    with located(cfg):
        _run_training(cfg, runs_dir, resume_dir, quiet)


class _StartupCollectionsSkipped:
    """Python's cyclic garbage collector paused from the start of `dlcli train` until training
    begins, then the objects made so far (modules, the data, the model) frozen out of its
    scans: importing torch, pandas and torch._dynamo would otherwise run several full
    collections of a growing heap that find almost nothing (benchmarks/RESULTS.md), and a full
    collection during training no longer walks every object of every module. Undone when the
    run ends."""

    def __enter__(self) -> _StartupCollectionsSkipped:
        self.was_enabled = gc.isenabled()
        gc.disable()
        return self

    def training_begins(self) -> None:
        gc.freeze()
        if self.was_enabled:
            gc.enable()

    def __exit__(self, *exc) -> None:
        gc.unfreeze()  # a process that goes on (a test, a notebook) collects them again
        if self.was_enabled:
            gc.enable()


def _run_training(
    cfg, runs_dir: Path, resume_dir: Optional[Path], quiet: bool, extra_callbacks: tuple | list = ()
) -> None:
    with _StartupCollectionsSkipped() as collections:
        from ..engine import Callback  # imports torch: inside, with the collector paused

        class WhenTrainingBegins(Callback):
            def on_train_begin(self, trainer) -> None:
                collections.training_begins()

        _train_with_signals(cfg, runs_dir, resume_dir, quiet, [WhenTrainingBegins(), *extra_callbacks])


def _train_with_signals(
    cfg, runs_dir: Path, resume_dir: Optional[Path], quiet: bool, extra_callbacks: tuple | list = ()
) -> None:
    from ..distributed import distributed_from_env
    from ..engine import RunControl
    from ..errors import DlcliError, TrainingInterrupted
    from ..rundir import release_run_locks
    from ..training import train as run_train

    console = stdout_console()
    control = RunControl()
    dist = distributed_from_env()

    def request_stop(signum, frame):
        control.signal = signal.Signals(signum).name
        # A second Ctrl-C stops at once (the run folder still holds the last complete epoch).
        signal.signal(signum, signal.SIG_DFL)

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        outcome = run_train(
            cfg,
            runs_dir=runs_dir,
            console=console,
            resume_dir=resume_dir,
            control=control,
            quiet=quiet,
            command=sys.argv,
            dist=dist,
            extra_callbacks=extra_callbacks,
        )
        dist.close(wait_for_others=True)
    except TrainingInterrupted as exc:
        if exc.failure:
            fail(f"data-parallel training stopped because {exc.failure} (run folder: {exc.run_dir})", 1)
        if dist.is_main:
            error_console().print(
                f"Interrupted by {exc.signal_name}; the run folder keeps every complete epoch. "
                f"Resume with: dlcli train --resume {exc.run_dir}"
            )
        raise typer.Exit(exc.exit_code) from None
    except DlcliError as exc:
        if dist.world_size > 1:
            dist.abort_others(exc.full_message())
        raise
    except BaseException as exc:
        if dist.world_size > 1 and not isinstance(exc, (SystemExit, typer.Exit)):
            dist.abort_others(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        dist.close()
        release_run_locks()  # the run folder is free for the next command, in this process too
    if not dist.is_main:
        return
    results = "  ".join(f"{k}: {v:.4f}" for k, v in outcome.results.items() if isinstance(v, float))
    if outcome.best.get("value") is not None:
        best = f"best {outcome.best['monitor']}: {outcome.best['value']:.4f} (epoch {outcome.best['epoch']})"
        results = f"{results}  {best}" if results else best
    if results:
        console.print(results)
    if isinstance(outcome.results.get("baseline"), str):  # a time series: the model against the naive forecast
        console.print(outcome.results["baseline"], highlight=False)
    if outcome.compiled:
        console.print(outcome.compiled, highlight=False)
    console.print(f"Run folder: {outcome.run_dir}")
