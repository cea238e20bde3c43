//! Placeholder: filled in by the intercept work.
