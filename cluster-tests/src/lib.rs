//! Placeholder: helpers for cluster tests.
