"""Deployment stage: installing, publishing and serving an adapter on waterdeep."""
