//! Placeholder: filled in by the node-agent work.
