"""The network: attention, ViT blocks, grid positional embeddings, denoiser MLP, heads, masking, the D-JEPA model.

Imports nothing from the engine or the command line.
"""
