"""Harnesses shared by the tests and the benchmarks: a raw MQTT client
(:mod:`.mqtt_client`), the one ``tidelog serve`` launcher, overload probes.

Nothing else in tidelog imports this package (tests/test_layering.py).
"""
