"""External components (XEP-0114, Jabber Component Protocol): bridges, gateways and bots that
run in a process of their own and serve a whole domain through this server.

- ``options``: the ``[components]`` section (listen addresses, and a secret per domain);
- ``stream``: the sans-IO ``jabber:component:accept`` stream (header, handshake, stanza checks);
- ``service``: the TCP listener, the connections, and the router's route for each configured
  domain (stanzas to it go to the connected component, or bounce while it is away).

Nothing is imported here: reading the configuration imports ``options`` alone.
"""
