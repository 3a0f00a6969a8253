//! The HTTP server: OpenAI-compatible API, REST and the web UI.
