//! Model-name patterns: exact names or globs with `*` (any run) and `?` (one
//! character). Used by routes (and later budgets) to match the model a client
//! sends.

/// A compiled model pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelPattern {
    /// Matches one name exactly.
    Exact(String),
    /// A glob with at least one `*` or `?`.
    Glob(String),
}

impl ModelPattern {
    /// Compiles a pattern; empty patterns are rejected.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a model pattern must not be empty".into());
        }
        if text.contains(['*', '?']) {
            Ok(Self::Glob(text.to_owned()))
        } else {
            Ok(Self::Exact(text.to_owned()))
        }
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(exact) => exact == name,
            Self::Glob(glob) => glob_matches(glob.as_bytes(), name.as_bytes()),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Exact(s) | Self::Glob(s) => s,
        }
    }
}

/// Iterative glob match with single-star backtracking: linear in practice,
/// no recursion, no allocation.
fn glob_matches(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        ModelPattern::parse(pattern)
            .map(|p| p.matches(name))
            .unwrap_or(false)
    }

    #[test]
    fn exact_and_globs() {
        assert!(m("gpt-4o", "gpt-4o"));
        assert!(!m("gpt-4o", "gpt-4o-mini"));
        assert!(m("gpt-4o-*", "gpt-4o-mini"));
        assert!(!m("gpt-4o-*", "gpt-4o"));
        assert!(m("*", "anything"));
        assert!(m("*", ""));
        assert!(m("claude-*-sonnet-*", "claude-3-5-sonnet-20241022"));
        assert!(!m("claude-*-sonnet-*", "claude-3-opus"));
        assert!(m("gpt-?o", "gpt-4o"));
        assert!(!m("gpt-?o", "gpt-40o"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(ModelPattern::parse("").is_err());
    }
}
