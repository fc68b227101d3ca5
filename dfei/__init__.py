"""dfei-ray: multi-domain CTR training with DFEI on Ray."""
__version__ = "0.1.0"
