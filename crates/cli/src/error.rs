//! Mapping errors to exit codes: 2 for bad usage or bad input, 1 for runtime failures.

/// An error caused by the user's input (bad flag value, bad file, unknown name): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Returns `Err(BadInput)` with a formatted message.
#[macro_export]
macro_rules! bad_input {
    ($($arg:tt)*) => { anyhow::Error::new($crate::error::BadInput(format!($($arg)*))) };
}

/// Exit code for bad usage or bad input.
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit code for runtime failures.
pub const EXIT_RUNTIME: i32 = 1;

/// The exit code for an error: 2 when any error in its chain is the user's, else 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if is_user_error(err) { EXIT_BAD_INPUT } else { EXIT_RUNTIME }
}

/// True when any error in the chain is the user's fault.
pub fn is_user_error(err: &anyhow::Error) -> bool {
    for cause in err.chain() {
        if cause.downcast_ref::<BadInput>().is_some() {
            return true;
        }
        // Each crate's error type says whether it is the user's fault.
        // (Add a line here when a crate's error type appears in command results.)
        if let Some(e) = cause.downcast_ref::<trident_models::Error>() {
            return e.is_user_error();
        }
        if let Some(e) = cause.downcast_ref::<trident_prompt::PromptError>() {
            return e.is_user_error();
        }
        if let Some(e) = cause.downcast_ref::<trident_rag::RagError>() {
            return e.is_user_error();
        }
        if let Some(e) = cause.downcast_ref::<trident_engine::EngineError>() {
            return e.is_user_error();
        }
    }
    false
}
