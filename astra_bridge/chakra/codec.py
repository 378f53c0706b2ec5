"""Chakra .et files: varint-length-framed GlobalMetadata + Nodes, and node builders per flavour.

Flavours (docs/chakra-et.md): "upstream" = mlcommons Chakra and upstream
ASTRA-Sim (durations in us); "llmservingsim" = the LLMServingSim fork (PIM_COMP_NODE = 4 shifts
COMP..COLL to 5..8; durations in ns although the field is called duration_micros). The wire schema
is otherwise identical, so one set of message classes serves both; only the NodeType numbers and
the duration unit depend on the flavour.
"""
import enum
import os
from pathlib import Path
from typing import Iterable, Sequence

from google.protobuf.message import DecodeError

from .et_def import AttributeProto, CollectiveCommType, GlobalMetadata, Node

FLAVORS = ("llmservingsim", "upstream")  # same names as astra_bridge.inputs

_COMMON = {"INVALID_NODE": 0, "METADATA_NODE": 1, "MEM_LOAD_NODE": 2, "MEM_STORE_NODE": 3}
NODE_TYPES = {
    "upstream": {**_COMMON, "COMP_NODE": 4, "COMM_SEND_NODE": 5, "COMM_RECV_NODE": 6, "COMM_COLL_NODE": 7},
    "llmservingsim": {**_COMMON, "PIM_COMP_NODE": 4, "COMP_NODE": 5, "COMM_SEND_NODE": 6,
                      "COMM_RECV_NODE": 7, "COMM_COLL_NODE": 8},
}
NODE_TYPE_NAMES = {fl: {v: k for k, v in table.items()} for fl, table in NODE_TYPES.items()}
# Nanoseconds per duration_micros unit.
DURATION_UNIT_NS = {"upstream": 1000, "llmservingsim": 1}
# The only collectives both ASTRA-Sims issue; any other comm_type is never issued (a silent hang).
SUPPORTED_COLLECTIVES = frozenset({CollectiveCommType.ALL_REDUCE, CollectiveCommType.ALL_GATHER,
                                   CollectiveCommType.BROADCAST, CollectiveCommType.ALL_TO_ALL,
                                   CollectiveCommType.REDUCE_SCATTER})
# The schema string LLMServingSim's converter writes (also the spec's worked example for both flavours).
DEFAULT_SCHEMA = "1.0.2-chakra.0.0.4"


class TensorLoc(enum.IntEnum):
    """The fork's MemoryLocationType, the value of `tensor_loc`; 0 (INVALID) makes the fork exit."""
    LOCAL = 1
    REMOTE = 2
    CXL = 3
    STORAGE = 4


def _check_flavor(flavor: str) -> None:
    if flavor not in FLAVORS:
        raise ValueError(f"unknown Chakra flavor {flavor!r}; expected one of {FLAVORS}")


def node_type(flavor: str, name: str) -> int:
    """The wire NodeType number of `name` (e.g. "COMP_NODE") in `flavor`."""
    _check_flavor(flavor)
    try:
        return NODE_TYPES[flavor][name]
    except KeyError:
        raise ValueError(f"{name} does not exist in the {flavor} schema") from None


def node_type_name(flavor: str, number: int) -> str:
    _check_flavor(flavor)
    return NODE_TYPE_NAMES[flavor].get(number, f"UNKNOWN_{number}")


# ---- framing ----------------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def encode_et(metadata, nodes: Iterable) -> bytes:
    """GlobalMetadata then each Node, each prefixed by its serialized length as a varint.
    Refuses duplicate ids and dependencies on ids not in the file: the fork hangs silently on both."""
    nodes = list(nodes)
    ids = {n.id for n in nodes}
    if len(ids) != len(nodes):
        raise ValueError("node ids must be unique within an .et file")
    dangling = sorted({d for n in nodes for d in (*n.data_deps, *n.ctrl_deps)} - ids)
    if dangling:
        raise ValueError(f"dependencies on nodes not in the file: {dangling[:10]}")
    parts = []
    for msg in (metadata, *nodes):
        body = msg.SerializeToString()
        if not body:
            # Chakra's Python reader takes length 0 as EOF while C++ reads an INVALID node: refuse.
            raise ValueError(f"empty {type(msg).__name__} message: set at least one field")
        parts += (_varint(len(body)), body)
    return b"".join(parts)


def decode_et(data: bytes):
    """(GlobalMetadata, [Node]) from .et bytes. Raises ValueError where ASTRA-Sim would silently
    truncate the trace (bad varint, short or malformed body) or misparse it (gzip)."""
    if data[:2] == b"\x1f\x8b":
        raise ValueError("gzipped .et: upstream ASTRA-Sim misparses compressed traces; decompress it")
    msgs, pos = [], 0
    while pos < len(data):
        start, length, shift = pos, 0, 0
        while True:
            if pos >= len(data) or shift > 63:
                raise ValueError(f"truncated or invalid length varint at byte {start}")
            b = data[pos]
            pos += 1
            length |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        if pos + length > len(data):
            raise ValueError(f"message at byte {start} needs {length} bytes, {len(data) - pos} left")
        cls = GlobalMetadata if not msgs else Node
        try:
            msgs.append(cls.FromString(data[pos:pos + length]))
        except DecodeError as e:
            raise ValueError(f"malformed {cls.__name__} at byte {start}: {e}") from None
        pos += length
    if not msgs:
        raise ValueError("empty .et file: no GlobalMetadata")
    return msgs[0], msgs[1:]


def write_et(path, metadata, nodes: Iterable) -> None:
    """Write atomically (temp file + rename), so a reader never sees half a trace. Never gzipped."""
    path = Path(path)
    data = encode_et(metadata, nodes)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_et(path):
    """(GlobalMetadata, list[Node]) of an .et file."""
    return decode_et(Path(path).read_bytes())


# ---- attributes -------------------------------------------------------------------------------

def attribute(name: str, member: str, value) -> AttributeProto:
    """AttributeProto with `value` in oneof member `member` (e.g. "int64_val", "bool_list").
    The member matters: the fork reads one specific member per name and gets 0 from any other."""
    a = AttributeProto(name=name)
    if member.endswith("_list"):
        getattr(a, member).SetInParent()  # an empty list is still a set value
        getattr(a, member).values.extend(value)
    else:
        setattr(a, member, value)
    return a


def attribute_value(a: AttributeProto):
    """The Python value of an attribute (a list for *_list members, None when unset)."""
    member = a.WhichOneof("value")
    if member is None:
        return None
    v = getattr(a, member)
    return list(v.values) if member.endswith("_list") else v


def attributes(msg) -> dict:
    """{name: value} of a Node's or GlobalMetadata's attributes."""
    return {a.name: attribute_value(a) for a in msg.attr}


def global_metadata(**string_attrs: str) -> GlobalMetadata:
    """GlobalMetadata with string attributes, `schema` first (ASTRA-Sim reads none of it)."""
    string_attrs = {"schema": DEFAULT_SCHEMA, **string_attrs}
    return GlobalMetadata(attr=[attribute(k, "string_val", v) for k, v in string_attrs.items()])


# ---- nodes with the spec's minimum attribute set ------------------------------------------------

def duration_field(flavor: str, duration_ns: int) -> int:
    """duration_micros for `flavor`: ns as-is for the fork; us for upstream (rounded, at least 1,
    since a zero COMP duration is skipped or reads uninitialised state)."""
    _check_flavor(flavor)
    if duration_ns <= 0:
        raise ValueError(f"a COMP duration must be > 0 ns, got {duration_ns}")
    unit = DURATION_UNIT_NS[flavor]
    return max(1, (int(duration_ns) + unit // 2) // unit)


def duration_ns(flavor: str, node) -> int:
    """A node's duration in ns as the given flavour's ASTRA-Sim reads it."""
    _check_flavor(flavor)
    return node.duration_micros * DURATION_UNIT_NS[flavor]


def _node(flavor, kind, id, name, data_deps, ctrl_deps, attrs=(), duration_micros=0):
    return Node(id=id, name=name, type=node_type(flavor, kind), data_deps=data_deps, ctrl_deps=ctrl_deps,
                duration_micros=duration_micros, attr=attrs)


def comp_node(flavor: str, id: int, name: str, duration_ns: int,
              data_deps: Sequence[int] = (), ctrl_deps: Sequence[int] = ()) -> Node:
    """COMP_NODE with only a duration (is_cpu_op left unset: the fork would run it as CPU work).
    The fork honours data_deps only; pass dependencies there."""
    return _node(flavor, "COMP_NODE", id, name, data_deps, ctrl_deps,
                 duration_micros=duration_field(flavor, duration_ns))


def mem_node(flavor: str, id: int, name: str, store: bool, tensor_size: int,
             tensor_loc: int = TensorLoc.REMOTE, tensor_device: int = 0,
             data_deps: Sequence[int] = (), ctrl_deps: Sequence[int] = ()) -> Node:
    """MEM_LOAD_NODE (store=False) or MEM_STORE_NODE. REMOTE by default: the memory file we write
    configures only remote_mem, and the fork exits on a level that is not configured."""
    if not TensorLoc.LOCAL <= tensor_loc <= TensorLoc.STORAGE:
        raise ValueError(f"tensor_loc must be 1..4 (LOCAL, REMOTE, CXL, STORAGE), got {tensor_loc}")
    attrs = [attribute("tensor_size", "uint64_val", tensor_size),
             attribute("tensor_loc", "uint32_val", int(tensor_loc)),
             attribute("tensor_device", "uint32_val", tensor_device)]
    kind = "MEM_STORE_NODE" if store else "MEM_LOAD_NODE"
    return _node(flavor, kind, id, name, data_deps, ctrl_deps, attrs)


def _p2p(flavor, kind, id, name, src, dst, size, tag, data_deps, ctrl_deps):
    if size <= 0:  # trips assert(chunk_size > 0) in the analytical network
        raise ValueError(f"{kind} comm_size must be > 0 bytes, got {size}")
    attrs = [attribute("comm_src", "int32_val", src), attribute("comm_dst", "int32_val", dst),
             attribute("comm_size", "int64_val", size), attribute("comm_tag", "int32_val", tag)]
    return _node(flavor, kind, id, name, data_deps, ctrl_deps, attrs)


def send_node(flavor: str, id: int, name: str, src: int, dst: int, size: int, tag: int,
              data_deps: Sequence[int] = (), ctrl_deps: Sequence[int] = ()) -> Node:
    """COMM_SEND_NODE; its RECV must agree on (tag, src, dst, size) or the run waits forever."""
    return _p2p(flavor, "COMM_SEND_NODE", id, name, src, dst, size, tag, data_deps, ctrl_deps)


def recv_node(flavor: str, id: int, name: str, src: int, dst: int, size: int, tag: int,
              data_deps: Sequence[int] = (), ctrl_deps: Sequence[int] = ()) -> Node:
    return _p2p(flavor, "COMM_RECV_NODE", id, name, src, dst, size, tag, data_deps, ctrl_deps)


def coll_node(flavor: str, id: int, name: str, comm_type: int, comm_size: int,
              involved_dim: Sequence[bool] | None = None,
              data_deps: Sequence[int] = (), ctrl_deps: Sequence[int] = (), pg_name: str | None = None) -> Node:
    """COMM_COLL_NODE; comm_size is the full tensor in bytes (the ring divides it). involved_dim
    unset means every dimension. pg_name: upstream's communicator group (an id of the
    --comm-group-configuration file); the fork ignores it (its group comes from that file)."""
    if comm_type not in SUPPORTED_COLLECTIVES:
        raise ValueError(f"comm_type {comm_type} is never issued by ASTRA-Sim (the run would hang); "
                         f"use one of {sorted(int(c) for c in SUPPORTED_COLLECTIVES)}")
    attrs = [attribute("comm_type", "int64_val", int(comm_type)), attribute("comm_size", "int64_val", comm_size)]
    if involved_dim is not None:
        attrs.append(attribute("involved_dim", "bool_list", [bool(d) for d in involved_dim]))
    if pg_name is not None:
        attrs.append(attribute("pg_name", "string_val", pg_name))
    return _node(flavor, "COMM_COLL_NODE", id, name, data_deps, ctrl_deps, attrs)


# ---- text -------------------------------------------------------------------------------------

def dump_text(nodes: Iterable, flavor: str = "llmservingsim") -> str:
    """One line per node; type names and the duration unit follow `flavor` (protobuf's own text
    format would name fork types with upstream numbers, e.g. a fork COMP_NODE as COMM_SEND_NODE)."""
    _check_flavor(flavor)
    unit = "ns" if DURATION_UNIT_NS[flavor] == 1 else "us"
    return "".join(
        f"id={n.id} type={node_type_name(flavor, n.type)} name={n.name} dur={n.duration_micros}{unit} "
        f"data_deps={list(n.data_deps)} ctrl_deps={list(n.ctrl_deps)} attr={attributes(n)}\n"
        for n in nodes)
