"""A stand-in for the LLMServingSim fork's `AnalyticalAstra` binary, for CI without a C++ build.
A test double: it lives with the tests and is run by path, with the repository root on PYTHONPATH
(it imports astra_bridge and llmsim):

    PYTHONPATH=<repo> python tests/astra_standin.py --workload-configuration=PREFIX --system-configuration=F \
        --network-configuration=F --memory-configuration=F --start-npu-ids=0,2, --end-npu-ids=1,3,

It speaks the fork's persistent-process protocol (docs/astra-sim-interface.md) and executes the .et
files we write (read with our own codec) with the congestion-unaware analytical timing
(docs/astra-bridge.md, "Analytical timing"): one global integer-ns clock, COMP = duration, SEND/RECV =
trunc(hops*L + S/Bpns) on the first differing dimension, ring ALL_REDUCE, ALL_GATHER and
REDUCE_SCATTER (one dimension), MEM = latency + S/bw with
per-device FIFOs.

Loop, as the fork's main.cc: run every event at the next event time (or, with nothing pending, step
1,000,000 ns), then a pass over end NPUs, then start NPUs, in id order; each one that is idle and not
sleeping reports `sys[n] iteration k finished, T cycles ...` + `Waiting` and reads one stdin line.

Test knobs (environment): STANDIN_EXIT_AFTER=N exits with code 3 instead of report N+1;
STANDIN_HANG_AFTER=N goes silent forever instead of report N+1; STANDIN_GARBAGE=1 replaces every
report with non-protocol text and a bare `Waiting`.
"""
import heapq
import json
import os
import random
import sys
import time
from collections import defaultdict, deque
from datetime import datetime, timedelta
from functools import lru_cache
from math import prod
from pathlib import Path

import yaml

from astra_bridge.chakra import codec
from astra_bridge.chakra.et_def import CollectiveCommType
from llmsim.backends.network import (Link, hierarchical_allgather_ns, hierarchical_allreduce_ns, mem_ns, p2p_ns,
                                     ring_allgather_ns, ring_allreduce_ns, ring_alltoall_ns, ring_reducescatter_ns)

FLAVOR = "llmservingsim"
IDLE_STEP_NS = 1_000_000  # the fork's EventQueue::add_current_time() on an empty queue
_EPOCH = datetime(2000, 1, 1)  # log stamps are derived from simulated time so output is deterministic
_HOPS = {"FullyConnected": lambda a, b, n: 1, "Switch": lambda a, b, n: 2,
         "Ring": lambda a, b, n: min(abs(a - b), n - abs(a - b))}  # bidirectional ring
_QUEUED_MEM = ("PER_NODE_MEMORY_EXPANSION", "MEMORY_POOL")  # one FIFO per tensor_device; others don't queue
_TIERS = {1: "local_mem", 2: "remote_mem", 3: "cxl_mem"}  # tensor_loc -> memory json object


class StandinError(Exception):
    """Where the real binary prints an error and exits 1."""


def _stamp(now: int) -> str:
    t = _EPOCH + timedelta(microseconds=now // 1000)
    return f"[{t:%Y-%m-%d %H:%M:%S}.{t.microsecond // 1000:03d}]"


class Topology:
    """network.yml + system.json + memory json, as astra_bridge.inputs writes them."""

    def __init__(self, network: str, system: str, memory: str, comm_group: str | None = None):
        try:
            net = yaml.safe_load(Path(network).read_text())
            sysj = json.loads(Path(system).read_text())
            self.mem = json.loads(Path(memory).read_text())
            groups = json.loads(Path(comm_group).read_text()) if comm_group else {}
        except (OSError, ValueError, yaml.YAMLError) as e:
            raise StandinError(f"cannot read a configuration file: {e}") from None
        # the fork puts every collective of an NPU listed in --comm-group-configuration into its group
        self.comm_groups = {int(n): tuple(sorted(int(m) for m in members)) for members in groups.values()
                            for n in members}
        self.dims = [int(n) for n in net["npus_count"]]
        n = len(self.dims)
        self.kinds = list(net.get("topology", ["FullyConnected"] * n))
        self.links = [Link(float(b), float(l)) for b, l in zip(net["bandwidth"], net["latency"])]
        # a ring collective's hand-off goes to a neighbour: 2 hops through a switch, 1 otherwise
        self.ring_links = [Link(l.bw_gbps, (2 if k == "Switch" else 1) * l.latency_ns)
                           for l, k in zip(self.links, self.kinds)]
        self.npus = prod(self.dims)
        self.e = int(sysj.get("endpoint-delay", 10))  # x injection-scale, which is 1
        self.splits = int(sysj.get("preferred-dataset-splits", 1))
        self.local_bw = float(sysj["local-mem-bw"])

    def coords(self, npu: int) -> list[int]:
        out = []
        for n in self.dims:  # mixed radix, dimension 0 fastest
            npu, c = divmod(npu, n)
            out.append(c)
        return out

    def p2p_ns(self, src: int, dst: int, size: int) -> int:
        a, b = self.coords(src), self.coords(dst)
        d = next((i for i in range(len(a)) if a[i] != b[i]), None)
        if d is None:
            raise StandinError(f"SEND/RECV from NPU {src} to itself")
        hops = _HOPS.get(self.kinds[d], _HOPS["FullyConnected"])(a[d], b[d], self.dims[d])
        link = self.links[d]
        return p2p_ns(Link(link.bw_gbps, hops * link.latency_ns), size)

    @lru_cache(maxsize=None)  # one Topology per process; called once per collective per NPU
    def group(self, npu: int, involved: tuple[bool, ...]) -> tuple[int, ...]:
        """NPUs that differ from `npu` only in the involved dimensions."""
        me = self.coords(npu)
        return tuple(p for p in range(self.npus)
                     if all(involved[d] or c == me[d] for d, c in enumerate(self.coords(p))))

    @lru_cache(maxsize=None)
    def allreduce_ns(self, size: int, involved: tuple[bool, ...]) -> int | None:
        # NB: real ASTRA-Sim runs the ring step by step from each rank's own start tick (asymmetric
        # start, docs/astra-bridge.md "Analytical timing"); we start everyone at the last arrival,
        # which equals it when all ranks arrive together and can differ by a few hops' worth otherwise.
        dims = [d for d, n in enumerate(self.dims) if involved[d] and n > 1]
        if not dims:
            return None  # no stream is created and the real DataSet never notifies: a hang
        # Several dims (localBWAware, ascending): RS on all but the last, AR on the last, AG back down.
        # Chunks run one after another; real ASTRA-Sim pipelines them across dims when splits > 1.
        return hierarchical_allreduce_ns(tuple((self.ring_links[d], self.dims[d]) for d in dims), size,
                                         local_mem_bw_gbps=self.local_bw, endpoint_delay_ns=self.e,
                                         splits=self.splits, total_npus=self.npus)

    @lru_cache(maxsize=None)
    def allgather_ns(self, size: int, involved: tuple[bool, ...]) -> int | None:
        dims = [d for d, n in enumerate(self.dims) if involved[d] and n > 1]
        if not dims:
            return None
        return hierarchical_allgather_ns(tuple((self.ring_links[d], self.dims[d]) for d in dims), size,
                                         endpoint_delay_ns=self.e, splits=self.splits)

    @lru_cache(maxsize=None)
    def reducescatter_ns(self, size: int, involved: tuple[bool, ...]) -> int | None:
        dims = [d for d, n in enumerate(self.dims) if involved[d] and n > 1]
        if not dims:
            return None
        if len(dims) > 1:
            raise StandinError("REDUCE_SCATTER over several dimensions is not modelled by the stand-in")
        d = dims[0]
        return ring_reducescatter_ns(self.ring_links[d], size, self.dims[d], local_mem_bw_gbps=self.local_bw,
                                     endpoint_delay_ns=self.e)

    @lru_cache(maxsize=None)
    def alltoall_ns(self, size: int, involved: tuple[bool, ...]) -> int | None:
        dims = [d for d, n in enumerate(self.dims) if involved[d] and n > 1]
        if not dims:
            return None
        if len(dims) > 1:
            raise StandinError("ALL_TO_ALL over several dimensions is not modelled by the stand-in")
        return ring_alltoall_ns(self.ring_links[dims[0]], size, self.dims[dims[0]], endpoint_delay_ns=self.e)

    def comm_group_ns(self, ctype, size: int, group: tuple[int, ...]) -> int:
        """A collective over a comm group: one ring of its members on the one dimension they differ in."""
        coords = [self.coords(n) for n in group]
        dims = [d for d in range(len(self.dims)) if len({c[d] for c in coords}) > 1]
        if len(dims) != 1:
            raise StandinError(f"comm group {list(group)} spans dimensions {dims}: not modelled by the stand-in")
        link, n = self.ring_links[dims[0]], len(group)
        if ctype == CollectiveCommType.ALL_GATHER:
            return ring_allgather_ns(link, size, n, endpoint_delay_ns=self.e, splits=self.splits)
        if ctype == CollectiveCommType.REDUCE_SCATTER:
            return ring_reducescatter_ns(link, size, n, local_mem_bw_gbps=self.local_bw, endpoint_delay_ns=self.e)
        if ctype == CollectiveCommType.ALL_TO_ALL:
            return ring_alltoall_ns(link, size, n, endpoint_delay_ns=self.e)
        return ring_allreduce_ns(link, size, n, local_mem_bw_gbps=self.local_bw, endpoint_delay_ns=self.e,
                                 splits=self.splits, total_npus=self.npus)

    def memory(self, loc: int) -> dict:
        tier = self.mem.get(_TIERS.get(loc, ""))
        if tier is None:  # the fork aborts on a level its memory file does not configure
            raise StandinError(f"MEM node with tensor_loc {loc}: no {_TIERS.get(loc, 'such')} memory configured")
        return tier


class Workload:
    """One .et file on one NPU: a dependency graph with the fork's two resource slots (one COMP, one
    COLL/SEND in flight; RECV and MEM take none), ready nodes issued lowest id first."""

    def __init__(self, prefix: str, nodes: list):
        self.prefix = prefix
        self.nodes = {n.id: n for n in nodes}
        self.kind = {n.id: codec.node_type_name(FLAVOR, n.type) for n in nodes}
        self.waiting = {}  # node id -> number of data_deps not yet done (a dangling dep never is)
        self.children = defaultdict(list)
        self.ready = []
        for n in nodes:
            deps = set(n.data_deps)
            self.waiting[n.id] = len(deps)
            for d in deps:
                self.children[d].append(n.id)
            if not deps:
                self.ready.append(n.id)
        heapq.heapify(self.ready)
        self.left = len(nodes)
        self.busy = set()


class Npu:
    def __init__(self, npu_id: int):
        self.id = npu_id
        self.current: Workload | None = None
        self.queue = deque()
        self.finished = 0  # workloads completed; the report's iteration is finished - 1
        self.comp_ns = 0  # cumulative COMP time (the fork's tics_gpu_ops, never reset)
        self.sleeping = False


class StandIn:
    def __init__(self, topo: Topology, starts: list[int], ends: list[int]):
        self.topo = topo
        self.npus = [Npu(i) for i in range(topo.npus)]
        for i in starts + ends:
            if not 0 <= i < topo.npus:
                raise StandinError(f"NPU id {i} out of range (the network has {topo.npus} NPUs)")
        self.starts, self.ends = sorted(set(starts)), sorted(set(ends))
        bounds = self.starts[1:] + [topo.npus]
        self.managed = {s: [i for i in range(s + 1, b) if i not in self.ends] for s, b in zip(self.starts, bounds)}
        self.now = 0
        self.events = []  # (time, seq, fn, args); seq keeps same-tick events FIFO, as the fork's EventList
        self.seq = 0
        self.arrived = defaultdict(deque)  # (src, dst, tag, size) -> arrival ticks of sends nobody received yet
        self.posted = defaultdict(deque)  # (src, dst, tag, size) -> RECVs waiting for their send
        self.colls = defaultdict(list)  # (group, involved, k) -> members that reached their k-th collective
        self.coll_count = defaultdict(int)
        self.mem_free = defaultdict(int)  # (tier, device) -> tick its FIFO frees up
        self.out = sys.stdout
        self.reports = 0
        self.exit_after = int(os.environ.get("STANDIN_EXIT_AFTER", "-1"))
        self.hang_after = int(os.environ.get("STANDIN_HANG_AFTER", "-1"))
        self.garbage = random.Random(0) if os.environ.get("STANDIN_GARBAGE") else None

    # -- events -----------------------------------------------------------------------------------
    def at(self, t: int, fn, *args) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, fn, args))

    def proceed(self) -> None:
        """Run every event at the front tick, including delta-0 events they add (same EventList)."""
        t = self.now = self.events[0][0]
        while self.events and self.events[0][0] == t:
            _, _, fn, args = heapq.heappop(self.events)
            fn(*args)

    # -- workloads --------------------------------------------------------------------------------
    def give(self, npu: Npu, w: Workload) -> None:
        if npu.current is None:
            self.fire(npu, w)
        else:
            npu.queue.append(w)

    def fire(self, npu: Npu, w: Workload) -> None:
        npu.current = w
        if not w.left:  # nothing to run (our traces never do this)
            self.finish(npu)
        else:
            self.issue(npu, w)

    def finish(self, npu: Npu) -> None:
        npu.current = None
        npu.finished += 1
        if npu.queue:
            self.fire(npu, npu.queue.popleft())

    def issue(self, npu: Npu, w: Workload) -> None:
        held = []
        while w.ready:
            nid = heapq.heappop(w.ready)
            kind = w.kind[nid]
            slot = "comp" if kind == "COMP_NODE" else "comm" if kind in ("COMM_SEND_NODE", "COMM_COLL_NODE") else None
            if slot in w.busy:
                held.append(nid)  # retried at the next completion, as the fork's ready queue does
                continue
            if slot:
                w.busy.add(slot)
            self.start(npu, w, nid, kind, w.nodes[nid], slot)
        for nid in held:
            heapq.heappush(w.ready, nid)

    def done(self, npu: Npu, w: Workload, nid: int, slot) -> None:
        w.busy.discard(slot)
        w.left -= 1
        for c in w.children.get(nid, ()):
            w.waiting[c] -= 1
            if not w.waiting[c]:
                heapq.heappush(w.ready, c)
        if w.left:
            self.issue(npu, w)
        else:
            self.finish(npu)

    def start(self, npu: Npu, w: Workload, nid: int, kind: str, node, slot) -> None:
        now, me = self.now, (npu, w, nid, slot)
        if kind == "COMP_NODE":
            d = codec.duration_ns(FLAVOR, node)  # duration_micros read as ns, as the fork does
            npu.comp_ns += d
            self.at(now + d, self.done, *me)
            return
        a = codec.attributes(node)
        if kind in ("MEM_LOAD_NODE", "MEM_STORE_NODE"):
            loc, dev = int(a.get("tensor_loc", 0)), int(a.get("tensor_device", 0))
            tier = self.topo.memory(loc)
            t = now
            if tier.get("memory-type") in _QUEUED_MEM:  # one instance per tier, shared by all NPUs
                t = max(t, self.mem_free[(loc, dev)])
            t += mem_ns(tier["mem-bw"], int(tier.get("mem-latency", 0)), int(a.get("tensor_size", 0)))
            if tier.get("memory-type") in _QUEUED_MEM:
                self.mem_free[(loc, dev)] = t
            self.at(t, self.done, *me)
        elif kind in ("COMM_SEND_NODE", "COMM_RECV_NODE"):
            key = (a["comm_src"], a["comm_dst"], a.get("comm_tag", 0), a["comm_size"])
            if kind == "COMM_SEND_NODE":
                arrival = now + self.topo.p2p_ns(key[0], key[1], key[3])
                self.at(arrival, self.done, *me)  # the sender completes at arrival, before the receiver
                if self.posted[key]:
                    self.at(arrival, self.done, *self.posted[key].popleft())
                else:
                    self.arrived[key].append(arrival)
            elif self.arrived[key]:
                self.at(max(now, self.arrived[key].popleft()), self.done, *me)
            else:
                self.posted[key].append(me)
        elif kind == "COMM_COLL_NODE":
            ctype = a.get("comm_type")
            if ctype == CollectiveCommType.BROADCAST:  # the fork just waits duration_micros (ns)
                self.at(now + codec.duration_ns(FLAVOR, node), self.done, *me)
                return
            if ctype not in (CollectiveCommType.ALL_REDUCE, CollectiveCommType.ALL_GATHER,
                             CollectiveCommType.REDUCE_SCATTER, CollectiveCommType.ALL_TO_ALL):
                raise StandinError(f"NPU {npu.id} {w.prefix}: collective type {ctype} is not modelled by the stand-in")
            n = len(self.topo.dims)
            involved = a.get("involved_dim")
            involved = (True,) * n if involved is None else tuple((list(involved) + [False] * n)[:n])
            group = self.topo.comm_groups.get(npu.id) or self.topo.group(npu.id, involved)
            k = self.coll_count[(npu.id, group)]
            self.coll_count[(npu.id, group)] += 1
            members = self.colls[(group, k)]
            members.append((now, me))
            if len(members) == len(group):  # the last member has arrived
                del self.colls[(group, k)]
                cost = {CollectiveCommType.ALL_REDUCE: self.topo.allreduce_ns, CollectiveCommType.ALL_GATHER:
                        self.topo.allgather_ns, CollectiveCommType.REDUCE_SCATTER: self.topo.reducescatter_ns,
                        CollectiveCommType.ALL_TO_ALL: self.topo.alltoall_ns}[ctype]
                t = (self.topo.comm_group_ns(ctype, int(a["comm_size"]), group) if npu.id in self.topo.comm_groups
                     else cost(int(a["comm_size"]), involved))
                if t is None:
                    print(f"standin: NPU {npu.id} all-reduce over size-1 dims never completes "
                          f"(as in ASTRA-Sim)", file=sys.stderr, flush=True)
                    return
                if len(members) == 2:
                    # measured on the fork (two NPUs issuing 100 us apart): a rank is done when its
                    # peer's part has reached it, at max(its own issue, the peer's issue + t)
                    (t0, m0), (t1, m1) = members
                    self.at(max(t0, t1 + t), self.done, *m0)
                    self.at(max(t1, t0 + t), self.done, *m1)
                else:  # the ring starts at the last arrival (see allreduce_ns)
                    for _, m in members:
                        self.at(now + t, self.done, *m)
        else:
            raise StandinError(f"NPU {npu.id} {w.prefix}: node {nid} has type {kind}, which the stand-in does not run")

    # -- protocol ---------------------------------------------------------------------------------
    def load(self, prefix: str, npu_ids) -> list[Workload]:
        out = []
        for i in npu_ids:
            path = f"{prefix}.{i}.et"
            if not os.path.exists(path):
                raise StandinError(f"workload file: {path} does not exist")
            try:
                out.append(Workload(prefix, codec.read_et(path)[1]))
            except (OSError, ValueError) as e:
                raise StandinError(f"workload file: {path}: {e}") from None
        return out

    def report(self, npu: Npu) -> None:
        if self.reports == self.exit_after:
            print(f"standin: STANDIN_EXIT_AFTER={self.exit_after} reached", file=sys.stderr, flush=True)
            self.out.flush()
            os._exit(3)
        if self.reports == self.hang_after:
            print(f"standin: STANDIN_HANG_AFTER={self.hang_after} reached", file=sys.stderr, flush=True)
            self.out.flush()
            while True:
                time.sleep(3600)
        self.reports += 1
        s = _stamp(self.now)
        if self.garbage:
            g = self.garbage
            for _ in range(g.randint(1, 4)):
                self.out.write("".join(g.choice("abcdefxyz0123456789 #%@") for _ in range(g.randint(5, 60))) + "\n")
        else:
            self.out.write(f"{s} [workload] [info] sys[{npu.id}] iteration {npu.finished - 1} finished, "
                           f"{self.now} cycles, exposed communication {self.now - npu.comp_ns} cycles.\n")
        self.out.write(f"{s} [workload] [info] Waiting\n")
        self.out.flush()

    def query(self, npu: Npu, is_start: bool) -> bool:
        """One report and one stdin line; True on `exit`."""
        self.report(npu)
        line = sys.stdin.readline()
        if not line:
            raise StandinError("stdin closed while waiting for an answer")
        line = line.strip()
        if line == "pass":
            return False
        if line == "done":
            npu.sleeping = True
            return False
        if line == "exit":
            return True
        targets = [npu.id] + (self.managed[npu.id] if is_start else [])
        for i, w in zip(targets, self.load(line, targets)):  # all files read before any starts
            self.give(self.npus[i], w)
        return False

    def run(self, first_prefix: str) -> int:
        for npu, w in zip(self.npus, self.load(first_prefix, range(len(self.npus)))):
            self.fire(npu, w)
        order = [(i, False) for i in self.ends] + [(i, True) for i in self.starts]
        write = self.out.write
        while True:
            if self.events:
                self.proceed()
            else:
                if not any(self.npus[i].current is None and not self.npus[i].sleeping for i, _ in order):
                    # Nothing pending and nobody to ask: nothing can ever change. The real binary spins
                    # in 1 ms steps printing `Checking` lines forever; we go quiet instead (the driver
                    # times out either way) and leave when stdin closes.
                    print("standin: nothing pending and no NPU left to report; stalled", file=sys.stderr, flush=True)
                    self.out.flush()
                    sys.stdin.read()
                    return 1
                self.now += IDLE_STEP_NS
            for i, is_start in order:
                npu = self.npus[i]
                if npu.sleeping:
                    continue
                write(f"Checking Managed Systems for Controller NPU {i} ...\n" if is_start
                      else f"Checking End NPU {i} ...\n")
                if npu.current is None and not npu.queue and self.query(npu, is_start):
                    return self.exit()

    def exit(self) -> int:
        write = self.out.write
        write("Checking Non-Exited Systems ...\n")
        left = [n for n in self.npus if n.current is not None or n.queue]
        for n in left:
            w = n.current
            write(f"sys[{n.id}] \n  {w.prefix}: {w.left} nodes not done, {len(n.queue)} workloads queued\n")
        bar = "---------------------------\n"
        write(bar + ("ERROR: Some Requests Remain\n" if left else "All Request Has Been Exited\n") + bar)
        self.out.flush()
        return 0


def _flags(argv: list[str]) -> dict:
    """--name=value flags; anything else is ignored, as the fork's parser ignores unknown flags."""
    return dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)


def _ids(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]  # "0,2," (trailing comma) is accepted


def main(argv=None) -> int:
    f = _flags(sys.argv[1:] if argv is None else argv)
    try:
        for k in ("workload-configuration", "system-configuration", "network-configuration", "memory-configuration"):
            if k not in f:
                raise StandinError(f"--{k} is required")
        topo = Topology(f["network-configuration"], f["system-configuration"], f["memory-configuration"],
                        f.get("comm-group-configuration"))
        sim = StandIn(topo, _ids(f.get("start-npu-ids", "")), _ids(f.get("end-npu-ids", "")))
        return sim.run(f["workload-configuration"])
    except (StandinError, ValueError, KeyError) as e:
        e = f"missing field {e}" if isinstance(e, KeyError) else e
        sys.stdout.write(f"{_stamp(0)} [workload] [error] {e}\n")
        sys.stdout.flush()
        print(f"standin: {e}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
