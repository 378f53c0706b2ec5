"""Prefill/decode disaggregation (cluster config `pd_type`), as vLLM serves it with a KV connector
(NixlConnector; the P2P NCCL connector's disagg proxy runs the same two steps). docs/disaggregation.md.

A client request goes to the prefill pool (its own router: router.py's policies, its own state),
which computes the prompt, chunked as usual, with max_tokens=1: the prefill instance sees a
stand-in request of output 1 (its sampled token is discarded by the proxy, as vLLM's is). When the
batch holding the final prompt chunk completes, the client's request goes to a decode instance
picked by the decode pool's router (own state), into its waiting queue. The decode scheduler
allocates the prompt's blocks when they fit (scheduler._start_load; a full decode instance keeps
the request queued), and the KV moves, whole, from the prefill instance's NPUs to the decode
instance's (vLLM's NIXL connector reads every block once the prefill is done). When it has
arrived, the prefill instance frees its blocks and the decode instance computes the last prompt
token, sampling the first token the client sees (vLLM's _update_waiting_for_remote_kv counts
all prompt tokens but the last as computed); TTFT includes the transfer.

Transfer time: each of the prefill instance's tp x pp ranks sends its own shard (its stage's
layers, its KV heads) in parallel, so the largest shard sets the time: latency + bytes / bandwidth
on one link (p2p_ns), congestion-unaware like the rest of the network model (concurrent transfers
do not slow each other); the NPUs' compute is not occupied (RDMA reads).
"""
import heapq

from .backends.network import Link, p2p_ns
from .config.cluster import ClusterConfig, InstanceConfig
from .instance import Instance
from .request import KV_PENDING, Request
from .results import SimResult
from .router import DEFAULT_SEED, Router
from .session import Session

_HANDOFF, _ARRIVED = 0, 1  # session events: a prefill is done; a KV transfer has arrived


def is_disaggregated(instances) -> bool:
    return any(i.config.pd_type for i in instances)


def kv_shard_bytes_per_token(inst: Instance) -> int:
    """The largest per-rank KV shard of one token: what one rank of the slowest stage sends."""
    return max(s.kv_bytes_per_token for s in inst.memory.stages)


def kv_bytes_per_token(inst: Instance) -> int:
    """One token's KV over all layers and all ranks of the instance (what crosses the network)."""
    return inst.config.tp_size * sum(s.kv_bytes_per_token for s in inst.memory.stages)


def kv_transfer_ns(link: Link, tokens: int, shard_bytes_per_token: int) -> int:
    """The whole prompt's KV moved in one transfer: every rank sends its shard at once over its
    own link, so the time is one shard's: trunc(latency + tokens x shard bytes / bandwidth)."""
    return p2p_ns(link, tokens * shard_bytes_per_token)


def _nodes(net, inst: InstanceConfig) -> set[int]:
    return {net.node_of(p) for p in range(inst.first_npu, inst.first_npu + inst.num_npus)}


def transfer_link(cluster: ClusterConfig, src: InstanceConfig, dst: InstanceConfig) -> Link:
    """The link the KV crosses, as backends/fabric.py picks links: with a node-aware network the
    intra-node fabric when both instances sit on one node, else the inter-node fabric (a Switch
    costs its per-hop latency twice); on the flat network the instance dimension (dimension 1 of
    link_bw / link_latency, a scalar broadcast), as a stage boundary's link."""
    net = cluster.network
    if net is None:
        bw, lat = cluster.link_bw_gbps, cluster.link_latency_ns
        return Link(bw[1] if len(bw) > 1 else bw[0], lat[1] if len(lat) > 1 else lat[0])
    nodes = _nodes(net, src) | _nodes(net, dst)
    fab = net.intra if len(nodes) == 1 else net.inter
    return Link(fab.bw_gbps, fab.hops * fab.latency_ns)


class DisaggSession(Session):
    """The step API with two pools; drivers compose it as a Session."""

    def __init__(self, instances: list[Instance], requests: list[Request], cluster: ClusterConfig, *,
                 routing_policy: str = "LOAD", seed: int = DEFAULT_SEED, **kw):
        super().__init__(instances, requests, routing_policy=routing_policy, seed=seed, **kw)
        self.cluster = cluster
        self.prefill = [k for k, i in enumerate(instances) if i.config.pd_type == "prefill"]
        self.decode = [k for k, i in enumerate(instances) if i.config.pd_type == "decode"]
        self.router_p = Router([instances[k].scheduler for k in self.prefill], routing_policy, seed)
        self.router_d = Router([instances[k].scheduler for k in self.decode], routing_policy, seed)
        for k in self.prefill:
            instances[k].scheduler.hold_kv = True
        self._events: list = []  # (t, seq, kind, request)
        self._seq = 0
        self._shadow: dict[Request, Request] = {}  # the client's request -> its prefill stand-in
        self._client: dict[Request, Request] = {}  # stand-in -> client's request
        self._links: dict[tuple[int, int], Link] = {}
        self.prefilled = [0] * len(instances)  # requests handed on, per prefill instance
        self.transfers = self.transfer_bytes = self.transfer_ns_total = 0
        # a backend's own transfer timing (upstream ASTRA-Sim runs the sends); None: the network model
        self.transfer_ns = lambda src, dst, shard_bytes: None

    def _push(self, t: int, kind: int, req: Request) -> None:
        heapq.heappush(self._events, (t, self._seq, kind, req))
        self._seq += 1

    def next_arrival_ns(self) -> int | None:
        t = super().next_arrival_ns()
        if self._events and (t is None or self._events[0][0] < t):
            t = self._events[0][0]
        return t

    def deliver_arrivals(self, now: int) -> list[int]:
        touched: list[int] = []
        while self._events and self._events[0][0] <= now:
            _, _, kind, req = heapq.heappop(self._events)
            for i in (self._hand_off(req, now) if kind == _HANDOFF else self._kv_arrived(req)):
                if i not in touched:
                    touched.append(i)
        for req in self._arrived(now):
            i = self._to_prefill(req, now)
            if i is not None and i not in touched:
                touched.append(i)
        return touched

    def _pick_prefill(self, now: int) -> int:
        """The prefill instance a request goes to (data-parallel pools override it: dp_disagg.py)."""
        return self.prefill[self.router_p.pick()]

    def _pick_decode(self, now: int) -> int:
        return self.decode[self.router_d.pick()]

    def _to_prefill(self, req: Request, now: int) -> int | None:
        i = self._pick_prefill(now)
        # max_tokens=1 on the prefill instance (vLLM's proxy sends the prompt so)
        shadow = Request(req.id, req.arrival_ns, req.prompt_len, 1, req.token_ids)
        reason = self.instances[i].scheduler.admission_error(shadow)
        if reason is None:  # no decode instance could ever take it: say so now, not after the prefill
            reasons = [self.instances[d].scheduler.admission_error(req) for d in self.decode]
            reason = None if None in reasons else f"decode pool: {reasons[0]}"
        if reason:
            req.instance = i
            self.unfinished.append((req, reason))
            return None
        self._shadow[req], self._client[shadow] = shadow, req
        self.instances[i].scheduler.add_request(shadow)
        return i

    def _hand_off(self, shadow: Request, now: int) -> list[int]:
        """The prefill is done: the client's request joins a decode instance's queue."""
        req, p = self._client[shadow], shadow.instance
        d = self._pick_decode(now)
        sched = self.instances[d].scheduler
        reason = sched.admission_error(req)
        if reason:  # a smaller decode instance than the one that admitted it at arrival
            self._release(req)
            req.instance = d
            self.unfinished.append((req, reason))
            return [p]
        req.first_sched_ns = shadow.first_sched_ns  # queuing delay: the prefill's first schedule
        req.prefix_hit_tokens = shadow.prefix_hit_tokens
        req.prefill_instance = p
        req.kv_remote = KV_PENDING
        sched.add_request(req)
        self.prefilled[p] += 1
        return [d]

    def _release(self, req: Request) -> None:
        """The prefill instance frees the stand-in's blocks (the decode side has read them)."""
        shadow = self._shadow.pop(req)
        del self._client[shadow]
        self.instances[shadow.instance].pool.free(shadow)

    def form_batch(self, i: int, now: int, want_graph: bool = True, dump: bool = True):
        out = super().form_batch(i, now, want_graph, dump)
        sched = self.instances[i].scheduler
        if sched.loads:  # blocks allocated on the decode side: the KV moves now
            for req in sched.loads:
                self._start_transfer(req, i, now)
            sched.loads.clear()
            self.dirty = True
        return out

    def _start_transfer(self, req: Request, d: int, now: int) -> None:
        p = req.prefill_instance
        src = self.instances[p]
        link = self._links.get((p, d))
        if link is None:
            link = self._links[(p, d)] = transfer_link(self.cluster, src.config, self.instances[d].config)
        ns = self.transfer_ns(p, d, req.prompt_len * kv_shard_bytes_per_token(src))
        if ns is None:
            ns = kv_transfer_ns(link, req.prompt_len, kv_shard_bytes_per_token(src))
        self.transfers += 1
        self.transfer_bytes += req.prompt_len * kv_bytes_per_token(src)
        self.transfer_ns_total += ns
        self._push(now + ns, _ARRIVED, req)

    def _kv_arrived(self, req: Request) -> list[int]:
        p = self._shadow[req].instance
        self._release(req)
        self.instances[req.instance].scheduler.kv_loaded(req)
        return [p, req.instance]

    def complete_batch(self, i: int, batch_id: int, now: int) -> bool:
        if self.instances[i].config.pd_type != "prefill":
            return super().complete_batch(i, batch_id, now)
        done = self.instances[i].scheduler.complete(self.in_flight.pop((i, batch_id)), now)
        self._count(i, done.prompt_tokens, 0)  # the sampled token is discarded: no client sees it
        for shadow in done.finished:
            self._push(now, _HANDOFF, shadow)
        return bool(done.finished)

    def _leftover(self, inst: Instance) -> list[Request]:
        return [self._client.get(r, r) for r in inst.scheduler.leftover()]

    def finish(self, now: int) -> SimResult:
        result = super().finish(now)
        result.disagg = {
            "prefill": self.prefill, "decode": self.decode, "prefilled": list(self.prefilled),
            "transfers": self.transfers, "kv_bytes": self.transfer_bytes, "transfer_ns": self.transfer_ns_total,
        }
        return result
