"""CLIP backbones: open_clip models built from a name and weights, and the content-addressed feature cache."""
