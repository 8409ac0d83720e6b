"""The networks: AMGAN's generator and discriminators, and the CNN+CAM attribute classifier."""

# G's up-sampling, declared here, without torch, so the CLI offers the choice without importing it.
# "resize": nearest-neighbour x2 then a 3x3 convolution (Odena et al., "Deconvolution and
# checkerboard artifacts", 2016); "deconv": StarGAN's 4x4 stride-2 transposed convolutions. The
# paper does not say; our default is "resize": the transposed convolutions left a dot grid over
# every edit of the short CPU runs, which costs fidelity wherever alpha is open.
UPSAMPLE = "resize"
UPSAMPLINGS = (UPSAMPLE, "deconv")
# What a model's config.json without "upsample" means: models written before the choice was
# recorded used transposed convolutions. A fact of the file format, not a default to pick.
UNRECORDED_UPSAMPLE = "deconv"
