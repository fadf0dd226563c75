"""``python -m thisme_stac.simulator`` = ``thisme-stac simulate``."""

import typer

from thisme_stac.simulator.command import simulate

typer.run(simulate)
