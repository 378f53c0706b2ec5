"""Prefill/decode disaggregation with data-parallel pools (docs/disaggregation.md, docs/moe.md): a
pool's instances may form DP groups, each its own vLLM DP deployment, as wide expert-parallel
serving runs a prefill fleet and a decode fleet (llm-d's wide-EP layout). Each pool routes over its
endpoints (dp.EndpointRouter: a plain instance, or a group, then the group's DP balancer); a
lockstep group steps in the engine as any group (dp.GroupStepper: a prefill group's steps carry
prefill chunks only, a decode group's the decodes and each request's last prompt token); the KV
moves from the prefill rank to the decode rank as between any two instances (disagg.py)."""
from .dp import DPGroups, EndpointRouter, WithGroups
from .disagg import DisaggSession
from .router import DEFAULT_SEED


class DisaggDPSession(WithGroups, DisaggSession):
    def __init__(self, instances, requests, cluster, *, routing_policy: str = "LOAD", seed: int = DEFAULT_SEED, **kw):
        super().__init__(instances, requests, cluster, routing_policy=routing_policy, seed=seed, **kw)
        self.dp = DPGroups(instances)
        self.groups = self.dp.groups
        self._router_p = EndpointRouter(self.dp, self.prefill, routing_policy, seed)
        self._router_d = EndpointRouter(self.dp, self.decode, routing_policy, seed)

    def _pick_prefill(self, now: int) -> int:
        return self._router_p.pick(now)

    def _pick_decode(self, now: int) -> int:
        return self._router_d.pick(now)
