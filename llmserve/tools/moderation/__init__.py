"""scripts/moderation_report: the guardrails measured as a classifier on a labelled corpus."""
