//! Training-side model code on candle: one file per model family (plain Config + forward) with LoRA-ready projection layers, loaded from the same GGUF files llama.cpp serves.
