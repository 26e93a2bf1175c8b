"""setup() and what it wires: weights on disk, the engine, the moderation stage, the Answerer."""
