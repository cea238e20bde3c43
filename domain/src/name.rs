//! Names of tenants, functions and nodes. They appear in paths, cgroup
//! names, container names and Raft keys, so they are short and plain:
//! 1–63 letters, digits, `-`, `_` or `.`, starting with a letter or digit.

use std::fmt;

/// Longest name.
pub const MAX_NAME: usize = 63;

/// A name that breaks the rules, with what it was meant to name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit")]
pub struct NameError {
    /// What the name is for (`tenant`, `function name`, `node id`).
    pub what: &'static str,
    /// The name as given.
    pub value: String,
}

/// Checks `value` as a name of `what`.
pub fn check(what: &'static str, value: &str) -> Result<(), NameError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME
        && value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(NameError {
            what,
            value: value.to_string(),
        })
    }
}

/// A function as users write it: `TENANT/FUNCTION`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionRef {
    /// The tenant that owns it.
    pub tenant: String,
    /// Its name inside the tenant.
    pub name: String,
}

/// `TENANT/FUNCTION` that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FunctionRefError {
    /// Not two parts around one `/`.
    #[error("expected TENANT/FUNCTION, got {0:?}")]
    Shape(String),
    /// A part is not a valid name.
    #[error(transparent)]
    Name(#[from] NameError),
}

impl FunctionRef {
    /// A reference to `tenant`'s function `name`, both validated.
    pub fn new(tenant: &str, name: &str) -> Result<FunctionRef, NameError> {
        check("tenant", tenant)?;
        check("function name", name)?;
        Ok(FunctionRef {
            tenant: tenant.to_string(),
            name: name.to_string(),
        })
    }

    /// Parses `TENANT/FUNCTION`.
    pub fn parse(text: &str) -> Result<FunctionRef, FunctionRefError> {
        match text.split_once('/') {
            Some((t, n)) if !t.is_empty() && !n.is_empty() && !n.contains('/') => {
                Ok(FunctionRef::new(t, n)?)
            }
            _ => Err(FunctionRefError::Shape(text.to_string())),
        }
    }
}

impl fmt::Display for FunctionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        assert!(check("tenant", "acme-1.prod_x").is_ok());
        for bad in ["", "-lead", "a/b", "sp ace", &"x".repeat(64), "ünï"] {
            let e = check("tenant", bad).unwrap_err();
            assert!(e.to_string().contains("invalid tenant"), "{e}");
        }
    }

    #[test]
    fn function_refs_parse_and_print() {
        let f = FunctionRef::parse("acme/io").unwrap();
        assert_eq!((f.tenant.as_str(), f.name.as_str()), ("acme", "io"));
        assert_eq!(f.to_string(), "acme/io");
        assert!(matches!(
            FunctionRef::parse("acme"),
            Err(FunctionRefError::Shape(_))
        ));
        assert!(matches!(
            FunctionRef::parse("acme/a/b"),
            Err(FunctionRefError::Shape(_))
        ));
        assert!(matches!(
            FunctionRef::parse("acme/-x"),
            Err(FunctionRefError::Name(_))
        ));
    }
}
