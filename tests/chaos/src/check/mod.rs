//! The checks of a run, after healing: each returns the anomalies it found (empty: it passed),
//! so the report can name every check that ran.

pub mod history;
pub mod linear;
pub mod models;
pub mod state;

use serde::{Deserialize, Serialize};

/// The outcome of one named check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checked {
    pub name: String,
    /// What was checked (e.g. "412 keys", "231 acknowledged calls").
    pub scope: String,
    pub anomalies: Vec<String>,
}

impl Checked {
    pub fn new(name: &str, scope: impl Into<String>, anomalies: Vec<String>) -> Self {
        Checked {
            name: name.into(),
            scope: scope.into(),
            anomalies,
        }
    }

    pub fn passed(&self) -> bool {
        self.anomalies.is_empty()
    }
}
