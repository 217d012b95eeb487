"""Answering a saga's commands: each command id is acted on once and answered the same way.

    @service.on
    async def reserve(command: ReserveInventory, ctx: Context) -> None:
        if await answered(ctx, command):
            return                                   # a resend: its answer went out again
        ...                                          # act on it
        await answer(ctx, command, InventoryReserved(...))

The rules:

* A :class:`SagaCommand` carries a ``command_id`` the sender chooses, the same each time
  it sends that command again (after a timeout, say: ``SagaState.command_id``). The inbox
  already drops a record delivered twice; the command id also recognises a command sent
  twice, as two records.
* :func:`answer` publishes the reply and remembers it under the command id (collection
  ``_answers``) in the same unit of work, so the effect, the reply and the memory of it
  commit together. :func:`answered` finds a remembered answer and publishes it again (a
  new envelope, same content): a sender that lost the first reply hears it, and nothing
  is done twice. A command answered with nothing (fire and forget) is remembered too.
* Answers are kept as long as the service's state: prune ``_answers`` with the inbox's
  window in mind if commands are many (not done here).
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel, Field

from tidings.messages import Command, Event
from tidings.service import Collection, Context


class SagaCommand(Command, abstract=True):
    """A command a saga sends: its ``command_id`` makes a resend recognisable."""

    command_id: str = Field(min_length=1, max_length=200)


class Answer(BaseModel):
    command: str  # the command's type
    reply_class: str | None = None  # module:qualname of the reply (None: no reply)
    reply: dict[str, Any] | None = None


ANSWERS: Collection[Answer] = Collection("_answers", Answer)


async def answered(ctx: Context, command: SagaCommand) -> bool:
    """Whether ``command.command_id`` was answered before; if so its answer is published
    again and the caller must do nothing more."""
    found = await ctx.get(ANSWERS, command.command_id)
    if found is None:
        return False
    if found.command != command.message_info.type:
        raise ValueError(
            f"command id {command.command_id!r} was used by a {found.command} before, "
            f"not this {command.message_info.type}: a sender must not reuse ids across commands"
        )
    if found.reply_class is not None and found.reply is not None:
        ctx.publish(_reply_type(found.reply_class).model_validate(found.reply))
    return True


async def answer(ctx: Context, command: SagaCommand, reply: Event | None) -> None:
    """Publish ``reply`` (if any) and remember it as the answer to ``command``.

    The answer must not exist yet (expected version 0): two deliveries of one command id
    handled at once (a resend after a timeout, competing members on a queue broker) both
    found no answer, and only one of them may commit what it did. The other's unit of
    work fails with ConcurrencyConflict, is retried, and then finds this answer."""
    cls = None if reply is None else type(reply)
    if reply is not None:
        ctx.publish(reply)
    await ctx.put(
        ANSWERS,
        command.command_id,
        Answer(
            command=command.message_info.type,
            reply_class=None if cls is None else f"{cls.__module__}:{cls.__qualname__}",
            reply=None if reply is None else reply.model_dump(mode="json"),
        ),
        expected_version=0,
    )


def _reply_type(path: str) -> type[Event]:
    module, _, name = path.partition(":")
    found = getattr(importlib.import_module(module), name, None)
    if not (isinstance(found, type) and issubclass(found, Event)):
        raise LookupError(f"the remembered reply class {path} is no Event any more")
    return found
