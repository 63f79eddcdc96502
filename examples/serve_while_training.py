"""A web app that trains CartPole in the background and serves its progress.

    pip install -e ".[web]"
    python examples/serve_while_training.py --port 8080     # --port 0 picks a free port
    curl http://127.0.0.1:8080/status                       # {"steps": ..., "return": ..., "lag": ..., ...}
    curl -X POST http://127.0.0.1:8080/stop                 # finish the current update, then exit

What happens: one event loop runs both an aiohttp server and ``trainer.run()``.
The trainer never blocks the loop (its learner works in a thread), installs no
signal handlers and no loop policy, so requests are answered while it trains. A
``Progress`` object follows ``trainer.events()`` and keeps the numbers /status
reports; ``/stop`` calls ``trainer.stop()``, after which ``run()`` returns its
result and the app shuts down. The server binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import math
from typing import Any

import uvloop
from aiohttp import web

import aiorl


class Progress:
    """The state /status reports, kept up to date from the trainer's event stream."""

    def __init__(self) -> None:
        self.state = "starting"
        self.steps = 0
        self.policy_version = 0
        self.mean_return = math.nan
        self.steps_per_s = 0.0
        self.lag: aiorl.LagStats | None = None
        self.episodes = 0
        self.restarts = 0
        self.events_dropped = 0

    async def follow(self, events: aiorl.EventStream) -> None:
        """Read events until the trainer closes."""
        async for event in events:
            match event:
                case aiorl.TrainingUpdate():
                    self.state = "training" if self.state == "starting" else self.state
                    self.steps, self.policy_version = event.env_steps, event.policy_version
                    self.mean_return, self.steps_per_s, self.lag = event.mean_return, event.steps_per_s, event.lag
                case aiorl.EpisodeFinished():
                    self.episodes += 1
                case aiorl.WorkerRestarted():
                    self.restarts += 1
                case aiorl.EventsDropped():
                    self.events_dropped += event.count

    def as_json(self) -> dict[str, Any]:
        """The /status document (JSON has no NaN: no return yet is ``null``)."""
        lag = self.lag
        return {
            "state": self.state,
            "steps": self.steps,
            "policy_version": self.policy_version,
            "return": None if math.isnan(self.mean_return) else round(self.mean_return, 2),
            "steps_per_s": round(self.steps_per_s),
            "lag": None if lag is None else {"min": lag.min, "mean": round(lag.mean, 3), "max": lag.max},
            "episodes": self.episodes,
            "restarts": self.restarts,
            "events_dropped": self.events_dropped,
        }


def make_app(trainer: aiorl.Trainer, progress: Progress) -> web.Application:
    """GET /status: progress as JSON; POST /stop: end training gracefully."""

    async def status(request: web.Request) -> web.Response:
        return web.json_response(progress.as_json())

    async def stop(request: web.Request) -> web.Response:
        progress.state = "stopping"
        trainer.stop()
        return web.json_response({"state": progress.state})

    app = web.Application()
    app.router.add_get("/status", status)
    app.router.add_post("/stop", stop)
    return app


async def serve_while_training(port: int, steps: int, seed: int) -> aiorl.TrainResult:
    """Serve on 127.0.0.1:``port`` while training; return the training result."""
    trainer = aiorl.Trainer.from_preset("CartPole-v1", seed=seed, log_interval_s=3600)
    progress = Progress()
    runner = web.AppRunner(make_app(trainer, progress))  # an AppRunner installs no signal handlers
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        _, bound_port = runner.addresses[0][:2]
        print(f"serving on http://127.0.0.1:{bound_port}", flush=True)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(progress.follow(trainer.events()))  # ends when the trainer closes
            result = await trainer.run(total_steps=steps)  # starts the workers, stops them at the end
        progress.state = "done"
    finally:
        await runner.cleanup()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--steps", type=int, default=2_000_000, help="env-step budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio", help="event loop to run on")
    args = parser.parse_args()

    run = uvloop.run if args.loop == "uvloop" else asyncio.run
    result = run(serve_while_training(args.port, args.steps, args.seed))
    how = "stopped" if result.stopped else "finished"
    print(
        f"{how} after {result.env_steps:,d} steps ({result.updates} updates), mean return "
        f"{result.mean_return:.1f}, {result.worker_restarts} worker restarts",
        flush=True,
    )


if __name__ == "__main__":
    main()
