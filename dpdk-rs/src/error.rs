use std::ffi::CStr;
use std::fmt;

use crate::sys;

/// A DPDK call that failed: which function, the errno-style code, and `rte_strerror`'s text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkError {
    pub function: &'static str,
    pub code: i32,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, DpdkError>;

impl DpdkError {
    /// An error from an errno value (positive or negative, DPDK uses both).
    pub fn from_code(function: &'static str, code: i32) -> Self {
        let code = code.abs();
        // SAFETY: rte_strerror accepts any int and returns a pointer to a static or
        // thread-local NUL-terminated string that stays valid until the next call on this thread;
        // it is copied out at once.
        let message = unsafe { CStr::from_ptr(sys::rte_strerror(code)) }
            .to_string_lossy()
            .into_owned();
        DpdkError {
            function,
            code,
            message,
        }
    }

    /// An error whose code is in `rte_errno` (functions that return -1 or NULL).
    pub fn from_rte_errno(function: &'static str) -> Self {
        // SAFETY: reads this thread's rte_errno through the shim; no preconditions.
        let code = unsafe { sys::l4lb_errno() };
        Self::from_code(function, code)
    }

    /// An error the safe layer detects itself, before calling DPDK.
    pub fn usage(function: &'static str, message: impl Into<String>) -> Self {
        DpdkError {
            function,
            code: libc_einval(),
            message: message.into(),
        }
    }
}

const fn libc_einval() -> i32 {
    22
}

/// Turns a DPDK status (0 or positive = success, negative errno = failure) into a Result.
pub(crate) fn check(function: &'static str, ret: i32) -> Result<i32> {
    if ret < 0 {
        Err(DpdkError::from_code(function, ret))
    } else {
        Ok(ret)
    }
}

impl fmt::Display for DpdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (errno {})",
            self.function, self.message, self.code
        )
    }
}

impl std::error::Error for DpdkError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_codes_read_as_errno_with_dpdk_text() {
        let e = DpdkError::from_code("rte_eth_dev_configure", -22);
        assert_eq!(e.code, 22);
        assert_eq!(e.message, "Invalid argument");
        assert_eq!(
            e.to_string(),
            "rte_eth_dev_configure: Invalid argument (errno 22)"
        );
    }

    #[test]
    fn dpdk_specific_codes_use_rte_strerror_text() {
        // RTE_MIN_ERRNO + 1 = E_RTE_SECONDARY: not a libc errno, only rte_strerror knows it.
        let e = DpdkError::from_code("rte_mempool_create", (sys::RTE_MIN_ERRNO + 1) as i32);
        assert_eq!(e.message, "Invalid call in secondary process");
    }

    #[test]
    fn check_passes_non_negative_values_through() {
        assert_eq!(check("f", 3), Ok(3));
        assert_eq!(
            check("f", -12).unwrap_err().message,
            "Cannot allocate memory"
        );
    }
}
