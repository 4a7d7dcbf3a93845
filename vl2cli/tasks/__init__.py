"""The pipeline behind `vl2 caption|ask|classify` and the library API (import the submodules)."""
