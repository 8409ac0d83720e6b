"""The `amgan-search` command line: thin click commands over the library."""
