"""smartcity record contracts: the one definition of the five record types."""
from .envelope import event_id, format_ts, mqtt_topic, parse_mqtt_topic, parse_ts, TOPIC_PREFIX
from .schema import (BY_NAME, BY_STREAM, ENVELOPE, RECORD_TYPES, SCHEMA_VERSION, STREAMS, Field,
                     RecordType, example, record_type)
from .validate import ContractError, Violation, checker, validate, violations
from .wire import encode

__all__ = [
    "BY_NAME", "BY_STREAM", "ENVELOPE", "RECORD_TYPES", "SCHEMA_VERSION", "STREAMS", "Field",
    "RecordType", "example", "record_type", "ContractError", "Violation", "checker", "validate", "violations",
    "encode", "event_id", "format_ts", "mqtt_topic", "parse_mqtt_topic", "parse_ts", "TOPIC_PREFIX",
]
