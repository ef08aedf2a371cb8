"""Building blocks, each derived by hand and checked against finite differences: dense and ReLU
layers, softmax cross-entropy, convolution (loops and im2col), the conv block, layer normalisation,
the MLP-Mixer's parts (patch embedding, layer norm with scale and shift, GELU, token and channel
mixing, the block, pooling and head), optimisers and their schedules, gradient checks.

Tier 2 of 4: may import the ground (minimf.backend, checks, files, checkpoint) and nothing else of
minimf. The learning rules (minimf.rules) and the trainers (minimf.parallel) are built from these.
"""
