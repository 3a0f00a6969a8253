//! Knowledge-base tables: documents, versions, chunks (owned by the RAG work).
