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

/// The exit code for an error: 2 when any error in its chain is the user's, else 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.downcast_ref::<BadInput>().is_some() {
            return 2;
        }
        // Each crate's error type says whether it is the user's fault.
        // (Add a line here when a crate's error type appears in command results.)
    }
    1
}
