"""`python -m metriport_sandbox`: the same as `metriport-sandbox`."""

from metriport_sandbox.cli import main

main()
