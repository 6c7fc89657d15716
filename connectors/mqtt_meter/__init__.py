"""MQTT meter-hub connector family: delivery, topic routing and the pure payload decoders."""
