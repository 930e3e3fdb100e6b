//! The compiled, immutable route table: built once from a validated config
//! (off the hot path), shared behind an `Arc` and swapped whole when the
//! config or the runtime layer changes. Finding a route allocates at most a
//! small candidate list and never locks.

use std::sync::Arc;

use crate::config::Config;
use crate::index::PathIndex;
use crate::matcher::RequestView;
use crate::split::{Split, UpstreamId, bucket};

/// What a request matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An aggregate, by position in [`Config::aggregates`].
    Aggregate(usize),
    /// A route, by position in [`Config::routes`].
    Route(usize),
    /// No route: the default upstream.
    Default,
}

/// How the upstream was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// From the sticky key's bucket.
    Sticky { bucket: u16 },
    /// From a random bucket (no sticky key, or the key was absent).
    Random { bucket: u16 },
    /// The split (or the default) sends everything to one upstream.
    Fixed,
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub target: Target,
    /// `None` for aggregates, whose parts are routed one by one.
    pub upstream: Option<UpstreamId>,
    pub choice: Choice,
}

/// The compiled route table.
#[derive(Debug)]
pub struct RouteTable {
    config: Arc<Config>,
    /// The live split of each route: the file's, or a runtime override.
    splits: Vec<Split>,
    routes: PathIndex,
    aggregates: PathIndex,
}

impl RouteTable {
    /// Compiles the table with the file's splits.
    pub fn new(config: Arc<Config>) -> Self {
        let splits = config.routes.iter().map(|r| r.split.clone()).collect();
        Self::with_splits(config, splits)
    }

    /// Compiles the table with live splits (one per route, in route order),
    /// e.g. the file's with runtime overrides on top. Missing entries fall
    /// back to the file's split.
    pub fn with_splits(config: Arc<Config>, mut splits: Vec<Split>) -> Self {
        splits.truncate(config.routes.len());
        for r in config.routes.iter().skip(splits.len()) {
            splits.push(r.split.clone());
        }
        let routes = PathIndex::build(config.routes.iter().map(|r| &r.matcher));
        let aggregates = PathIndex::build(config.aggregates.iter().map(|a| &a.matcher));
        RouteTable {
            config,
            splits,
            routes,
            aggregates,
        }
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The live split of route `i`.
    pub fn split(&self, i: usize) -> &Split {
        &self.splits[i]
    }

    /// The first aggregate, else the first route in file order, whose
    /// matchers all pass; else the default.
    #[inline]
    pub fn find<R: RequestView + ?Sized>(&self, req: &R) -> Target {
        let path = req.path();
        if !self.config.aggregates.is_empty() {
            let aggs = &self.config.aggregates;
            if let Some(i) = self
                .aggregates
                .first_match(path, |i| aggs[i as usize].matcher.check_rest(req).is_ok())
            {
                return Target::Aggregate(i as usize);
            }
        }
        let routes = &self.config.routes;
        match self
            .routes
            .first_match(path, |i| routes[i as usize].matcher.check_rest(req).is_ok())
        {
            Some(i) => Target::Route(i as usize),
            None => Target::Default,
        }
    }

    /// The route and upstream for `req`. `random_bucket` is called only when
    /// a random choice is needed and must return a value in 0..10000.
    #[inline]
    pub fn decide<R: RequestView + ?Sized>(
        &self,
        req: &R,
        random_bucket: impl FnOnce() -> u16,
    ) -> Decision {
        let target = self.find(req);
        match target {
            Target::Aggregate(_) => Decision {
                target,
                upstream: None,
                choice: Choice::Fixed,
            },
            Target::Default => Decision {
                target,
                upstream: Some(self.config.default_upstream),
                choice: Choice::Fixed,
            },
            Target::Route(i) => {
                let (upstream, choice) = self.choose(i, req, random_bucket);
                Decision {
                    target,
                    upstream: Some(upstream),
                    choice,
                }
            }
        }
    }

    /// The upstream route `i`'s live split gives `req`.
    #[inline]
    pub fn choose<R: RequestView + ?Sized>(
        &self,
        i: usize,
        req: &R,
        random_bucket: impl FnOnce() -> u16,
    ) -> (UpstreamId, Choice) {
        let split = &self.splits[i];
        if let Some(only) = split.is_single() {
            return (only, Choice::Fixed);
        }
        let route = &self.config.routes[i];
        if let Some(value) = route.sticky.as_ref().and_then(|k| k.value(req)) {
            let b = bucket(route.sticky_seed, value);
            return (split.choose(b), Choice::Sticky { bucket: b });
        }
        let b = random_bucket() % crate::split::BUCKETS;
        (split.choose(b), Choice::Random { bucket: b })
    }

    /// The reference lookup: every aggregate and route in order, checked
    /// directly. Tests compare [`RouteTable::find`] against it.
    pub fn find_linear<R: RequestView + ?Sized>(&self, req: &R) -> Target {
        if let Some(i) = self
            .config
            .aggregates
            .iter()
            .position(|a| a.matcher.check(req).is_ok())
        {
            return Target::Aggregate(i);
        }
        match self
            .config
            .routes
            .iter()
            .position(|r| r.matcher.check(req).is_ok())
        {
            Some(i) => Target::Route(i),
            None => Target::Default,
        }
    }
}
