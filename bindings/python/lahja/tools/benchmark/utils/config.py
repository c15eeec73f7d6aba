from typing import Tuple

from lahja import ConnectionConfig


def create_consumer_endpoint_name(id: int) -> str:
    return "consumer_" + str(id)


def create_consumer_endpoint_configs(num_processes: int) -> Tuple[ConnectionConfig, ...]:
    names = map(create_consumer_endpoint_name, range(num_processes))
    return tuple(ConnectionConfig.from_name(name) for name in names)
