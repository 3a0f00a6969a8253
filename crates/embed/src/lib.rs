//! Text embeddings: multilingual-e5-small from its 4-bit container, BERT/XLM-R safetensors folders, and OpenAI-compatible endpoints, behind one Embedder trait.
