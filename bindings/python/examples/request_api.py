"""
The request API across two processes, as in lahja's examples.

A server process answers every DeliverSomethingRequest with "Yay"; the
client connects and asks --rounds times (default: without end), printing
"Requesting" and "Got answer: Yay" each time.

    python3 request_api.py [--rounds N] [--interval S]
"""
import argparse
import asyncio
import multiprocessing

from lahja import AsyncioEndpoint, BaseEvent, BaseRequestResponseEvent, ConnectionConfig


class DeliverSomethingResponse(BaseEvent):
    def __init__(self, payload):
        super().__init__()
        self.payload = payload


class DeliverSomethingRequest(BaseRequestResponseEvent[DeliverSomethingResponse]):
    @staticmethod
    def expected_response_type():
        return DeliverSomethingResponse


async def serve(rounds):
    async with AsyncioEndpoint.serve(ConnectionConfig.from_name("bjson")) as server:
        async for request in server.stream(DeliverSomethingRequest, num_events=rounds):
            await server.broadcast(
                DeliverSomethingResponse("Yay"), request.broadcast_config()
            )
        # The last answer is delivered before the endpoint stops.


async def ask(rounds, interval):
    async with AsyncioEndpoint("requester").run() as client:
        await client.connect_to_endpoints(ConnectionConfig.from_name("bjson"))
        await client.wait_until_any_endpoint_subscribed_to(DeliverSomethingRequest)
        n = 0
        while rounds is None or n < rounds:
            print("Requesting", flush=True)
            result = await client.request(DeliverSomethingRequest())
            print(f"Got answer: {result.payload}", flush=True)
            await asyncio.sleep(interval)
            n += 1


def run_server(rounds):
    asyncio.run(serve(rounds))


def run_client(rounds, interval):
    asyncio.run(ask(rounds, interval))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()
    multiprocessing.set_start_method("spawn")
    server = multiprocessing.Process(target=run_server, args=(args.rounds,))
    server.start()
    client = multiprocessing.Process(target=run_client, args=(args.rounds, args.interval))
    client.start()
    client.join()
    server.join()


if __name__ == "__main__":
    main()
