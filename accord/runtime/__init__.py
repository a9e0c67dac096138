"""The async shells: Agent (bids, executes) and Requester (announces, awards, accepts) on one endpoint base.

They feed the pure machines of :mod:`accord.protocol` with verified frames and ``now``, and carry out the actions
the machines return: sign and publish, arm timers, run backends.
"""

from accord.runtime.agent import Agent, AgentStats
from accord.runtime.endpoint import EndpointLimits
from accord.runtime.requester import Requester, RequesterStats, TaskFailed, TaskOutcome
from accord.runtime.timers import now_ns

__all__ = [
    "Agent",
    "AgentStats",
    "EndpointLimits",
    "Requester",
    "RequesterStats",
    "TaskFailed",
    "TaskOutcome",
    "now_ns",
]
