"""Chakra execution traces (.et) for ASTRA-Sim: schema (et_def.proto / et_def.py) and codec.

Written from the Chakra writer's spec; what we write is in docs/chakra-et.md. Importing needs only the protobuf runtime.
"""
from .codec import (DURATION_UNIT_NS, FLAVORS, NODE_TYPES, SUPPORTED_COLLECTIVES, TensorLoc, attribute,
                    attribute_value, attributes, coll_node, comp_node, decode_et, dump_text, duration_field,
                    duration_ns, encode_et, global_metadata, mem_node, node_type, node_type_name, read_et,
                    recv_node, send_node, write_et)
from .et_def import AttributeProto, CollectiveCommType, GlobalMetadata, IOInfo, Node, NodeType

__all__ = ["AttributeProto", "CollectiveCommType", "DURATION_UNIT_NS", "FLAVORS", "GlobalMetadata", "IOInfo",
           "NODE_TYPES", "Node", "NodeType", "SUPPORTED_COLLECTIVES", "TensorLoc", "attribute",
           "attribute_value", "attributes", "coll_node", "comp_node", "decode_et", "dump_text",
           "duration_field", "duration_ns", "encode_et", "global_metadata", "mem_node", "node_type",
           "node_type_name", "read_et", "recv_node", "send_node", "write_et"]
