//! llama.cpp/ggml log routing: every line goes to `tracing` (target `llama_cpp`), and error
//! lines are remembered so an opaque llama.cpp failure (`NullResult`) can be reported with
//! its reason.

use std::ffi::{CStr, c_char, c_void};
use std::sync::Once;

use parking_lot::Mutex;

struct LogState {
    /// Lines logged at ERROR level, with a sequence number, most recent last.
    errors: Vec<(u64, String)>,
    seq: u64,
    /// The level of the last non-continuation message (for CONT lines).
    last_level: u32,
    /// An unfinished line (no trailing newline yet).
    partial: String,
}

static STATE: Mutex<LogState> =
    Mutex::new(LogState { errors: Vec::new(), seq: 0, last_level: 0, partial: String::new() });
static INSTALL: Once = Once::new();

const KEEP: usize = 32;

fn emit(level: u32, line: &str) {
    let line = line.trim_end();
    if line.is_empty() {
        return;
    }
    match level {
        llama_cpp_sys_2::GGML_LOG_LEVEL_ERROR => tracing::debug!(target: "llama_cpp", "{line}"),
        llama_cpp_sys_2::GGML_LOG_LEVEL_WARN => tracing::debug!(target: "llama_cpp", "{line}"),
        _ => tracing::trace!(target: "llama_cpp", "{line}"),
    }
}

unsafe extern "C" fn on_log(level: llama_cpp_sys_2::ggml_log_level, text: *const c_char, _: *mut c_void) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string valid for the call.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let mut st = STATE.lock();
    let level = if level == llama_cpp_sys_2::GGML_LOG_LEVEL_CONT { st.last_level } else { level };
    st.last_level = level;
    st.partial.push_str(&text);
    if !st.partial.ends_with('\n') {
        return;
    }
    let line = std::mem::take(&mut st.partial);
    if level == llama_cpp_sys_2::GGML_LOG_LEVEL_ERROR {
        st.seq += 1;
        let seq = st.seq;
        st.errors.push((seq, line.trim().to_string()));
        if st.errors.len() > KEEP {
            st.errors.remove(0);
        }
    }
    drop(st);
    emit(level, &line);
}

/// Installs the log callback (once per process).
pub fn install() {
    INSTALL.call_once(|| {
        // SAFETY: the callback is a plain function valid for the whole process; it sets both
        // llama.cpp's and ggml's loggers.
        unsafe { llama_cpp_sys_2::llama_log_set(Some(on_log), std::ptr::null_mut()) };
    });
}

/// A point in the error log; [`errors_since`] gives what was logged after it.
pub fn mark() -> u64 {
    STATE.lock().seq
}

/// The error lines logged since `mark`, joined with " / " (or a generic note when none).
pub fn errors_since(mark: u64) -> String {
    let st = STATE.lock();
    let lines: Vec<&str> =
        st.errors.iter().filter(|(s, _)| *s > mark).map(|(_, l)| l.as_str()).collect();
    if lines.is_empty() {
        "no reason given (see the log with -v)".to_string()
    } else {
        lines.join(" / ")
    }
}
