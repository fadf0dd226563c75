"""`thisme-stac simulate`: serve the THISME simulator until Ctrl-C."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated

import typer

from thisme_stac.errors import ConfigError


def simulate(
    host: Annotated[str, typer.Option(help="Interface (keep 127.0.0.1 for tests).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 5252,
    size: Annotated[str, typer.Option(help="thisme (~20k maps) | 1m (~1M maps).")] = "thisme",
    end: Annotated[
        str | None, typer.Option(help="Publish maps acquired before this date only.")
    ] = None,
    download_auth: Annotated[bool, typer.Option(help="Require a resto token to download.")] = False,
    log: Annotated[bool, typer.Option("--log", help="Log every request on stderr.")] = False,
    faults: Annotated[
        str | None,
        typer.Option(
            help="Inject faults, e.g. '5xx=0.2,429=0.05,retry_after=1s,drop=0.02,cut=0.02,"
            "truncate=0.05,dup=0.1,shift=0.1,publish=3,stall=0.1,stall_time=2s,latency=50ms'."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the injected faults.")] = None,
) -> None:
    """Start the resto-5-compatible THISME simulator and serve until interrupted."""
    from thisme_stac.simulator import GeneratedCatalogue, SimulatorServer
    from thisme_stac.simulator.faults import Faults

    injected = Faults.parse(faults or "")
    if seed is not None:
        injected = injected.with_seed(seed)

    until = None
    if end:
        try:
            until = datetime.fromisoformat(end.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"--end is not a date: {end!r}") from None
        until = until if until.tzinfo else until.replace(tzinfo=UTC)
    try:
        catalogue = GeneratedCatalogue(size=size, end=until)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    try:
        server = SimulatorServer(
            catalogue,
            host=host,
            port=port,
            download_auth=download_auth,
            log_requests=log,
            faults=injected if injected.active else None,
        )
    except OSError as err:
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    print(
        f"THISME simulator (resto 5.0.0 API, {len(catalogue):,} maps) at {server.url}",
        file=sys.stderr,
        flush=True,
    )
    if injected.active:
        print(f"injecting faults: {injected.describe()}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
