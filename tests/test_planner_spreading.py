"""The planner spreads generation by queue depth and measured speed (mesh/spreading.py, MeshCalls)."""

from __future__ import annotations

from collections import Counter

from llmlab_grpc.mesh.channels import ChannelPool
from llmlab_grpc.mesh.known_models import KnownModels
from llmlab_grpc.mesh.peers import PeerTable
from llmlab_grpc.mesh.spreading import LlmLoad, spread_order
from llmlab_grpc.planner.mesh_calls import MeshCalls
from llmlab_grpc.ports import LoadMeter, LocalNode
from llmlab_grpc.proto.llmlab.v1 import common_pb2

MODEL = "smollm2-135m"


def dispatch(loads: list[LlmLoad], count: int) -> Counter[int]:
    """Send ``count`` requests one after another, each to the best node, none finishing: who got how many."""
    got: Counter[int] = Counter()
    loads = list(loads)
    for _ in range(count):
        best = spread_order(loads)[0]
        got[best] += 1
        loads[best] = LlmLoad(loads[best].queue + 1, loads[best].speed, loads[best].local)
    return got


def test_equal_nodes_share_the_work_evenly() -> None:
    assert dispatch([LlmLoad(0, 20.0), LlmLoad(0, 20.0)], 8) == Counter({0: 4, 1: 4})


def test_a_busier_node_gets_less() -> None:
    got = dispatch([LlmLoad(3, 20.0), LlmLoad(0, 20.0)], 8)
    assert got == Counter({1: 5, 0: 3})  # the idle node takes three until the queues are level, then they share


def test_a_slower_node_gets_less_in_proportion_to_its_speed() -> None:
    got = dispatch([LlmLoad(0, 10.0), LlmLoad(0, 30.0)], 8)
    assert got == Counter({1: 6, 0: 2})


def test_an_unmeasured_node_counts_at_the_mean_speed_and_this_node_wins_ties() -> None:
    assert spread_order([LlmLoad(0, 0.0), LlmLoad(0, 40.0), LlmLoad(0, 0.0, local=True)]) == [2, 0, 1]
    assert spread_order([LlmLoad(1, 0.0), LlmLoad(0, 0.0)]) == [1, 0]  # nothing measured: queues decide


def fake_node(*peers: tuple[str, int, float]) -> MeshCalls:
    """The mesh of a planner-only node whose peer table holds llm peers (name, reported queue, tokens/s)."""
    table = PeerTable("planner")
    for name, queue, speed in peers:
        info = common_pb2.NodeInfo(node_id=name, name=name, address=f"127.0.0.1:{len(table) + 1}", roles=["llm"],
                                   models=[MODEL])
        table.upsert(info, "static", load=common_pb2.NodeLoad(generations_running=queue, tokens_per_second=speed))
    me = LocalNode("planner", "planner", ["planner"], "mesh", 0, address="127.0.0.1:9")
    return MeshCalls(me, table, ChannelPool("unit-test-secret"), LoadMeter(), KnownModels(None, "mesh"), 20.0, 1.0)


def test_candidates_order_llm_nodes_by_expected_wait() -> None:
    calls = fake_node(("slow", 0, 10.0), ("fast", 0, 40.0), ("busy-fast", 6, 40.0))
    assert [c.name for c in calls.candidates("llm", MODEL)] == ["fast", "slow", "busy-fast"]


def test_requests_this_planner_has_in_flight_count_before_any_heartbeat() -> None:
    calls = fake_node(("a", 0, 20.0), ("b", 0, 20.0))
    first = calls.candidates("llm", MODEL)[0].node_id
    calls.in_flight[first] = 1  # what generate() records while the first request runs
    assert calls.candidates("llm", MODEL)[0].node_id != first
    calls.policy.finished(first)
    assert calls.in_flight == {}


def test_a_suspect_node_goes_last_whatever_its_speed() -> None:
    calls = fake_node(("a", 0, 10.0), ("b", 0, 40.0))
    calls.suspect("b")
    assert [c.name for c in calls.candidates("llm", MODEL)] == ["a", "b"]
