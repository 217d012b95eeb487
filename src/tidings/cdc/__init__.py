"""Change data capture: foreign records (Debezium's change events) into a service.

:mod:`tidings.cdc.debezium` decodes Debezium's JSON change events into envelopes, for
``Service.foreign(topic, Debezium(types))``; :mod:`tidings.cdc.connect` registers and
removes Debezium connectors on a Kafka Connect worker (``tidings cdc``).
"""
