//! LoRA fine-tuning: governed datasets, training on a frozen quantized base, held-out evaluation, and adapters in the PEFT layout.
