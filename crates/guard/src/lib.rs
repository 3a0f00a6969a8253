//! Safety and governance: personal-data detection and masking, guardrails, and the audit log.
