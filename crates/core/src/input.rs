//! [`InvalidInput`]: a value that fails validation at the edge. The leaf every value type of the
//! domain (ids, money, statuses, versions) reports through; it imports nothing of the crate.

/// A value that failed validation: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidInput {
    /// The field or value that was rejected, e.g. `segment status`.
    pub field: String,
    /// What is wrong with it, phrased for the caller.
    pub reason: String,
}

impl InvalidInput {
    /// Builds an error for `field` with a human-readable `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
