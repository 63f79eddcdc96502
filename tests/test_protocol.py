"""Control-plane frames survive a socketpair read with asyncio streams; EOF is reported."""

from __future__ import annotations

import asyncio
import socket

import pytest

from aiorl import protocol


@pytest.mark.asyncio
async def test_frames_round_trip_in_order():
    left, right = socket.socketpair()
    _, writer = await asyncio.open_connection(sock=left)
    reader, other_writer = await asyncio.open_connection(sock=right)
    sent = [
        protocol.Hello(worker_id=3, pid=42),
        protocol.SlotReady(slot=5, policy_version=7, env_steps=64, episode_returns=[1.5], episode_lengths=[9]),
        protocol.Grant(slot=1),
        protocol.Stop(),
    ]
    for message in sent:
        protocol.send(writer, message)
    await writer.drain()
    received = [await protocol.receive(reader) for _ in sent]
    assert received == sent
    writer.close()
    with pytest.raises(EOFError):
        await protocol.receive(reader)
    other_writer.close()
