//! State a route policy keeps across reloads and runtime changes (a rate
//! limiter's buckets, a cache's entries): one instance per route name,
//! reused while the route's settings for it stay the same, made anew when
//! they change, dropped when the route or its setting is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use strangler_rules::Config;
use strangler_rules::config::Route;

/// A policy with per-route state built from a part of the route's config.
pub trait RoutePolicy: Sized {
    type Spec: PartialEq;
    /// The route's settings for this policy, if it has any.
    fn spec_of(route: &Route) -> Option<&Self::Spec>;
    /// The settings this instance was built from.
    fn spec(&self) -> &Self::Spec;
    fn build(spec: &Self::Spec) -> Option<Self>;
}

/// Every route's instance of a policy, by route name.
#[derive(Debug)]
pub struct PerRoute<T> {
    by_route: Mutex<HashMap<String, Arc<T>>>,
}

impl<T> Default for PerRoute<T> {
    fn default() -> Self {
        PerRoute {
            by_route: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: RoutePolicy> PerRoute<T> {
    /// The live instances for `config`'s routes, in route order.
    pub fn for_config(&self, config: &Config) -> Vec<Option<Arc<T>>> {
        let mut map = self.by_route.lock().unwrap_or_else(|e| e.into_inner());
        let out = config
            .routes
            .iter()
            .map(|r| {
                let spec = T::spec_of(r)?;
                if let Some(existing) = map.get(&r.name)
                    && existing.spec() == spec
                {
                    return Some(existing.clone());
                }
                let fresh = Arc::new(T::build(spec)?);
                map.insert(r.name.clone(), fresh.clone());
                Some(fresh)
            })
            .collect();
        map.retain(|name, _| config.route(name).is_some_and(|r| T::spec_of(r).is_some()));
        out
    }

    /// Every instance by route name, sorted (for metrics and timers).
    pub fn all(&self) -> Vec<(String, Arc<T>)> {
        let map = self.by_route.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map.iter().map(|(k, t)| (k.clone(), t.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}
