//! The inference engine: the Backend trait, the llama.cpp backend, chat templates, sampling, streaming, prefix-cache reuse, batching, log-probs and LoRA adapters at inference.
