"""End-to-end flows that chain data -> models -> convert -> evaluation."""
