"""The one durable work queue: leases, fencing tokens, heartbeats, the worker, and a registry of kinds.

The queue knows nothing about training or evaluations: `training/` and `evals/` register runners for
their kinds (openft.jobs.registry), and the worker runs each leased task in a child process.
"""
