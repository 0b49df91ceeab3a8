"""Project `task` and `flow` decorators: calling one never loses its computation to the API.

A drop-in for Prefect's decorators (same options). The function stores its return value before
the engine reports the state; if orchestration then fails because the API is unreachable, the
stored value is returned (or, when the body never started, the function runs directly). Once
offline (runtime/monitor.py), calls go straight to the function. Errors of the body itself are
raised as usual.

    from runtime.resilient import task

    @task(name="train-dense", cache_policy=NO_CACHE)
    def train_dense(...): ...
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar

import prefect

from runtime.monitor import (
    absorb_api_error,
    is_api_error,
    is_offline,
    keep_final_state,
    keep_stranded_task,
    keep_task_state,
    keep_unrecorded_task,
)

P = ParamSpec("P")
R = TypeVar("R")
ENGINE_OPTIONS = ("return_state", "wait_for")


@dataclass
class _Capture:
    """What one call's function did, seen from outside the engine."""

    owner: object
    started: bool = False
    returned: bool = False
    value: Any = None
    error: BaseException | None = None
    flow_run: tuple[str, str] | None = None
    task_run_id: str | None = None


_ACTIVE: ContextVar[_Capture | None] = ContextVar("dc_resilient_capture", default=None)


def _run_ids(capture: _Capture) -> None:
    """Note the flow run and task run the function runs in."""
    from prefect.context import FlowRunContext, TaskRunContext

    task_ctx = TaskRunContext.get()
    flow_ctx = FlowRunContext.get()
    capture.task_run_id = str(task_ctx.task_run.id) if task_ctx is not None else None
    if flow_ctx is not None and flow_ctx.flow_run is not None:
        capture.flow_run = (str(flow_ctx.flow_run.id), flow_ctx.flow.name)


class Resilient(Generic[P, R]):
    """A Prefect task or flow whose call survives an unreachable API; other attributes pass on."""

    def __init__(self, unit: prefect.Task[P, R] | prefect.Flow[P, R]) -> None:
        self.unit = unit
        self._engine = copy.copy(unit)
        self._engine.fn = self._recording(unit.fn)

    def __getattr__(self, name: str) -> Any:
        if "unit" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["unit"], name)

    def __repr__(self) -> str:
        return f"Resilient({self.unit!r})"

    def _recording(self, fn: Callable[P, R]) -> Callable[P, R]:
        """`fn`, storing its outcome in this call's capture before the engine sees it."""

        @functools.wraps(fn)
        def body(*args: Any, **kwargs: Any) -> Any:
            capture = _ACTIVE.get()
            if capture is None or capture.owner is not self:
                return fn(*args, **kwargs)
            capture.started, capture.error = True, None
            _run_ids(capture)
            try:
                capture.value = fn(*args, **kwargs)
            except BaseException as exc:
                capture.error = exc
                raise
            capture.returned = True
            return capture.value

        return body

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run through the Prefect engine; without the API, through the function alone."""
        if is_offline():
            return self._direct(args, kwargs)
        capture = _Capture(owner=self)
        token = _ACTIVE.set(capture)
        try:
            result = self._engine(*args, **kwargs)
        except Exception as exc:
            return self._settle(capture, exc, args, kwargs)
        finally:
            _ACTIVE.reset(token)
        if capture.started and is_offline():  # the engine's state events were likely lost
            self._keep_state(capture, "COMPLETED" if capture.returned else "FAILED")
        return result

    def _settle(self, capture: _Capture, exc: Exception, args: tuple, kwargs: dict) -> Any:
        """After the engine raised: the body's own error, its stored value, or a direct run."""
        if capture.error is not None:
            if is_api_error(exc):
                self._keep_state(capture, "FAILED", describe_error(capture.error))
            raise capture.error
        if not absorb_api_error(exc) or (capture.started and not capture.returned):
            raise exc
        if not capture.started:  # the engine may have recorded the run (Pending) before failing
            return self._direct(args, kwargs, stranded=True)
        self._keep_state(capture, "COMPLETED")
        return _as_requested(capture.value, kwargs)

    def _keep_state(self, capture: _Capture, state: str, message: str = "") -> None:
        """Keep the final state the engine could not report, for the catch-up."""
        if isinstance(self.unit, prefect.Flow) and capture.flow_run is not None:
            keep_final_state(capture.flow_run, state, message)
        elif capture.task_run_id is not None:
            keep_task_state(capture.task_run_id, state)

    def _direct(self, args: tuple, kwargs: dict, stranded: bool = False) -> Any:
        """Call the function itself, noting the task as unrecorded or, when its engine failed
        after it may have created the task run (`stranded`), the state that record must end in."""
        plain = {k: v for k, v in kwargs.items() if k not in ENGINE_OPTIONS}
        if not isinstance(self.unit, prefect.Task):
            return _as_requested(self.unit.fn(*args, **plain), kwargs)
        name = run_name(self.unit, args, plain)
        if not stranded:
            keep_unrecorded_task(name)
            return _as_requested(self.unit.fn(*args, **plain), kwargs)
        try:
            value = self.unit.fn(*args, **plain)
        except BaseException:
            keep_stranded_task(self.unit.name, name, "FAILED")
            raise
        keep_stranded_task(self.unit.name, name, "COMPLETED")
        return _as_requested(value, kwargs)


def describe_error(exc: BaseException) -> str:
    """`ValueError: bad input` (a state message)."""
    return f"{type(exc).__name__}: {exc}"


def _as_requested(value: Any, kwargs: dict) -> Any:
    """The value, or a Completed state holding it when the caller asked for `return_state`."""
    if kwargs.get("return_state"):
        from prefect.states import Completed

        return Completed(data=value)
    return value


def run_name(unit: prefect.Task, args: tuple, kwargs: dict) -> str:
    """The task run's name from its `task_run_name` template, else the task's name."""
    from prefect.utilities.callables import get_call_parameters

    template = unit.task_run_name
    if not isinstance(template, str):
        return unit.name
    try:
        return template.format(**get_call_parameters(unit.fn, args, kwargs))
    except (KeyError, IndexError, TypeError, ValueError):
        return unit.name


def resilient(unit: prefect.Task[P, R] | prefect.Flow[P, R] | Resilient[P, R]) -> Resilient[P, R]:
    """Wrap an existing Prefect task or flow (a wrapped one is returned as is)."""
    return unit if isinstance(unit, Resilient) else Resilient(unit)


def task(__fn: Callable[P, R] | None = None, **options: Any) -> Any:
    """`prefect.task` with the same options, returning a `Resilient` task."""
    if __fn is None:
        return functools.partial(task, **options)
    return Resilient(prefect.task(__fn, **options))


def flow(__fn: Callable[P, R] | None = None, **options: Any) -> Any:
    """`prefect.flow` with the same options, returning a `Resilient` flow."""
    if __fn is None:
        return functools.partial(flow, **options)
    return Resilient(prefect.flow(__fn, **options))
