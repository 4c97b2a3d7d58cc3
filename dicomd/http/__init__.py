"""The XNAT-shaped HTTP API. Importing this package does not import FastAPI; `app` and `server` do."""
