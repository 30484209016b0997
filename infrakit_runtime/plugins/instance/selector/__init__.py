"""Selector instance plugins (InfraKit's ``spread``, ``tiered``, ``weighted``): one instance plugin over many.

A selector is an instance plugin whose Properties are a list of choices, each another instance
plugin with its own Properties (a zone's subnet, a spot market, a bare-metal pool). It places
each new instance on one choice, describes the members of every choice as one group, and routes
Label and Destroy to the plugin that owns the instance. ``choices`` parses and validates the
Properties, ``placement`` decides (pure), ``plugin`` acts through an instance-plugin lookup, and
``daemon`` serves it over RPC.
"""
