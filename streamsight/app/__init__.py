"""The streamsight application: the CLI, `analyze`, reports, the demo and `up`'s supervisor.

It stands on the runtime library (the `streamsight` package around it: bus, stage runtime,
settings, RPC, telemetry); services import the runtime, never this package.
"""
