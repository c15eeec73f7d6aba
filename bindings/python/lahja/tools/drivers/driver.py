"""A driver: an initializer, then actions, each with a deadline."""
import functools
from typing import Sequence

from ..engine import Driver, EngineAPI
from .actions import Action, AsyncAction, SyncAction
from .initializers import Initializer


async def drive(
    engine: EngineAPI, initializer: Initializer, actions: Sequence[Action],
    action_timeout: int = 5,
) -> None:
    """Makes the endpoint and runs the actions in order, each async one
    within action_timeout seconds (TimeoutError naming the action)."""
    async with initializer(engine) as endpoint:
        for index, action in enumerate(actions):
            if isinstance(action, AsyncAction):
                try:
                    await engine.run_with_timeout(action, engine, endpoint,
                                                  timeout=action_timeout)
                except TimeoutError as err:
                    raise TimeoutError(
                        f"[{endpoint}] Timeout running action #{index}:{action}") from err
            elif isinstance(action, SyncAction):
                action(engine, endpoint)
            else:
                raise TypeError(f"Unknown action type: {action!r}")


class _Driver:
    """A driver made by driver(): called with an engine, it drives."""

    def __init__(self, initializer: Initializer, *actions: Action) -> None:
        functools.update_wrapper(self, drive)
        self.initializer = initializer
        self.actions = actions

    async def __call__(self, engine: EngineAPI) -> None:
        await drive(engine, self.initializer, self.actions)

    def __str__(self) -> str:
        return " > ".join(["<Driver " + str(self.initializer)]
                          + [str(a) for a in self.actions]) + ">"


def driver(initializer: Initializer, *actions: Action) -> Driver:
    """A driver: one initializer followed by any number of actions."""
    return _Driver(initializer, *actions)
