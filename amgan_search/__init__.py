"""amgan-search: attribute-manipulation retrieval for fashion catalogs (AMGAN, Ak et al., ICCV 2019)."""

__version__ = "0.1.0"
