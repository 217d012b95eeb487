"""``tidings topics`` and ``tidings lag``: what a broker holds, and how far each group is."""

from __future__ import annotations

import typer
from rich.table import Table

from tidings.cli.cdc import report_connectors
from tidings.cli.common import Broker, console, opened_transport, run_async


def topics(broker: str = Broker) -> None:
    """Topics with their partitions and end offsets."""

    @run_async
    async def main() -> None:
        async with opened_transport(broker) as transport:
            infos = await transport.topics()
        table = Table("topic", "partitions", "end offsets", "records")
        for info in infos:
            if not transport.capabilities.offsets:  # a queue broker: no log positions
                table.add_row(info.name, str(info.partitions), "-", "-")
                continue
            offsets = " ".join(f"{p}:{o}" for p, o in sorted(info.end_offsets.items()))
            table.add_row(
                info.name, str(info.partitions), offsets, str(sum(info.end_offsets.values()))
            )
        console.print(table)
        if not transport.capabilities.offsets:
            console.print(f"end offsets are not supported on {transport.platform} (queues)")

    main()


def lag(
    broker: str = Broker,
    group: str = typer.Option("", help="Only this consumer group"),
    connect_url: str = typer.Option(
        "",
        "--connect",
        envvar="TIDINGS_CONNECT_URL",
        help="Also Kafka Connect's connectors (change data capture): exit 1 if one failed",
    ),
) -> None:
    """Consumer lag per group and partition (end offset minus committed offset; on a
    broker without offsets, such as RabbitMQ, the records waiting in each queue). A failed
    Debezium connector lags for ever without a record to show it, so ``--connect`` lists
    the connectors' states too."""

    @run_async
    async def main() -> None:
        async with opened_transport(broker) as transport:
            if not transport.capabilities.offsets:
                table = Table("group", "topic", "partition", "waiting")
                for name in await transport.groups():
                    if group and name != group:
                        continue
                    for (topic, partition), count in sorted((await transport.queued(name)).items()):
                        table.add_row(name, topic, str(partition), str(count))
                console.print(table)
                console.print(f"lag on {transport.platform}: messages waiting in each queue")
                return
            ends = {
                (t.name, p): o for t in await transport.topics() for p, o in t.end_offsets.items()
            }
            table = Table("group", "topic", "partition", "committed", "end", "lag")
            for name in await transport.groups():
                if group and name != group:
                    continue
                for (topic, partition), offset in sorted((await transport.committed(name)).items()):
                    end = ends.get((topic, partition), offset)
                    table.add_row(
                        name, topic, str(partition), str(offset), str(end), str(end - offset)
                    )
        console.print(table)

    main()
    if connect_url and report_connectors(connect_url):
        raise typer.Exit(1)
