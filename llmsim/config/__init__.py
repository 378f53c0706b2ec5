from .cluster import ClusterConfig, InstanceConfig, MemSpec, load_cluster_config
from .model import ModelSpec, load_model_spec
from .moe import MoeSpec

__all__ = ["ClusterConfig", "InstanceConfig", "MemSpec", "load_cluster_config", "ModelSpec", "load_model_spec", "MoeSpec"]
