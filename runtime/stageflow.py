"""The stage's flow as `python -m flows.run` runs it: its body timed, plain parameters kept as is.

Imports Prefect: flows/run.py loads it after `runtime.guard.connect`, once the stage settings are in
the environment.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from prefect import Flow

from runtime.resilient import Resilient, resilient
from runtime.timing import StageClock

JSON_SCALARS = (str, int, float, bool, type(None))


def plain_json(value: object) -> bool:
    """True for str, int, float, bool and None, and lists of them (exact types, no subclasses)."""
    if type(value) in JSON_SCALARS:
        return True
    return type(value) is list and all(type(item) in JSON_SCALARS for item in value)


class StageFlow(Flow):
    """A flow whose plain JSON parameters are stored for the API as they are.

    Prefect's `serialize_parameters` imports FastAPI's `jsonable_encoder` (0.2-0.5 s in every stage)
    only to return such values unchanged; any other value still goes through it.
    """

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """The parameters as the API stores them."""
        if self.ismethod or self.isclassmethod or not all(map(plain_json, parameters.values())):
            return super().serialize_parameters(parameters)
        return {key: list(v) if type(v) is list else v for key, v in parameters.items()}


def staged(stage_flow: Flow | Resilient, clock: StageClock) -> Resilient:
    """`stage_flow` (resilient, as runtime.guard runs it) whose body marks `body_started` and
    `body_ended` on `clock`; the stage's own flow object is left as it is."""
    unit = stage_flow.unit if isinstance(stage_flow, Resilient) else stage_flow
    return resilient(timed_copy(unit, clock))


def timed_copy(unit: Flow, clock: StageClock) -> StageFlow:
    """A `StageFlow` copy of `unit` whose body marks its start and end on `clock`."""
    body = unit.fn

    @functools.wraps(body)
    def timed(*args: Any, **kwargs: Any) -> Any:
        clock.mark("body_started")
        try:
            return body(*args, **kwargs)
        finally:
            clock.mark("body_ended")

    flow_copy = copy.copy(unit)
    flow_copy.__class__ = StageFlow  # the same flow; only serialize_parameters differs
    flow_copy.fn = timed
    return flow_copy
