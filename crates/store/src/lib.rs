//! Storage: the embedded SQLite store shared by the knowledge base, prompts and adapters.
