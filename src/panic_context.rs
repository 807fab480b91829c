//! Panics are bugs, and a bug report needs the input that triggered it. Jobs name what they are
//! processing ([`input`]: a scan, a table, a run folder) on the current thread; the panic hook
//! installed by [`install_hook`] prints the panic with that context, and the binary exits non-zero.
//!
//! `ADFIT_INJECT_PANIC=<text>` makes [`input`] panic when the named input contains `<text>`: a
//! fault injection that lets the test suite check this path end to end.

use std::cell::RefCell;

thread_local! {
    static INPUTS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Pops its input when dropped.
pub struct InputGuard(());

impl Drop for InputGuard {
    fn drop(&mut self) {
        INPUTS.with(|s| {
            s.borrow_mut().pop();
        });
    }
}

/// Name what this thread is now processing, until the guard drops.
pub fn input(what: impl std::fmt::Display) -> InputGuard {
    let what = what.to_string();
    if let Ok(needle) = std::env::var("ADFIT_INJECT_PANIC") {
        if !needle.is_empty() && what.contains(&needle) {
            INPUTS.with(|s| s.borrow_mut().push(what.clone()));
            panic!("injected panic (ADFIT_INJECT_PANIC={needle})");
        }
    }
    INPUTS.with(|s| s.borrow_mut().push(what));
    InputGuard(())
}

/// What this thread is processing, outermost first ("" when nothing was named).
pub fn current() -> String {
    INPUTS.with(|s| s.borrow().join(" > "))
}

/// Print panics as adfit errors with the input being processed; Rust's own message follows
/// with RUST_BACKTRACE=1.
pub fn install_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let context = current();
        eprintln!("error: internal error (a bug in adfit, please report it): {msg}{at}");
        if !context.is_empty() {
            eprintln!("  while processing: {context}");
        }
        if std::env::var_os("RUST_BACKTRACE").is_some() {
            default(info);
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_nests_and_unwinds() {
        assert_eq!(current(), "");
        let _a = input("table.csv");
        {
            let _b = input("scan s1.nii.gz");
            assert_eq!(current(), "table.csv > scan s1.nii.gz");
        }
        assert_eq!(current(), "table.csv");
    }
}
