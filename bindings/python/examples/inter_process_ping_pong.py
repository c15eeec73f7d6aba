"""
Two processes chatting over the bus, as in lahja's quickstart.

proc1 serves endpoint "e1" and takes SecondThingHappened with a
subscription; proc2 serves "e2", connects to e1, and takes
FirstThingHappened both with a subscription and from a stream.  Each
waits until the other subscribes to its event, then says hello and
broadcasts --rounds times (default: without end), --interval seconds
apart.  The sockets are in the current directory, as lahja's.

    python3 inter_process_ping_pong.py [--rounds N] [--interval S]
"""
import argparse
import asyncio
import logging
import multiprocessing

from lahja import AsyncioEndpoint, BaseEvent, ConnectionConfig


class BaseExampleEvent(BaseEvent):
    def __init__(self, payload):
        super().__init__()
        self.payload = payload


class FirstThingHappened(BaseExampleEvent):
    pass


class SecondThingHappened(BaseExampleEvent):
    pass


def setup_logging():
    logging.basicConfig(
        level=logging.INFO,
        format="%(levelname)s %(asctime)s %(message)s",
        datefmt="%m-%d %H:%M:%S",
    )


async def chatter(endpoint, name, event_class, rounds, interval):
    await endpoint.wait_until_any_endpoint_subscribed_to(event_class)
    n = 0
    while rounds is None or n < rounds:
        logging.info("Hello from %s", name)
        await endpoint.broadcast(event_class(f"Hit from {name}"))
        await asyncio.sleep(interval)
        n += 1


class Counter:
    """Counts what a handler got, until `rounds` of them."""

    def __init__(self, rounds):
        self.rounds = rounds
        self.n = 0
        self.all_in = asyncio.Event()

    def got(self):
        self.n += 1
        if self.rounds is not None and self.n >= self.rounds:
            self.all_in.set()


async def proc1_worker(rounds, interval):
    async with AsyncioEndpoint.serve(ConnectionConfig.from_name("e1")) as server:
        seconds = Counter(rounds)

        def on_second(event):
            logging.info("Received via SUBSCRIBE API in proc1: %s", event.payload)
            seconds.got()

        server.subscribe(SecondThingHappened, on_second)
        await chatter(server, "proc1", FirstThingHappened, rounds, interval)
        # Stays until it has all of proc2's; its own are delivered before
        # the endpoint stops.
        await seconds.all_in.wait()


async def proc2_worker(rounds, interval):
    config = ConnectionConfig.from_name("e1")
    async with AsyncioEndpoint.serve(ConnectionConfig.from_name("e2")) as server:
        await server.connect_to_endpoints(config)
        server.subscribe(
            FirstThingHappened,
            lambda event: logging.info(
                "Received via SUBSCRIBE API in proc2: %s", event.payload
            ),
        )
        streaming = asyncio.ensure_future(stream_first(server, rounds))
        await chatter(server, "proc2", SecondThingHappened, rounds, interval)
        await streaming


async def stream_first(server, rounds):
    async for event in server.stream(FirstThingHappened, num_events=rounds):
        logging.info("Received via STREAM API in proc2: %s", event.payload)


def run(worker, rounds, interval):
    setup_logging()
    asyncio.run(worker(rounds, interval))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    multiprocessing.set_start_method("spawn")
    p1 = multiprocessing.Process(target=run, args=(proc1_worker, args.rounds, args.interval))
    p1.start()
    p2 = multiprocessing.Process(target=run, args=(proc2_worker, args.rounds, args.interval))
    p2.start()
    p1.join()
    p2.join()


if __name__ == "__main__":
    main()
