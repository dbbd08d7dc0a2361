"""One module per interface: its request/response shapes and their mapping onto ``EditParams``."""
