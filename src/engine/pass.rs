//! The contract of lookout's graph passes (as tract's `TypedPass`): each swaps tract ops for
//! lookout's where they compute the same thing, and says when it must run. The op files implement
//! it; [`super::passes`] lists them and [`super::optimize`] applies them, so this leaf names none.

use tract_core::internal::*;

/// Where in tract's optimisation a pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// On the typed model after constant propagation, before decluttering and codegen (which
    /// rewrite the ops a pass would look for).
    BeforeOptimise,
    /// On the optimised model, swapping ops in place.
    AfterOptimise,
}

pub trait GraphPass {
    /// The lookout op it swaps in (`QConv`, `SelectTopk`, …), for logs and [`Rewrites`].
    fn name(&self) -> &'static str;
    /// What it replaces, for the log line: "quantized Conv", "TopK", ….
    fn replaces(&self) -> &'static str;
    fn stage(&self) -> Stage;
    /// Swaps every node it recognises; returns how many.
    fn run(&self, model: &mut TypedModel) -> TractResult<usize>;
}

/// What the passes swapped in: node counts per pass, in the order they ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrites {
    counts: Vec<(&'static str, &'static str, usize)>,
}

impl Rewrites {
    pub(super) fn record(&mut self, pass: &dyn GraphPass, n: usize) {
        self.counts.push((pass.name(), pass.replaces(), n));
    }
    /// Nodes swapped by the pass named `name` (0 when it did not run).
    pub fn count(&self, name: &str) -> usize {
        self.counts
            .iter()
            .filter(|(n, _, _)| *n == name)
            .map(|(_, _, c)| c)
            .sum()
    }
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|(_, _, c)| *c == 0)
    }
}

impl std::fmt::Display for Rewrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .counts
            .iter()
            .map(|(name, replaces, n)| format!("{n} {replaces} as {name}"))
            .collect();
        f.write_str(&parts.join(", "))
    }
}
