//! The admin API's answers as the TUI reads them: the wire types of
//! `strangler_api::wire`, re-exported so the TUI's paths stay, plus what the
//! TUI alone asks of them ([`RouteShift`]).

pub use strangler_api::wire::{
    DiffRecord, FieldView, History, RampView, RouteSummary, RouteView, ShadowView, Status, Summary,
    UpstreamStats, VersionView,
};

/// What `+` / `-` shift on a route.
pub trait RouteShift {
    /// The route's one upstream besides the default, if there is exactly
    /// one (what `+` / `-` shift).
    fn new_upstream(&self, default: &str) -> Option<String>;
}

impl RouteShift for RouteView {
    fn new_upstream(&self, default: &str) -> Option<String> {
        let mut names: Vec<&String> = self
            .split
            .keys()
            .chain(self.file_split.keys())
            .filter(|n| n.as_str() != default)
            .collect();
        names.sort();
        names.dedup();
        match names.as_slice() {
            [one] => Some((*one).clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_new_upstream_is_what_plus_and_minus_shift() {
        // The wire parsing itself is strangler_api::wire's to test.
        let s: Status = serde_json::from_str(
            r#"{"routes": [{"split": {"orders": 25, "monolith": 75}, "file_split": {"orders": 10, "monolith": 90}}]}"#,
        )
        .unwrap();
        assert_eq!(
            s.routes[0].new_upstream("monolith").as_deref(),
            Some("orders")
        );
    }

    #[test]
    fn no_single_new_upstream_means_none() {
        let s: Status = serde_json::from_str(
            r#"{"routes": [{"split": {"a": 50, "b": 50}}, {"split": {"monolith": 100}}]}"#,
        )
        .unwrap();
        assert_eq!(s.routes[0].new_upstream("monolith"), None);
        assert_eq!(s.routes[1].new_upstream("monolith"), None);
    }
}
