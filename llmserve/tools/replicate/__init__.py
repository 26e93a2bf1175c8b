"""Publishing to Replicate: scripts/push and scripts/deploy, and the client the other tools share."""
