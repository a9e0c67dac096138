"""Benchmarks over a live mesh.

- :func:`replay_mesh`: a real nats-server, an in-memory PKI and replay agents per tier, with a requester that asks
  one tier (:meth:`ReplayMesh.ask`): the harness every mesh benchmark drives.
- :func:`run_routing_bench`: ``accord bench routing`` (routers evaluated on, and then routing, a live mesh).
"""

from accord.bench.replay_mesh import BENCH_REQUESTER_CONFIG, MeshCounters, ReplayMesh, TierAgents, replay_mesh
from accord.bench.routing import RoutingBench, run_routing_bench
from accord.bench.routing_report import RoutingBenchResult, SetResult

__all__ = [
    "BENCH_REQUESTER_CONFIG",
    "MeshCounters",
    "ReplayMesh",
    "RoutingBench",
    "RoutingBenchResult",
    "SetResult",
    "TierAgents",
    "replay_mesh",
    "run_routing_bench",
]
