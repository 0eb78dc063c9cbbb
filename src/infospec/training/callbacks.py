"""Training-framework callbacks: thin shells over :class:`~infospec.training.monitor.Monitor`.

* :class:`InfospecLightningCallback`, a PyTorch Lightning ``Callback`` (``lightning.pytorch``,
  or the older ``pytorch_lightning`` package when only that one is installed);
* :class:`InfospecTrainerCallback`, a Hugging Face ``transformers.TrainerCallback``.

Each takes either a ready :class:`Monitor` or the keyword arguments of one (created on the
model when training starts), tells it of every optimizer step, hands its measures to the
framework's log, and removes its hooks when training ends. Under a ``torch.distributed``
process group of more than one process (DDP) the monitor it creates pools the activations
of all ranks (``Monitor(distributed=True)``), since the framework calls it on every rank;
pass ``distributed=False`` to keep per-rank measures. The frameworks are optional
extras: they are imported when a callback class is first used
(``pip install 'infospec[lightning]'``, or ``transformers`` with ``accelerate``).

Examples
--------
PyTorch Lightning::

    >>> import lightning as L  # doctest: +SKIP
    >>> from infospec.training.callbacks import InfospecLightningCallback
    >>> callback = InfospecLightningCallback(every=100, log_path="spectra.jsonl")  # doctest: +SKIP
    >>> L.Trainer(max_epochs=3, callbacks=[callback]).fit(module, loader)  # doctest: +SKIP
    >>> callback.monitor.history()  # doctest: +SKIP

Hugging Face Trainer::

    >>> from transformers import Trainer  # doctest: +SKIP
    >>> from infospec.training.callbacks import InfospecTrainerCallback
    >>> callback = InfospecTrainerCallback(every=100, layers=r"attention|mlp")  # doctest: +SKIP
    >>> Trainer(model, args, train_dataset=data, callbacks=[callback]).train()  # doctest: +SKIP
    >>> [k for k in trainer.state.log_history[-1] if k.startswith("infospec/")]  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .._errors import InputError
from .monitor import Monitor, _process_group_size

# Both classes are built on first access (module __getattr__), importing their framework then.
__all__ = ["InfospecLightningCallback", "InfospecTrainerCallback"]  # noqa: F822

_MONITOR_OPTIONS = tuple(
    p for p in inspect.signature(Monitor.__init__).parameters if p not in ("self", "model")
)


class _MonitorShell:
    """What both callbacks share: holding a Monitor, or the options to create one."""

    def _init_shell(self, owner: str, monitor: Monitor | None, options: dict[str, Any]) -> None:
        if monitor is not None and not isinstance(monitor, Monitor):
            raise InputError(
                f"The 'monitor' argument of {owner} must be an infospec Monitor or None; got "
                f"{type(monitor).__name__}. Pass Monitor options as keyword arguments instead."
            )
        unknown = sorted(set(options) - set(_MONITOR_OPTIONS))
        if unknown:
            raise InputError(
                f"{owner} got unknown Monitor option(s) {', '.join(map(repr, unknown))}; "
                f"the options are {', '.join(_MONITOR_OPTIONS)}."
            )
        if monitor is not None and options:
            raise InputError(
                f"{owner} takes either a Monitor or Monitor options, not both; got a Monitor "
                f"and {', '.join(map(repr, sorted(options)))}."
            )
        self.monitor = monitor
        self.monitor_options = options
        self._created = False  # whether self.monitor was built here from the options

    def _start(self, model: Any) -> Monitor:
        given = self.monitor is not None and not self._created
        if given or (self.monitor is not None and self.monitor.model is model):
            return self.monitor.attach()  # the same model again: go on with its history
        if model is None:
            raise InputError(
                "The training framework passed no model to the infospec callback; "
                "create the Monitor yourself and pass it as monitor=Monitor(model)."
            )
        options = dict(self.monitor_options)
        if "distributed" not in options:
            # a framework runs its callbacks on every rank, so pooling is safe here
            options["distributed"] = _process_group_size() > 1
        self.monitor = Monitor(model, **options)
        self._created = True
        return self.monitor

    def _stop(self) -> None:
        if self.monitor is not None:
            self.monitor.remove()


def _lightning_callback_base() -> type:
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback
        except ImportError as exc:
            raise ImportError(
                "InfospecLightningCallback needs PyTorch Lightning: pip install "
                "'infospec[lightning]' (or lightning)."
            ) from exc
    return Callback


def _make_lightning_callback() -> type:
    base = _lightning_callback_base()

    class InfospecLightningCallback(_MonitorShell, base):
        """A PyTorch Lightning callback that runs a :class:`Monitor` during ``fit``.

        On fit start it creates the monitor on the ``LightningModule`` (or re-attaches the
        one given, or the one it created for the same module in an earlier fit); after
        each optimizer step (``on_train_batch_end`` once Lightning's ``global_step`` has
        advanced, so gradient accumulation counts optimizer steps) it calls
        :meth:`Monitor.step` with ``trainer.global_step`` and sends the measures to every
        logger of the trainer (``logger.log_metrics``); on fit end, or on an exception, it
        removes the hooks. The history stays in ``callback.monitor``.

        Parameters
        ----------
        monitor : Monitor, optional
            A monitor already built on the model; otherwise one is created at fit start.
        **monitor_options
            Keyword arguments of :class:`Monitor` (``every``, ``layers``, ``log_path``...).

        Raises
        ------
        InputError
            If ``monitor`` is not a Monitor, an option is not one of Monitor's, or both a
            monitor and options are given.
        ImportError
            If neither ``lightning`` nor ``pytorch_lightning`` is installed.
        """

        def __init__(self, monitor: Monitor | None = None, **monitor_options: Any) -> None:
            base.__init__(self)
            self._init_shell("InfospecLightningCallback", monitor, monitor_options)
            self._last_step: int | None = None

        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            self._start(pl_module)
            self._last_step = int(trainer.global_step)

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            step = int(trainer.global_step)
            if self.monitor is None or step == self._last_step:
                return  # no optimizer step since the last batch (gradient accumulation)
            self._last_step = step
            metrics = self.monitor.step(step)
            if metrics:
                for logger in getattr(trainer, "loggers", None) or []:
                    logger.log_metrics(metrics, step=step)

        def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
            self._stop()

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            self._stop()

    return InfospecLightningCallback


def _make_trainer_callback() -> type:
    try:
        from transformers import TrainerCallback
    except ImportError as exc:
        raise ImportError(
            "InfospecTrainerCallback needs Hugging Face transformers: pip install "
            "transformers accelerate."
        ) from exc

    class InfospecTrainerCallback(_MonitorShell, TrainerCallback):
        """A Hugging Face ``TrainerCallback`` that runs a :class:`Monitor` during training.

        On ``on_train_begin`` it creates the monitor on the model the Trainer passes (or
        re-attaches the one given, or the one it created for the same model in an earlier
        run); on ``on_step_end`` (after each optimizer step) it calls
        :meth:`Monitor.step` with ``state.global_step`` and, when the step was measured,
        appends the measures with their ``"step"`` to ``state.log_history`` (the Trainer's
        log; give the Monitor a ``writer`` for TensorBoard); on ``on_train_end`` it removes
        the hooks. The history stays in ``callback.monitor``.

        Parameters
        ----------
        monitor : Monitor, optional
            A monitor already built on the model; otherwise one is created at train begin.
        **monitor_options
            Keyword arguments of :class:`Monitor` (``every``, ``layers``, ``log_path``...).

        Raises
        ------
        InputError
            If ``monitor`` is not a Monitor, an option is not one of Monitor's, or both a
            monitor and options are given.
        ImportError
            If ``transformers`` is not installed.
        """

        def __init__(self, monitor: Monitor | None = None, **monitor_options: Any) -> None:
            self._init_shell("InfospecTrainerCallback", monitor, monitor_options)

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._start(kwargs.get("model"))

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.monitor is None:
                return
            metrics = self.monitor.step(int(state.global_step))
            if metrics:
                state.log_history.append({**metrics, "step": int(state.global_step)})

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._stop()

    return InfospecTrainerCallback


_FACTORIES: dict[str, Callable[[], type]] = {
    "InfospecLightningCallback": _make_lightning_callback,
    "InfospecTrainerCallback": _make_trainer_callback,
}


def __getattr__(name: str) -> type:
    """Build a callback class on first access, importing its framework only then."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cls = factory()
    cls.__module__, cls.__qualname__ = __name__, name
    globals()[name] = cls
    return cls
