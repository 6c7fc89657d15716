"""The sink's partitioner: the Java client's partitions, with the key hash computed once per key and in C.

``core/_speedups.c``'s murmur2 must equal aiokafka's pure-Python one (what the Java client computes) on every key,
or events would land on other partitions than other Kafka clients put the same keys on.
"""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as reference
from hypothesis import given, settings
from hypothesis import strategies as st

from inlet.core.sinks import kafka as kafka_sink
from inlet.core.sinks.kafka import KeyHashPartitioner

COMPILED = kafka_sink.key_hash is not reference


@pytest.mark.skipif(not COMPILED, reason="the compiled helpers are not built here (CI requires them)")
@settings(max_examples=3000, deadline=None)
@given(key=st.binary(max_size=300))
def test_the_compiled_hash_equals_the_java_clients(key: bytes) -> None:
    assert kafka_sink.key_hash(key) == reference(key)
    assert kafka_sink.key_hash(bytearray(key)) == reference(key)


@settings(max_examples=500, deadline=None)
@given(key=st.binary(min_size=1, max_size=64), partitions=st.integers(1, 64))
def test_partitions_are_the_default_partitioners(key: bytes, partitions: int) -> None:
    every = list(range(partitions))
    chosen = KeyHashPartitioner(max_keys=4)
    assert chosen(key, every, every) == DefaultPartitioner()(key, every, every)
    assert chosen(key, every, every) == DefaultPartitioner()(key, every, every)  # from the cache


# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (Java ints; as unsigned 32-bit values here)
JAVA_VALUES = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("key", "java"), JAVA_VALUES.items(), ids=[k.decode()[:12] for k in JAVA_VALUES])
def test_the_java_clients_own_values(key: bytes, java: int) -> None:
    assert kafka_sink.key_hash(key) == reference(key) == java & 0xFFFFFFFF
