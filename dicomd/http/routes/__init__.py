"""Route modules: each is thin over the library and exposes a module-level `router`."""
