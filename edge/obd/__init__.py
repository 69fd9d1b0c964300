"""OBD-II over an ELM327: command table and decoders (pids), transport (elm327), polling (reader)."""
