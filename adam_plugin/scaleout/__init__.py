"""Tools for training with ``'myadam'`` on several processes and hosts.

- :mod:`.launch`: ``python -m adam_plugin.scaleout.launch``, a distributed-KVStore job on one host.

The optimizer's own behaviour in a distributed job lives in :mod:`adam_plugin.distributed`.
"""
__all__ = ['launch']
