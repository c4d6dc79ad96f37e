"""The gateway: public gRPC API, stream registry, event fan-out."""
