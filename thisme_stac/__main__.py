"""``python -m thisme_stac`` = the ``thisme-stac`` command."""

from thisme_stac.cli import main

main()
