"""
The Python package on the bus, beside what plain asyncio does on the same
machine, in one run:

- stream: a driver broadcasting N events (an object of three fields, as the
  seeds' benchmark), yielding to the loop after each, to C consumer
  processes that stream them; events/s at the driver and each consumer;
- rtt: sequential request round trips to another process; median and
  requests/s;
- floor: what lahja's benchmark loop costs with no bus at all: an empty
  asyncio turn (await asyncio.sleep(0)) and making and pickling the event;
  and a raw asyncio Unix-socket ping-pong of 64 bytes (asyncio streams).

    PYTHONPATH=build/python /usr/bin/python3 bench/python_bus.py [--events N] [--consumers C]
"""
import argparse
import asyncio
import multiprocessing
import os
import pickle
import tempfile
import time

from lahja import AsyncioEndpoint, BaseEvent, BaseRequestResponseEvent, ConnectionConfig


class Measured(BaseEvent):
    def __init__(self, payload, index, sent_at):
        self.payload = payload
        self.index = index
        self.sent_at = sent_at


class Pong(BaseEvent):
    pass


class PingRequest(BaseRequestResponseEvent[Pong]):
    @staticmethod
    def expected_response_type():
        return Pong


def consumer(d, name, n, out):
    async def main():
        async with AsyncioEndpoint.serve(ConnectionConfig.from_name(name, d)) as ep:
            t0 = None
            async for _ in ep.stream(Measured, num_events=n):
                if t0 is None:
                    t0 = time.perf_counter()
            out.put((name, n / (time.perf_counter() - t0)))

    asyncio.run(main())


async def drive(d, n, consumers):
    async with AsyncioEndpoint("driver").run() as ep:
        cfgs = [ConnectionConfig.from_name(f"c{i}", d) for i in range(consumers)]
        for c in cfgs:
            while not c.path.exists():
                await asyncio.sleep(0.005)
        await ep.connect_to_endpoints(*cfgs)
        for c in cfgs:
            await ep.wait_until_endpoint_subscribed_to(c.name, Measured)
        t0 = time.perf_counter()
        for i in range(n):
            await ep.broadcast(Measured(b"\0", i, time.time()))
            await asyncio.sleep(0)
        rate = n / (time.perf_counter() - t0)
        while len(ep._connections):
            await ep.wait_until_connections_change()
        return rate


def stream(n, consumers):
    d = tempfile.mkdtemp()
    out = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=consumer, args=(d, f"c{i}", n, out))
             for i in range(consumers)]
    for p in procs:
        p.start()
    rate = asyncio.run(drive(d, n, consumers))
    rates = sorted(out.get()[1] for _ in procs)
    for p in procs:
        p.join()
    print(f"stream  events={n} consumers={consumers} driver_rate={rate:.0f} "
          f"slowest_consumer_rate={rates[0]:.0f} deliveries_per_s={sum(rates):.0f}")


def responder(d, n):
    async def main():
        async with AsyncioEndpoint.serve(ConnectionConfig.from_name("srv", d)) as ep:
            async for q in ep.stream(PingRequest, num_events=n):
                await ep.broadcast(Pong(), q.broadcast_config())

    asyncio.run(main())


async def ask(d, n, warm):
    async with AsyncioEndpoint("asker").run() as ep:
        cfg = ConnectionConfig.from_name("srv", d)
        while not cfg.path.exists():
            await asyncio.sleep(0.005)
        await ep.connect_to_endpoints(cfg)
        await ep.wait_until_any_endpoint_subscribed_to(PingRequest)
        ts = []
        for i in range(warm + n):
            t = time.perf_counter()
            await ep.request(PingRequest())
            ts.append(time.perf_counter() - t)
        return sorted(ts[warm:])


def rtt(n):
    d = tempfile.mkdtemp()
    warm = 200
    p = multiprocessing.Process(target=responder, args=(d, warm + n))
    p.start()
    ts = asyncio.run(ask(d, n, warm))
    p.join()
    print(f"rtt     requests={n} median_us={ts[n // 2] * 1e6:.1f} "
          f"p99_us={ts[int(n * 0.99)] * 1e6:.1f} rate={n / sum(ts):.0f}")


def echo_server(path):
    async def main():
        async def serve(r, w):
            try:
                while True:
                    w.write(await r.readexactly(64))
            except asyncio.IncompleteReadError:
                pass

        server = await asyncio.start_unix_server(serve, path)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


async def ping(path, n, warm):
    while not os.path.exists(path):
        await asyncio.sleep(0.005)
    r, w = await asyncio.open_unix_connection(path)
    ts = []
    for _ in range(warm + n):
        t = time.perf_counter()
        w.write(b"x" * 64)
        await r.readexactly(64)
        ts.append(time.perf_counter() - t)
    w.close()
    return sorted(ts[warm:])


def floor(n):
    async def turns():
        t = time.perf_counter()
        for _ in range(n):
            await asyncio.sleep(0)
        return (time.perf_counter() - t) / n

    turn = asyncio.run(turns())
    t = time.perf_counter()
    for i in range(n):
        pickle.dumps(Measured(b"\0", i, time.time()), pickle.HIGHEST_PROTOCOL)
    make = (time.perf_counter() - t) / n
    path = tempfile.mkdtemp() + "/echo"
    p = multiprocessing.Process(target=echo_server, args=(path,))
    p.start()
    ts = asyncio.run(ping(path, 5000, 200))
    p.terminate()
    p.join()
    print(f"floor   asyncio_turn_us={turn * 1e6:.2f} make_and_pickle_us={make * 1e6:.2f} "
          f"driver_bound_rate={1 / (turn + make):.0f} "
          f"raw_asyncio_socket_rtt_median_us={ts[len(ts) // 2] * 1e6:.1f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=50000)
    ap.add_argument("--consumers", type=int, default=3)
    ap.add_argument("--requests", type=int, default=5000)
    args = ap.parse_args()
    floor(100000)
    stream(args.events, 1)
    stream(args.events, args.consumers)
    rtt(args.requests)


if __name__ == "__main__":
    main()
