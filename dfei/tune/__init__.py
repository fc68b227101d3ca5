"""Ray Tune sweeps over DFEI's alpha and k, driving the same train loop as train.py."""
