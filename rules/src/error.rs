//! Config errors: syntax errors (the first one stops parsing) and semantic
//! problems (all reported at once), each naming file, line and key.

use std::fmt;

/// Loading a config failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is not valid TOML, or has an unknown key or a value of the
    /// wrong type. Parsing stops at the first one.
    #[error("{file}:{}: {}{message}", fmt_pos(*.line, *.column), fmt_key(.key.as_deref()))]
    Syntax {
        file: String,
        line: Option<usize>,
        column: Option<usize>,
        key: Option<String>,
        message: String,
    },
    /// The file parsed, but has one or more semantic problems.
    #[error("{}", fmt_problems(.problems))]
    Invalid { problems: Vec<Problem> },
}

impl ConfigError {
    /// Every problem, one per line, as `check` prints them.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Syntax { .. } => vec![self.to_string()],
            ConfigError::Invalid { problems } => problems.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// The semantic problems (empty for a syntax error).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Syntax { .. } => &[],
            ConfigError::Invalid { problems } => problems,
        }
    }
}

fn fmt_pos(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("{l}:{c}"),
        (Some(l), None) => l.to_string(),
        _ => "?".to_string(),
    }
}

fn fmt_key(key: Option<&str>) -> String {
    key.map(|k| format!("{k}: ")).unwrap_or_default()
}

fn fmt_problems(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    lines.join("\n")
}

/// One semantic problem in a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub file: String,
    /// 1-based line of the key, or of the nearest enclosing table when the
    /// key is missing.
    pub line: Option<usize>,
    /// Key path, e.g. `routes[1].split`.
    pub key: String,
    pub kind: ProblemKind,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}: {}", self.file, line, self.key, self.kind),
            None => write!(f, "{}: {}: {}", self.file, self.key, self.kind),
        }
    }
}

/// What is wrong. Messages say what was found and what is expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProblemKind {
    #[error("unknown upstream \"{name}\" (known: {known})")]
    UnknownUpstream { name: String, known: String },
    #[error("weights sum to {sum}, they must sum to 100")]
    WeightsSum { sum: String },
    #[error("{what} {value} is not a percentage between 0 and 100 with at most two decimals")]
    BadPercent { what: &'static str, value: String },
    #[error("invalid regex \"{pattern}\": {reason}")]
    BadRegex { pattern: String, reason: String },
    #[error("duplicate {what} name \"{name}\" (first defined on line {first_line})")]
    DuplicateName {
        what: &'static str,
        name: String,
        first_line: String,
    },
    #[error(
        "invalid duration \"{value}\": {reason} (write e.g. \"500ms\", \"10s\", \"5m\", \"7d\")"
    )]
    BadDuration { value: String, reason: String },
    #[error(
        "shadowing {method} sends writes to the shadow upstream; set allow_writes = true to do it on purpose"
    )]
    ShadowWrites { method: String },
    #[error("upstream has no urls; give at least one instance")]
    EmptyUpstreamList,
    #[error("invalid upstream url \"{url}\": {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{reason}")]
    ShiftTarget { reason: String },
    #[error("invalid address \"{value}\": expected IP:PORT such as 127.0.0.1:8080")]
    BadAddress { value: String },
    #[error("{reason}")]
    BadPath { reason: String },
    #[error("invalid method \"{value}\": methods are HTTP tokens such as GET or POST")]
    BadMethod { value: String },
    #[error("invalid {what} \"{value}\": expected {expected}")]
    BadValue {
        what: &'static str,
        value: String,
        expected: String,
    },
    #[error("{reason}")]
    Conflict { reason: String },
    #[error("missing {what}")]
    Missing { what: String },
}
