"""Pure PyTorch models (this package must not import ray)."""
from dfei.models.dfei import DFEI, DFEIConfig, DomainFeatureExtraction, DomainFeatureIntegration
from dfei.models.layers import MLP, FeatureEmbedding
from dfei.models.registry import BASELINES, MODELS, build_model

__all__ = [
    "DFEI", "DFEIConfig", "DomainFeatureExtraction", "DomainFeatureIntegration",
    "MLP", "FeatureEmbedding", "MODELS", "BASELINES", "build_model",
]
