"""Pure MQTT meter payload decoders: bytes + topic + device context -> ``energy.meter_reading`` v1.0.

Each decoder is a side-effect-free function (no I/O, no clock reads), so that the delivery layer can ack a
message only after every reading derived from it is sunk, and so that decoders are testable on real captures.
"""
