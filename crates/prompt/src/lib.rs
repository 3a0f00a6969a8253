//! Prompt engineering: the prompt formula as typed fields, variables and their sources, lint,
//! the categorized library and immutable versions.
//!
//! - [`spec`]: the formula (Role + Task + Context + Data + Constraints + Output format + Quality
//!   criteria) with few-shot examples, reasoning mode and typed variables, as TOML/YAML.
//! - [`vars`]: typed variables, `{{dotted.path}}` substitution, `--var` flags.
//! - [`sources`]: JSON/CSV rows, HTTP JSON (CRM) sources, and the [`sources::Retriever`] trait.
//! - [`compile`]: spec + values → chat messages; rendering through the model's chat template.
//! - [`fewshot`]: dynamic few-shot by similarity.
//! - [`run`]: generation with JSON Schema validation and retry, two-stage, self-check.
//! - [`lint`]: findings, token count, cost per 1,000 calls.
//! - [`library`]: the built-in starter prompts.
//! - [`repo`]: immutable versions and labels in the store.

pub mod compile;
pub mod error;
pub mod fewshot;
pub mod library;
pub mod lint;
pub mod repo;
pub mod run;
pub mod sources;
pub mod spec;
pub mod vars;

pub use compile::{Compiled, CompileInput, compile};
pub use error::{PromptError, Result};
pub use repo::{PromptRepo, VersionRef};
pub use run::{EngineGenerator, GenOptions, Generator, RunResult};
pub use sources::{CitedChunk, DataSource, HttpSource, Retriever};
pub use spec::{Category, Format, PromptSpec};
pub use vars::Values;
