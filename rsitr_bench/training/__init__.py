"""The shared training loop and the CLIP training helpers every trainable method uses."""
