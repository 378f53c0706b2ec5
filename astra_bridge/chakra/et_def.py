"""Chakra ET message classes, built at import time from the same schema as et_def.proto.

Why not a protoc-generated et_def_pb2.py: generated code is tied to the protobuf runtime that reads
it (newer gencode refuses older runtimes, and runtimes only promise to accept gencode up to one major
version older), and it registers `ChakraProtoMsg.*` in the process-wide default pool, which clashes
with a Chakra package installed beside us (LLMServingSim users have the fork's, whose NodeType differs).
Building a FileDescriptorProto here and adding it to a private DescriptorPool uses only public,
long-stable protobuf API, needs no compiler at build or run time, and works with any runtime the
project allows (protobuf>=4.21). tests/test_chakra.py checks this schema against et_def.proto.
"""
import enum

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "ChakraProtoMsg"
_F = descriptor_pb2.FieldDescriptorProto

# AttributeProto's oneof pairs, in field-number order: <t>_val = 3 + 2i, <t>_list = 4 + 2i.
SCALARS = ("double", "float", "int32", "int64", "uint32", "uint64", "sint32", "sint64",
           "fixed32", "fixed64", "sfixed32", "sfixed64", "bool", "string", "bytes")
LIST_MESSAGES = {t: t.capitalize() + "List" for t in SCALARS}  # int32 -> Int32List, ...

ENUMS = {
    # Upstream numbering; the fork's is in codec.NODE_TYPES (same wire field, different numbers).
    "NodeType": ("INVALID_NODE", "METADATA_NODE", "MEM_LOAD_NODE", "MEM_STORE_NODE", "COMP_NODE",
                 "COMM_SEND_NODE", "COMM_RECV_NODE", "COMM_COLL_NODE"),
    "CollectiveCommType": ("ALL_REDUCE", "REDUCE", "ALL_GATHER", "GATHER", "SCATTER", "BROADCAST",
                           "ALL_TO_ALL", "REDUCE_SCATTER", "REDUCE_SCATTER_BLOCK", "BARRIER"),
}

# (name, number, type, repeated); a type that is not a scalar names a message or enum of this file.
_U64 = "uint64"
MESSAGES = {
    "AttributeProto": [("name", 1, "string", False), ("doc_string", 2, "string", False)]
    + [f for i, t in enumerate(SCALARS)
       for f in ((f"{t}_val", 3 + 2 * i, t, False), (f"{t}_list", 4 + 2 * i, LIST_MESSAGES[t], False))],
    **{LIST_MESSAGES[t]: [("values", 1, t, True)] for t in SCALARS},
    "GlobalMetadata": [("version", 1, "string", False), ("attr", 2, "AttributeProto", True)],
    "Node": [("id", 1, _U64, False), ("name", 2, "string", False), ("type", 3, "NodeType", False),
             ("ctrl_deps", 4, _U64, True), ("data_deps", 5, _U64, True),
             ("start_time_micros", 6, _U64, False), ("duration_micros", 7, _U64, False),
             ("inputs", 8, "IOInfo", False), ("outputs", 9, "IOInfo", False),
             ("attr", 10, "AttributeProto", True)],
    "IOInfo": [("values", 1, "string", False), ("shapes", 2, "string", False), ("types", 3, "string", False)],
    "Tensor": [(n, i + 1, _U64, False) for i, n in
               enumerate(("tensor_id", "storage_id", "offset", "num_elem", "elem_bytes"))]
    + [("device", 6, "string", False)],
}


def file_descriptor_proto() -> descriptor_pb2.FileDescriptorProto:
    """The schema as protoc would describe et_def.proto (same message/enum order)."""
    fdp = descriptor_pb2.FileDescriptorProto(name="et_def.proto", package=PACKAGE, syntax="proto3")
    for name, fields in MESSAGES.items():
        msg = fdp.message_type.add(name=name)
        if name == "AttributeProto":
            msg.oneof_decl.add(name="value")
        for fname, number, ftype, repeated in fields:
            f = msg.field.add(name=fname, number=number,
                              label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
            if ftype in SCALARS:
                f.type = getattr(_F, "TYPE_" + ftype.upper())
            else:
                f.type = _F.TYPE_ENUM if ftype in ENUMS else _F.TYPE_MESSAGE
                f.type_name = f".{PACKAGE}.{ftype}"
            if name == "AttributeProto" and number >= 3:
                f.oneof_index = 0
    for name, values in ENUMS.items():
        e = fdp.enum_type.add(name=name)
        for number, value in enumerate(values):
            e.value.add(name=value, number=number)
    return fdp


_POOL = descriptor_pool.DescriptorPool()  # private: never collides with another Chakra binding
_POOL.AddSerializedFile(file_descriptor_proto().SerializeToString())
DESCRIPTOR = _POOL.FindFileByName("et_def.proto")


def _message_class(name: str):
    desc = DESCRIPTOR.message_types_by_name[name]
    if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.22; GetPrototype is gone in 5.x+
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(_POOL).GetPrototype(desc)


globals().update({name: _message_class(name) for name in MESSAGES})
NodeType = enum.IntEnum("NodeType", {v: i for i, v in enumerate(ENUMS["NodeType"])})
CollectiveCommType = enum.IntEnum("CollectiveCommType",
                                  {v: i for i, v in enumerate(ENUMS["CollectiveCommType"])})

__all__ = ["DESCRIPTOR", "NodeType", "CollectiveCommType", "file_descriptor_proto", *MESSAGES]
