"""Federation (RFC 6120 server-to-server): the sans-IO stream (``stream``), peer authentication
(``certs`` for PKIX + RFC 6125, ``dialback`` for XEP-0220 keys), DNS (``dns``) and the asyncio side
(``net``: the listener, the outgoing connector, the router's ``remote``)."""
