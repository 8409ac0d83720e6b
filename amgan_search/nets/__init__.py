"""The networks: AMGAN's generator and discriminators, and the CNN+CAM attribute classifier."""
