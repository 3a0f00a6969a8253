//! Prompt engineering: the prompt formula as typed fields, variables and their sources, lint, the categorized library and immutable versions.
