"""Benchmarks over a live mesh.

- :func:`replay_mesh`: a real nats-server, an in-memory PKI and replay agents per tier, with a requester that asks
  one tier (:meth:`ReplayMesh.ask`): the harness every mesh benchmark drives.
- :func:`run_routing_bench`: ``accord bench routing`` (routers evaluated on, and then routing, a live mesh).
- :func:`run_models_bench`: ``accord bench routing --models`` (the learned predictor ranking the bids of one
  replay agent per model, its offline curve reproduced live).
"""

from accord.bench.models_routing import ModelsBench, ModelsBenchResult, run_models_bench
from accord.bench.replay_mesh import BENCH_REQUESTER_CONFIG, MeshCounters, ReplayMesh, TierAgents, replay_mesh
from accord.bench.routing import RoutingBench, run_routing_bench
from accord.bench.routing_report import RoutingBenchResult, SetResult

__all__ = [
    "BENCH_REQUESTER_CONFIG",
    "MeshCounters",
    "ModelsBench",
    "ModelsBenchResult",
    "ReplayMesh",
    "RoutingBench",
    "RoutingBenchResult",
    "SetResult",
    "TierAgents",
    "replay_mesh",
    "run_models_bench",
    "run_routing_bench",
]
