"""The embedded demo: sample repositories and the local setup that runs without a homelab."""
