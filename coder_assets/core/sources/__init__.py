"""Sources stage: repositories, their mirrors and the snapshot of one commit."""
