"""Guardrails, no torch: the policy and its decisions, the rules, the Llama Guard classifier, the stream filter."""
