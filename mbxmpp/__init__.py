"""mbxmpp: an XMPP server with Cython hot paths."""

__version__ = "0.1.0"
